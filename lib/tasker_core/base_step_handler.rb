# frozen_string_literal: true

module TaskerCore
  # The handler form of the earlier system: subclass and implement `execute(event)`, reading the
  # step like a Hash (`event[:correlation_id]`, `event[:task][:context]`, `event[:step][:name]`,
  # `event[:sequence]["validate_order"]`). It runs on the same dispatch path as
  # {StepHandler::Base} (the event is a view over the same lazy step event) and returns what a
  # `#call` would: a Hash, a {Types::StepHandlerCallResult}, or raises a step error.
  #
  # @example
  #   class MyHandler < TaskerCore::BaseStepHandler
  #     def execute(event)
  #       TaskerCore::Logger.info("Processing step", step_name: event[:step][:name])
  #       { "total" => event[:task][:context]["amount"] }
  #     end
  #   end
  class BaseStepHandler < StepHandler::Base
    # Calls {#execute} with an {Types::EventView} of the step.
    # @api private
    def call(task, sequence, step)
      execute(Types::EventView.new(task, sequence, step))
    end

    # Implement the step here.
    # @param event [Types::EventView]
    def execute(event)
      raise NotImplementedError, "#{self.class} must implement #execute(event)"
    end
  end

  module Types
    # A step seen as a Hash with Symbol or String keys, built on first access from the handler
    # views: `:correlation_id`, `:parent_correlation_id`, `:task` (`:uuid`, `:name`,
    # `:namespace`, `:version`, `:context`, `:correlation_id`), `:step` (`:uuid`, `:name`,
    # `:attempts`, `:max_attempts`, `:timeout_seconds`, `:handler_class`), `:sequence` (results of
    # the step's ancestors by step name) and `:context` (the task's).
    class EventView
      # The keys the view answers (each also as a String).
      KEYS = %i[correlation_id parent_correlation_id task_uuid step_uuid namespace task step sequence context].freeze

      def initialize(task, sequence, step)
        @task = task
        @sequence = sequence
        @step = step
        @values = {}
      end

      # @param key [Symbol, String]
      # @return [Object, nil]
      def [](key)
        key = key.to_sym
        return @values[key] if @values.key?(key)

        @values[key] = build(key)
      end

      # Like Hash#fetch.
      def fetch(key, *default)
        return self[key] if key?(key)
        return yield(key) if block_given?
        return default.first unless default.empty?

        raise KeyError, "key not found: #{key.inspect}"
      end

      def key?(key) = KEYS.include?(key.to_sym)
      alias has_key? key?

      # @return [Array<Symbol>] {KEYS}
      def keys = KEYS

      # Like Hash#dig.
      def dig(key, *rest)
        value = self[key]
        rest.empty? || value.nil? ? value : value.dig(*rest)
      end

      # @return [Hash{Symbol => Object}] every key (reads every value)
      def to_h = KEYS.to_h { |k| [k, self[k]] }

      private

      def build(key)
        case key
        when :correlation_id then @task.correlation_id
        when :parent_correlation_id then @task.parent_correlation_id
        when :task_uuid then @task.uuid
        when :step_uuid then @step.uuid
        when :namespace then @task.namespace
        when :context then @task.context
        when :task then indifferent(uuid: @task.uuid, task_uuid: @task.uuid, name: @task.name, namespace: @task.namespace,
                                    version: @task.version, context: @task.context,
                                    correlation_id: @task.correlation_id)
        when :step then indifferent(uuid: @step.uuid, step_uuid: @step.uuid, name: @step.name, attempts: @step.attempts,
                                    max_attempts: @step.max_attempts, timeout_seconds: @step.timeout_seconds,
                                    handler_class: @step.handler_class)
        when :sequence then @sequence.dependency_names.to_h { |n| [n, @sequence.get_results(n)] }
        end
      end

      # Symbol keys, also found by their String form.
      def indifferent(hash)
        hash.merge(hash.transform_keys(&:to_s))
      end
    end
  end
end
