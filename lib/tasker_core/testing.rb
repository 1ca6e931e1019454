# frozen_string_literal: true

require "json"

module TaskerCore
  # Helpers for testing handlers and workflows. `require "tasker_core/rspec"` adds RSpec
  # matchers; requiring either never changes how the engine runs.
  module Testing
    # What a handler sees, built in Ruby (no engine, no database): the same interface as the
    # native step event, so {Types::Task}, {Types::Sequence} and {Types::Step} work unchanged.
    class StepEvent
      attr_reader :task_uuid, :step_uuid, :correlation_id, :parent_correlation_id, :namespace, :task_name,
                  :task_version, :step_name, :handler_class, :attempts, :max_attempts, :timeout_seconds,
                  :context, :handler_config, :parent_names, :dependency_names

      def initialize(handler_class:, context:, dependency_results:, parent_names:, step_name:, task_name:,
                     namespace:, config:, attempts:, max_attempts:, timeout_seconds:)
        @task_uuid = Testing.uuid
        @step_uuid = Testing.uuid
        @correlation_id = Testing.uuid
        @parent_correlation_id = nil
        @namespace = namespace
        @task_name = task_name
        @task_version = "1.0.0"
        @step_name = step_name
        @handler_class = handler_class
        @attempts = attempts
        @max_attempts = max_attempts
        @timeout_seconds = timeout_seconds
        @context = context
        @handler_config = config
        @dependency_results = dependency_results
        @dependency_names = dependency_results.keys
        @parent_names = parent_names
      end

      # @return [Object, nil] the result of the ancestor step `name`
      def dependency_result(name) = @dependency_results[name.to_s]
      # @return [nil] no trace outside the engine
      def trace_id = nil
      # @return [nil] no span outside the engine
      def span_id = nil
    end

    module_function

    # Run one handler as the engine would, without a database: context and parent results go
    # through JSON first (so the handler sees String keys, exactly as in production), the
    # return value is checked for a JSON form.
    #
    # @example
    #   result = TaskerCore::Testing.run_step(ChargeCard, context: { "amount" => 12 },
    #                                         parent_results: { "validate" => { "ok" => true } })
    #   expect(result.result).to eq("charged" => 12)
    #
    # @param handler [Class] a {StepHandler::Base} (or {BaseStepHandler}) subclass
    # @param parent_results [Hash{String => Object}] results of the direct parents, by step name
    # @param ancestor_results [Hash{String => Object}] results of further ancestors
    # @param config [Hash] the step's `handler.initialization`
    # @return [Types::StepHandlerCallResult] (a handler's step error is raised as is)
    # @raise [Errors::InvalidResultError] when the result has no JSON form
    def run_step(handler, context: {}, parent_results: {}, ancestor_results: {}, config: {}, step_name: "step",
                 task_name: "task", namespace: "testing", attempts: 1, max_attempts: 3, timeout_seconds: 30)
      parents = json_copy(parent_results.transform_keys(&:to_s))
      event = StepEvent.new(
        handler_class: handler.name, context: json_copy(context),
        dependency_results: json_copy(ancestor_results.transform_keys(&:to_s)).merge(parents),
        parent_names: parents.keys, step_name: step_name.to_s, task_name: task_name.to_s, namespace: namespace.to_s,
        config: Types.deep_freeze(json_copy(config)), attempts: attempts, max_attempts: max_attempts,
        timeout_seconds: timeout_seconds
      )
      returned = handler.new(config: event.handler_config)
                        .call(Types::Task.new(event), Types::Sequence.new(event), Types::Step.new(event))
      result = Types::StepHandlerCallResult.from_handler_return(returned, handler)
      check_json!(handler, result) if result.success?
      result
    end

    # The engine's own check of a result (the one definition, with its depth bound).
    # @api private
    def check_json!(handler, result)
      Native.check_json(result.result, "result")
    rescue Errors::ValidationError => e
      raise Errors::InvalidResultError, "#{handler} returned a result with no JSON form: #{e.message}"
    end

    # Run, in this thread, the steps the engine has claimed for this process (mode :inline)
    # until every task in `tasks` is finished, or — without `tasks` — until no step arrives for
    # `idle` seconds while no outcome is still being applied. Retries run as their backoff
    # elapses (without `tasks`, only those due within `idle`).
    # @param tasks [Array<Types::TaskRecord, String>, nil]
    # @return [Array<Types::TaskRecord>] the given tasks, reloaded
    # @raise [Errors::TimeoutError] when they are not finished within `timeout` seconds
    def drain!(tasks = nil, timeout: 30, idle: 0.3)
      unless TaskerCore.running? && TaskerCore.configuration.mode.to_s == "inline"
        raise Errors::ConfigurationError, "TaskerCore::Testing.drain! needs TaskerCore started with mode :inline"
      end

      uuids = tasks&.map { |t| t.respond_to?(:uuid) ? t.uuid : t.to_s }
      deadline = monotonic + timeout
      quiet_since = monotonic
      loop do
        quiet_since = monotonic if run_one_claimed_step
        if uuids
          break if uuids.all? { |u| Client.find_task(u)&.terminal? }
        elsif monotonic - quiet_since >= idle
          # Quiet, and no outcome still being applied (an apply releases the next steps).
          break if Native.memory_stats.fetch("completions_pending").zero?

          quiet_since = monotonic
        end
        raise Errors::TimeoutError, "TaskerCore::Testing.drain!: not finished within #{timeout}s" if monotonic > deadline
      end
      uuids ? uuids.map { |u| Client.find_task(u) } : []
    end

    # Run the next step claimed for this process, if one arrives within 50 ms, in this thread.
    # @return [Boolean] whether one ran
    # @api private
    def run_one_claimed_step
      event = Native.next_step(0.05)
      return false unless event

      StepExecution.deliver(event, StepExecution.run_handler(event, TaskerCore.registry), Logger)
      true
    end

    # Run the block; tasks it creates (in this thread) are then run to completion here.
    # Needs mode :inline.
    # @return [Array<Types::TaskRecord>] the tasks the block created, finished
    def inline(timeout: 30, &block)
      created = capture_created_tasks(&block)
      drain!(created.map(&:first), timeout: timeout)
    end

    # The tasks created in this thread while the block runs: [record, namespace, name, context].
    # @api private
    def capture_created_tasks
      outer = Thread.current[:tasker_created_tasks]
      mine = []
      Thread.current[:tasker_created_tasks] = mine
      yield
      mine
    ensure
      Thread.current[:tasker_created_tasks] = outer
      outer&.concat(mine)
    end

    # @return [Float] seconds on the monotonic clock
    # @api private
    def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

    # `value` after a round trip through JSON (String keys, JSON types only).
    # @api private
    def json_copy(value) = JSON.parse(JSON.generate(value))

    # @return [String] a random UUID
    # @api private
    def uuid
      require "securerandom"
      SecureRandom.uuid
    end
  end
end
