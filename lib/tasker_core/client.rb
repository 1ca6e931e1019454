# frozen_string_literal: true

require "time"

module TaskerCore
  # Create and read tasks. Works in any process where TaskerCore is started, including one
  # that serves no namespaces (a web process).
  module Client
    # The named priorities `priority:` accepts, and their Integer values.
    PRIORITIES = Native::PRIORITIES.transform_keys(&:to_sym).freeze
    # The Integer priorities a task may have.
    PRIORITY_RANGE = (Native::LIMITS.fetch("min_priority")..Native::LIMITS.fetch("max_priority"))

    module_function

    # Create a task from a registered template; its root steps are queued in the same
    # transaction.
    #
    # @param namespace [String]
    # @param name [String]
    # @param version [String]
    # @param context [Hash] the task's input (must be JSON-representable)
    # @param correlation_id [String, nil] a UUID to trace the task by (default: a new UUIDv7)
    # @param parent_correlation_id [String, nil] correlation id of the workflow that started this one
    # @param idempotency_key [String, nil] same key (for the same template) → the existing task
    # @param priority [Symbol, Integer] :low, :normal, :high, :critical or an Integer
    # @param traceparent [String, nil] a W3C trace context (e.g. the current Rails request's):
    #   the task's trace continues it (an invalid header is ignored)
    # @param run_at [Time, nil] when the root steps may start: the task exists (visible,
    #   cancellable) at once, its roots wait until then (a time passed: at once)
    # @param wait [Numeric, nil] the same as seconds from now (not with run_at)
    # @param transaction [Symbol, nil] `:active_record`: write the task through the
    #   application's current ActiveRecord connection, inside its open transaction, so that it
    #   commits or rolls back with the application's data (docs/active_job.md); nil: the
    #   engine's own transaction
    # @return [Types::TaskRecord] with uuid, status and correlation_id
    # @raise [Errors::TemplateNotFoundError, Errors::ValidationError, Errors::NotStartedError]
    def create_task(namespace:, name:, version:, context:, correlation_id: nil, parent_correlation_id: nil,
                    idempotency_key: nil, priority: :normal, traceparent: nil, run_at: nil, wait: nil, transaction: nil)
      args = native_args(namespace: namespace, name: name, version: version, context: context,
                         correlation_id: correlation_id, parent_correlation_id: parent_correlation_id,
                         idempotency_key: idempotency_key, priority: priority, traceparent: traceparent,
                         run_at: run_at, wait: wait)
      return create_in_transaction([args], transaction).first if transaction

      created(native.create_task(args), args)
    end

    # Create several tasks in one transaction and one round trip: all of them or, on any error,
    # none. Each Hash takes the keyword arguments of {create_task}; an `idempotency_key` is
    # honoured per task (a key its template already has returns that task).
    #
    # @example
    #   TaskerCore::Client.create_tasks(orders.map do |o|
    #     { namespace: "billing", name: "charge", version: "1.0.0", context: { "order_id" => o.id },
    #       idempotency_key: "charge-#{o.id}" }
    #   end)
    # @param tasks [Array<Hash>] at most 10,000
    # @param transaction [Symbol, nil] as for {create_task}
    # @return [Array<Types::TaskRecord>] in the order given
    # @raise [Errors::ValidationError] naming the first invalid task (nothing is created)
    def create_tasks(tasks, transaction: nil)
      raise Errors::ValidationError, "create_tasks takes an Array of Hashes, got #{tasks.class}" unless tasks.is_a?(Array)

      list = tasks.each_with_index.map do |task, i|
        raise Errors::ValidationError, "create_tasks: item #{i} is not a Hash (got #{task.class})" unless task.is_a?(Hash)

        native_args(**task.transform_keys(&:to_sym))
      rescue ArgumentError => e
        raise Errors::ValidationError, "create_tasks: item #{i}: #{e.message}"
      end
      return create_in_transaction(list, transaction) if transaction

      native.create_tasks(list).zip(list).map { |record, args| created(record, args) }
    end

    # What tasker.create_tasks_json returns for each task.
    # @api private
    CREATED_COLUMNS = "task_index, task_uuid, correlation_id, parent_correlation_id, status, created"

    # Create tasks on the application's ActiveRecord connection, in its current transaction:
    # the engine builds the one JSON argument of `tasker.create_tasks_json` (checked requests,
    # ids, resolved flow keys), the application's connection runs it. Every process — this one
    # included — hears of the tasks by the notification PostgreSQL delivers at commit.
    # @api private
    def create_in_transaction(list, transaction)
      unless transaction == :active_record
        raise Errors::ValidationError, "transaction: must be :active_record (or nil), got #{transaction.inspect}"
      end
      raise Errors::ConfigurationError, "transaction: :active_record needs ActiveRecord" unless defined?(::ActiveRecord::Base)
      return [] if list.empty?

      json = native.create_call(list)
      rows = run_in_transaction(json)
      rows.sort_by { |r| r["task_index"] }.zip(list).map do |row, args|
        created({ "uuid" => row["task_uuid"], "correlation_id" => row["correlation_id"],
                  "parent_correlation_id" => row["parent_correlation_id"], "status" => row["status"],
                  "created" => [true, "t"].include?(row["created"]) }, args)
      end
    end

    # Run `tasker.create_tasks_json` on the application's current ActiveRecord connection
    # (inside its open transaction, if any); its rows, one per task.
    # @api private
    def run_in_transaction(json)
      connection = ::ActiveRecord::Base.connection
      bind = ::ActiveRecord::Relation::QueryAttribute.new("tasks", json, ::ActiveRecord::Type::String.new)
      connection.exec_query("SELECT #{CREATED_COLUMNS} FROM tasker.create_tasks_json($1::jsonb) WHERE kind = 'task'",
                            "TaskerCore create_tasks", [bind]).to_a
    rescue ::ActiveRecord::StatementInvalid => e
      raise Errors::EnqueueError, "creating tasks in the application's transaction failed: #{e.message}"
    end

    # @param uuid [String]
    # @return [Types::TaskRecord, nil] the task with its steps and histories
    def find_task(uuid)
      found = native.find_task(uuid.to_s)
      found && Types::TaskRecord.new(found)
    end

    # Tasks by correlation id and/or parent correlation id (a chain of workflows), oldest
    # first, without their steps.
    # @param limit [Integer] most tasks returned, 1 to 10,000
    # @return [Array<Types::TaskRecord>]
    # @raise [Errors::ValidationError] for a limit out of range or a malformed id
    def find_tasks(correlation_id: nil, parent_correlation_id: nil, limit: 100)
      native.find_tasks("correlation_id" => correlation_id&.to_s,
                        "parent_correlation_id" => parent_correlation_id&.to_s,
                        "limit" => limit).map { |h| Types::TaskRecord.new(h) }
    end

    # Send a task request to the `tasker_task_requests` queue instead of creating the task
    # here: a worker process turns it into a task. Producers without this gem can do the
    # same with plain SQL: <tt>SELECT pgmq.send('tasker_task_requests', '{...}'::jsonb)</tt>.
    # @param traceparent [String, nil] W3C trace context the task's trace continues
    # @return [Integer] the request's message id
    def request_task(namespace:, name:, version:, context:, correlation_id: nil,
                     parent_correlation_id: nil, idempotency_key: nil, priority: :normal, traceparent: nil)
      native.request_task(native_args(namespace: namespace, name: name, version: version, context: context,
                                      correlation_id: correlation_id, parent_correlation_id: parent_correlation_id,
                                      idempotency_key: idempotency_key, priority: priority,
                                      traceparent: traceparent))
    end

    # Wait until the task is complete, error or cancelled (woken by its finalization).
    # @param uuid [String]
    # @param timeout [Numeric] seconds, at most a year; `Float::INFINITY` waits without a limit
    # @return [Types::TaskRecord]
    # @raise [Errors::TimeoutError] if the task is still running after `timeout`
    # @raise [Errors::ValidationError] for a timeout that is not such a number
    def wait_for(uuid, timeout: 30)
      native.wait_for(uuid.to_s, timeout)
      find_task(uuid)
    end

    # Cancel a task: no further step starts; steps waiting to run become `cancelled`; a step
    # already running finishes and its result is recorded, but its children do not start.
    # @param uuid [String]
    # @param reason [String, nil] recorded in the transition history
    # @param actor [String, nil] who asked (default: the OS user)
    # @return [Types::TaskRecord]
    # @raise [Errors::InvalidTransitionError] if the task is already complete or cancelled
    def cancel_task(uuid, reason: nil, actor: nil)
      native.cancel_task(uuid.to_s, intervention(actor, reason))
      find_task(uuid)
    end

    # Run a step that is in `error` again, with a fresh attempt budget. The task re-opens.
    # @param task_uuid [String]
    # @param step_name [String]
    # @return [Types::TaskRecord]
    # @raise [Errors::InvalidTransitionError] if the step is not in `error`
    def retry_step(task_uuid, step_name, reason: nil, actor: nil)
      native.retry_step(task_uuid.to_s, step_name.to_s, intervention(actor, reason))
      find_task(task_uuid)
    end

    # Mark a step that is in `error` as resolved, with `result` as its result; the steps that
    # depend on it then run, and the task re-opens.
    # @param result [Object] any JSON value, seen by children through `sequence.get_results`
    # @return [Types::TaskRecord]
    # @raise [Errors::InvalidTransitionError] if the step is not in `error`
    def resolve_step_manually(task_uuid, step_name, result:, reason: nil, actor: nil)
      native.resolve_step_manually(task_uuid.to_s, step_name.to_s, result, intervention(actor, reason))
      find_task(task_uuid)
    end

    # This process's engine (started first if this process was forked from a started one).
    def native = TaskerCore.engine

    # The Hash the extension takes for one task (checked where Ruby can say it best). `flow`:
    # limits for this task's steps in place of its template's, keys resolved
    # (`{"concurrency" => {"key" =>, "limit" =>}}`; an Active Job class's options).
    def native_args(namespace:, name:, version:, context:, correlation_id: nil, parent_correlation_id: nil,
                    idempotency_key: nil, priority: :normal, traceparent: nil, run_at: nil, wait: nil, flow: nil)
      raise Errors::ValidationError, "context must be a Hash (a JSON object), got #{context.class}" unless context.is_a?(Hash)

      { "namespace" => namespace.to_s, "name" => name.to_s, "version" => version.to_s, "context" => context,
        "correlation_id" => correlation_id&.to_s, "parent_correlation_id" => parent_correlation_id&.to_s,
        "idempotency_key" => idempotency_key&.to_s, "priority" => priority_value(priority),
        "traceparent" => traceparent&.to_s, "run_at" => start_time(run_at, wait), "flow" => flow }
    end

    # `run_at` or `wait` (seconds from now) as an RFC 3339 time, or nil for "at once".
    def start_time(run_at, wait)
      raise Errors::ValidationError, "give run_at or wait, not both" if run_at && wait

      if wait
        seconds = Native.seconds("wait", wait, false)
        return (Time.now.utc + seconds).iso8601(6)
      end
      return nil if run_at.nil?

      time = run_at.respond_to?(:to_time) && !run_at.is_a?(String) ? run_at.to_time : nil
      raise Errors::ValidationError, "run_at must be a Time, got #{run_at.class}" unless time.is_a?(Time)

      time.utc.iso8601(6)
    end

    # A created task's record (also noted for the testing helpers).
    def created(record, args)
      record = Types::TaskRecord.new(record)
      Thread.current[:tasker_created_tasks]&.push([record, args["namespace"], args["name"], args["context"]])
      record
    end

    # Who acts and why, as the engine records it (the actor defaults to $USER).
    # @api private
    def intervention(actor, reason)
      { "actor" => (actor || ENV["USER"] || "unknown").to_s, "reason" => reason&.to_s }
    end

    def priority_value(priority)
      case priority
      when Integer
        return priority if PRIORITY_RANGE.cover?(priority)

        raise Errors::ValidationError, "priority must be between #{PRIORITY_RANGE.min} and #{PRIORITY_RANGE.max}"
      when Symbol, String
        PRIORITIES.fetch(priority.to_sym) do
          raise Errors::ValidationError, "priority must be one of #{PRIORITIES.keys.join(', ')} or an Integer"
        end
      else
        raise Errors::ValidationError, "priority must be a Symbol or an Integer"
      end
    end
    private_class_method :priority_value, :native, :native_args, :start_time, :created
  end
end
