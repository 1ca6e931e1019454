# frozen_string_literal: true

module TaskerCore
  # Helpers for testing handlers and workflows. `require "tasker_core/rspec"` adds RSpec
  # matchers; requiring either never changes how the engine runs.
  module Testing
    module_function

    # Run one handler through the engine's own code, without a database: the step event is the
    # engine's native one (detached from any engine), the handler runs through the same
    # dispatch as on a handler thread, and its outcome is taken by the same conversion the
    # engine applies before storing it. Context, results and config therefore reach the
    # handler with String keys, exactly as in production.
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
    # @return [Types::StepHandlerCallResult] the success, its result and metadata as the engine
    #   would store them
    # @raise [Exception] a failure: the exception the engine reports to `error_handlers` — the
    #   handler's own, or for a returned {Types::StepHandlerCallResult.error} its error (a
    #   {PermanentError} or {RetryableError}); {Errors::InvalidResultError} for a result the
    #   engine cannot store (no JSON form, a cycle, nesting deeper than its bound)
    def run_step(handler, context: {}, parent_results: {}, ancestor_results: {}, config: {}, step_name: "step",
                 task_name: "task", namespace: "testing", attempts: 1, max_attempts: 3, timeout_seconds: 30)
      parents = parent_results.transform_keys(&:to_s)
      event = Native::StepEvent.detached(
        "namespace" => namespace.to_s, "task_name" => task_name.to_s, "task_version" => "1.0.0",
        "step_name" => step_name.to_s, "handler_class" => handler.name || handler.inspect, "attempts" => attempts,
        "max_attempts" => max_attempts, "timeout_seconds" => timeout_seconds, "context" => context,
        "handler_config" => config, "parent_names" => parents.keys,
        "dependency_results" => ancestor_results.transform_keys(&:to_s).merge(parents)
      )
      _, errors = StepExecution.capturing_errors do
        StepExecution.deliver(event, StepExecution.run_handler(event, OneHandler.new(handler)), Logger)
      end
      recorded = event.outcome
      if recorded && recorded["status"] == "complete"
        return Types::StepHandlerCallResult.success(result: recorded["result"], metadata: recorded["metadata"])
      end

      raise errors.last if errors.any?

      raise Errors::InternalError, "the step's outcome was not recorded: #{recorded&.dig('error', 'message')}"
    end

    # The registry of {run_step}: the one handler class it was given.
    # @api private
    class OneHandler
      def initialize(handler)
        @handler = handler
      end

      # @return [Class] the handler (a {StepHandler::Base} subclass)
      # @raise [Errors::HandlerNotFoundError] for anything else
      def resolve(_name)
        return @handler if @handler.is_a?(Class) && @handler <= StepHandler::Base

        raise Errors::HandlerNotFoundError, "#{@handler.inspect} is not a subclass of TaskerCore::StepHandler::Base"
      end

      # @return [Hash] the step's configuration, deep-frozen
      def config_for(event) = Types.deep_freeze(event.handler_config)
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
          break if TaskerCore.engine.memory_stats.fetch("completions_pending").zero?

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
      event = TaskerCore.engine.next_step(0.05)
      return false unless event

      StepExecution.deliver(event, StepExecution.run_handler(event, TaskerCore.registry), Logger)
      true
    end

    # Run the block; tasks it creates (in this thread) are then run to completion here, and so
    # are the tasks those create in turn. Active Job jobs enqueued for later (`set(wait:)`,
    # `retry_on ... wait:`) do not wait for their time: each becomes its task when nothing else
    # is left to run, earliest time first, so the jobs run in the order of their times without
    # sleeping (such a job's `provider_job_id` is set when its task is created). Tasks created
    # with `run_at:`/`wait:` through {Client.create_task} wait for their time as in production.
    # Needs mode :inline.
    # @return [Array<Types::TaskRecord>] the tasks run, in the order created, finished
    # @raise [Errors::TimeoutError] when they are not finished within `timeout` seconds
    def inline(timeout: 30, &block)
      deadline = monotonic + timeout
      outer = Thread.current[ActiveJob::INLINE_AGENDA]
      agenda = Thread.current[ActiveJob::INLINE_AGENDA] = []
      pending = capture_created_tasks(&block).map(&:first)
      ran = []
      loop do
        until pending.empty?
          ran.concat(pending)
          uuids = pending.map(&:uuid)
          pending = capture_created_tasks { drain!(uuids, timeout: [deadline - monotonic, 0].max) }.map(&:first)
        end
        break if agenda.empty?

        # The earliest; of equal times, the first enqueued.
        _, job = agenda.delete_at(agenda.each_index.min_by { |i| [agenda[i].first, i] })
        pending = capture_created_tasks { ActiveJob.enqueue(job) }.map(&:first)
      end
      ran.map { |t| Client.find_task(t.uuid) }
    ensure
      Thread.current[ActiveJob::INLINE_AGENDA] = outer
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
  end
end
