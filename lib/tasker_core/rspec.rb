# frozen_string_literal: true

require "tasker_core"
require "tasker_core/testing"

module TaskerCore
  module Testing
    # RSpec matchers. `require "tasker_core/rspec"` (it includes them in every example group).
    module Matchers
      # `expect { ... }.to have_created_task("checkout").with_context("order_id" => 7)`
      # (optionally `.in_namespace("shop")`): the block created such a task in this thread.
      class HaveCreatedTask
        def initialize(name)
          @name = name.to_s
        end

        # Also require the task's context to include `expected` (RSpec's `include` semantics).
        # @param expected [Hash]
        # @return [self]
        def with_context(expected)
          @context = expected
          self
        end

        # Also require the task's namespace.
        # @return [self]
        def in_namespace(namespace)
          @namespace = namespace.to_s
          self
        end

        def supports_block_expectations? = true

        def matches?(block)
          @created = Testing.capture_created_tasks { block.call }
          @created.any? do |_record, namespace, name, context|
            name == @name && (@namespace.nil? || namespace == @namespace) &&
              (@context.nil? || RSpec::Matchers::BuiltIn::Include.new(@context).matches?(context))
          end
        end

        # @return [String] the expected task and the tasks the block created
        def failure_message
          seen = @created.map { |_, ns, name, ctx| "#{ns}/#{name} #{ctx.inspect}" }
          "expected the block to create task #{description_of_task}, it created " \
            "#{seen.empty? ? "none" : seen.join(", ")}"
        end

        # @return [String]
        def failure_message_when_negated = "expected the block not to create task #{description_of_task}"

        # @return [String]
        def description = "create task #{description_of_task}"

        private

        def description_of_task
          [@namespace && "#{@namespace}/", @name, @context && " with context including #{@context.inspect}"].compact.join
        end
      end

      # `expect(task).to complete_step("charge").with_result("charged" => 12)`: the task's step is
      # complete (and its result matches, with RSpec's argument matchers allowed inside).
      class CompleteStep
        def initialize(name)
          @name = name.to_s
        end

        # Also require the step's result to match `expected`.
        # @param expected [Object] a JSON value; may contain RSpec argument matchers
        # @return [self]
        def with_result(expected)
          @result = expected
          @check_result = true
          self
        end

        def matches?(task)
          uuid = task.respond_to?(:uuid) ? task.uuid : task.to_s
          @step = Client.find_task(uuid)&.step(@name)
          return false unless @step&.complete?

          !@check_result || RSpec::Support::FuzzyMatcher.values_match?(@result, @step.result)
        end

        # @return [String] why the step did not match: missing, not complete, or another result
        def failure_message
          return "expected step #{@name} to exist" if @step.nil?
          return "expected step #{@name} to be complete, it is #{@step.state}" unless @step.complete?

          "expected step #{@name}'s result to match #{@result.inspect}, got #{@step.result.inspect}"
        end

        # @return [String]
        def failure_message_when_negated
          "expected step #{@name} not to be complete#{" with #{@result.inspect}" if @check_result}"
        end

        # @return [String]
        def description = "complete step #{@name}#{" with result #{@result.inspect}" if @check_result}"
      end

      # Matches a block that creates a task named `name` in this thread; see {HaveCreatedTask}.
      # @return [HaveCreatedTask]
      def have_created_task(name) = HaveCreatedTask.new(name) # rubocop:disable Naming/PredicateName

      # Matches a task (or task uuid) whose step `name` is complete; see {CompleteStep}.
      # @return [CompleteStep]
      def complete_step(name) = CompleteStep.new(name)
    end
  end
end

RSpec.configure { |config| config.include TaskerCore::Testing::Matchers } if defined?(RSpec.configure)
