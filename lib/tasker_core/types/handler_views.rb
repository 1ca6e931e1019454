# frozen_string_literal: true

module TaskerCore
  module Types
    # The task a step belongs to, as its handler sees it. Values are read from the native step
    # event on first use.
    class Task
      def initialize(event)
        @event = event
      end

      # @return [String] the task's UUID
      def uuid = @event.task_uuid
      # @return [String] UUIDv7 shared by everything this task does
      def correlation_id = @event.correlation_id
      # @return [String, nil] correlation id of the workflow that started this one
      def parent_correlation_id = @event.parent_correlation_id
      # @return [String]
      def namespace = @event.namespace
      # @return [String] the template's name
      def name = @event.task_name
      # @return [String] the template's version
      def version = @event.task_version

      # @return [Hash{String => Object}] the task's input (keys are Strings)
      def context
        @context ||= @event.context
      end
    end

    # Results of the steps this step depends on (directly or further up the DAG).
    class Sequence
      def initialize(event)
        @event = event
      end

      # @param step_name [String, Symbol]
      # @return [Object, nil] that ancestor's stored result, unchanged; nil if it is not one
      def get_results(step_name)
        key = step_name.to_s
        results = (@results ||= {})
        return results[key] if results.key?(key)

        results[key] = @event.dependency_result(key)
      end

      # @return [Array<String>] names of all ancestor steps
      def dependency_names = @event.dependency_names

      # @return [Array<String>] names of the direct parents, in template order
      def parent_names = @event.parent_names

      # @return [Array<Object>] results of the direct parents, in template order
      def parent_results
        parent_names.map { |name| get_results(name) }
      end
    end

    # The step being run.
    class Step
      def initialize(event)
        @event = event
      end

      # @return [String]
      def name = @event.step_name
      # @return [String]
      def uuid = @event.step_uuid
      # @return [Integer] 1 during the first run
      def attempts = @event.attempts
      # @return [Integer] runs allowed in total
      def max_attempts = @event.max_attempts
      # @return [Integer]
      def timeout_seconds = @event.timeout_seconds
      # @return [String] the handler class name from the template
      def handler_class = @event.handler_class
      # @return [String, nil] trace id of this attempt (32 hex digits) when traces are exported
      def trace_id = @event.trace_id
      # @return [String, nil] span id of this handler run (16 hex digits) when traces are exported
      def span_id = @event.span_id
    end
  end
end
