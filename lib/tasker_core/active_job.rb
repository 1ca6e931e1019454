# frozen_string_literal: true

module TaskerCore
  # Active Job on tasker_core (`config.active_job.queue_adapter = :tasker_core`, or per job
  # class): every job is a one-step task of a built-in template, one per Active Job queue (its
  # namespace is `aj_<queue>`), run by worker processes that serve that queue
  # (`config.active_job_queues`, `tasker_core worker --queues`). See docs/active_job.md.
  #
  # Active Job owns retries: `retry_on` enqueues the job again (a new task) and `discard_on`
  # drops it, both inside `execute`, which then returns — the step is complete. The engine
  # retries only what Active Job cannot see: a crashed process or a timeout. An exception that
  # escapes Active Job fails the step permanently, with the job's class, message and backtrace.
  module ActiveJob
    # The built-in template's name and version (its body never changes under this version).
    TEMPLATE = "active_job"
    # @see TEMPLATE
    VERSION = "1.0.0"
    # Namespaces of Active Job queues: this prefix and the queue's name.
    PREFIX = "aj_"
    # How long one job may run before it is interrupted and retried (the engine's retry).
    TIMEOUT_SECONDS = 900
    # Runs of a job the engine makes after crashes or timeouts (Active Job's retries aside).
    MAX_ATTEMPTS = 3
    # Active Job priorities accepted: lower runs first, as in Active Job's own convention
    # (Delayed Job, Que, Solid Queue); tasker_core's priority is its negation.
    PRIORITY_RANGE = (-100..100)
    # Guards the record of which queues' templates this process's engine registered.
    REGISTERED = Mutex.new
    # The thread-local key of the jobs enqueued for later inside {Testing.inline}: `[at, job]`
    # in the order enqueued, run in time order when nothing else is left.
    INLINE_AGENDA = :tasker_core_inline_jobs

    class << self
      # The namespace of an Active Job queue.
      # @raise [Errors::EnqueueError] when the queue's name cannot make a namespace
      # @return [String]
      def namespace_for(queue_name)
        namespace = "#{PREFIX}#{queue_name}"
        problem = queue_name.to_s.empty? ? "the queue has no name" : Native.namespace_problem(namespace)
        return namespace unless problem

        raise Errors::EnqueueError,
              "Active Job queue #{queue_name.to_s.inspect} cannot be a tasker_core queue: its namespace " \
              "#{namespace.inspect} is invalid (#{problem}); use lowercase letters, digits and '_', at most " \
              "#{30 - PREFIX.size} characters"
      end

      # The built-in template of a queue, as JSON text.
      # @return [String]
      def template_for(queue_name)
        JSON.generate(
          "name" => TEMPLATE, "namespace" => namespace_for(queue_name), "version" => VERSION,
          "description" => "Active Job queue #{queue_name}",
          "steps" => [{ "name" => "perform", "handler" => { "callable" => "TaskerCore::ActiveJob::Executor" },
                        "retry" => { "max_attempts" => MAX_ATTEMPTS }, "timeout_seconds" => TIMEOUT_SECONDS }]
        )
      end

      # tasker_core's priority for an Active Job priority (nil: normal).
      # @raise [Errors::EnqueueError] for a priority out of {PRIORITY_RANGE}
      # @return [Integer]
      def priority_for(priority)
        return 0 if priority.nil?
        return -priority if priority.is_a?(Integer) && PRIORITY_RANGE.cover?(priority)

        raise Errors::EnqueueError,
              "Active Job priority #{priority.inspect} is out of range: tasker_core takes an Integer from " \
              "#{PRIORITY_RANGE.min} to #{PRIORITY_RANGE.max} (lower runs first)"
      end

      # Enqueue a job (at `at`, a Unix time, when given).
      # @return [Types::TaskRecord, nil] its task (nil for a job {Testing.inline} holds for later)
      # @raise [Errors::EnqueueError] when the database refuses or cannot be reached
      def enqueue(job, at: nil)
        enqueue_records([[job, at]]).first
      end

      # Enqueue many jobs in one transaction and one round trip.
      # @return [Integer] how many were enqueued (all of them, or an error is raised)
      def enqueue_all(jobs)
        enqueue_records(jobs.map { |j| [j, j.scheduled_at] })
        jobs.size
      end

      # The task arguments of a job.
      # @api private
      def task_args(job, at)
        # The job's JSON form as Active Job's other JSON queues store it (as_json: a BigDecimal
        # becomes its String on Rails 6.1); Active Support's JSON extensions may not be loaded
        # outside Rails.
        require "active_support/core_ext/object/json" unless {}.respond_to?(:as_json)
        args = { namespace: namespace_for(job.queue_name), name: TEMPLATE, version: VERSION,
                 context: { "job" => job.serialize.as_json }, priority: priority_for(job.priority),
                 idempotency_key: "active_job:#{job.job_id}:#{job.executions}" }
        at = Time.at(at) if at.is_a?(Numeric)
        args[:run_at] = at if at && at > Time.now
        flow = flow_for(job)
        args[:flow] = flow if flow
        args
      end

      # The job class's flow limits ({Options#tasker_core_options}) with their keys resolved
      # for this job: `"<name or class>:<key>"`; nil without limits.
      # @api private
      def flow_for(job)
        options = job.class.respond_to?(:tasker_core_options) ? job.class.tasker_core_options : {}
        flow = {}
        { concurrency: "concurrency", rate_limit: "rate" }.each do |option, kind|
          limit = options[option] or next
          key = limit[:key].respond_to?(:call) ? limit[:key].call(job) : limit[:key]
          scope = limit[:name] || job.class.name
          flow[kind] = { "key" => "#{scope}:#{key.nil? ? '<missing>' : key}", "limit" => limit[:limit] }
          flow[kind]["per"] = limit[:per].to_f if kind == "rate"
        end
        flow.empty? ? nil : flow
      end

      private

      def enqueue_records(pairs)
        pairs = hold_for_later(pairs)
        return [] if pairs.empty?

        list = pairs.map { |job, at| task_args(job, at) }
        list.map { |a| a[:namespace] }.uniq.each { |ns| ensure_template(ns) }
        records = begin
          Client.create_tasks(list, transaction: TaskerCore.configuration.active_job_transaction)
        rescue Errors::ValidationError, Errors::EnqueueError
          raise
        rescue Errors::Error => e
          raise Errors::EnqueueError, "enqueuing #{pairs.size} Active Job job(s) failed: #{e.message}"
        end
        pairs.zip(records).each do |(job, _), record|
          job.provider_job_id = record.uuid
          job.successfully_enqueued = true if job.respond_to?(:successfully_enqueued=)
        end
        records
      end

      # Inside {Testing.inline}: the jobs due later go to its agenda; the others are returned.
      def hold_for_later(pairs)
        agenda = Thread.current[INLINE_AGENDA] or return pairs
        now = Time.now.to_f
        later, pairs = pairs.partition { |_, at| at && at.to_f > now }
        later.each do |job, at|
          agenda << [at.to_f, job]
          job.successfully_enqueued = true if job.respond_to?(:successfully_enqueued=)
        end
        pairs
      end

      # The queue's template is registered once per engine (a process that only enqueues
      # may be the first to name the queue).
      def ensure_template(namespace)
        engine = TaskerCore.engine
        REGISTERED.synchronize do
          @registered = {} unless @registered_engine.equal?(engine)
          @registered_engine = engine
          next if @registered[namespace]

          engine.register_template(template_for(namespace.delete_prefix(PREFIX)))
          @registered[namespace] = true
        end
      end
    end

    # `tasker_core_options` for job classes (extended into `ActiveJob::Base` by the adapter):
    # concurrency and rate limits per key, as a template's (docs/flow-control.md), the key
    # computed from the job when it is enqueued.
    #
    # @example at most 2 syncs of one account at a time, 100 calls a minute per account
    #   class SyncAccountJob < ApplicationJob
    #     tasker_core_options concurrency: { key: ->(job) { job.arguments.first }, limit: 2 },
    #                         rate_limit: { key: ->(job) { job.arguments.first }, limit: 100, per: 60 }
    #   end
    module Options
      # The keys each limit takes.
      LIMIT_KEYS = { concurrency: %i[key limit name], rate_limit: %i[key limit per name] }.freeze

      # Set (with arguments) or read (without) the class's options; a subclass inherits them.
      # @param options [Hash] `concurrency:` `{ key: value or ->(job) { ... }, limit: Integer,
      #   name: }` and/or `rate_limit:` `{ key:, limit:, per: seconds, name: }`
      # @return [Hash] the options in effect
      # @raise [Errors::ConfigurationError] for an unknown option or a bad limit
      def tasker_core_options(**options)
        if options.empty?
          return @tasker_core_options if @tasker_core_options

          return superclass.respond_to?(:tasker_core_options) ? superclass.tasker_core_options : {}
        end

        options.each { |option, limit| check_limit(option, limit) }
        @tasker_core_options = tasker_core_options.merge(options).freeze
      end

      private

      def check_limit(option, limit)
        allowed = LIMIT_KEYS[option]
        unless allowed
          raise Errors::ConfigurationError, "#{name}: tasker_core_options takes concurrency: and rate_limit:, not #{option}:"
        end
        return if limit.is_a?(Hash) && (limit.keys - allowed).empty? && limit.key?(:key) &&
                  limit[:limit].is_a?(Integer) && limit[:limit].between?(1, 1_000_000) &&
                  (option != :rate_limit || (limit[:per].is_a?(Numeric) && limit[:per].positive?))

        raise Errors::ConfigurationError,
              "#{name}: tasker_core_options #{option}: needs key: (a value or a callable taking the job), limit: " \
              "(1 to 1000000)#{option == :rate_limit ? ' and per: (seconds)' : ''}; got #{limit.inspect}"
      end
    end

    # The step handler of every Active Job task: runs the job through Active Job
    # (`ActiveJob::Base.execute`: callbacks, `retry_on`, `discard_on`), inside the Rails
    # executor when {TaskerCore.handler_wrapper} is set (the Railtie sets the reloader).
    class Executor < StepHandler::Base
      # @return [Hash] the job's id and class
      def call(task, _sequence, _step)
        data = task.context.fetch("job")
        begin
          ::ActiveJob::Base.execute(data)
        rescue StandardError => e
          failure = Errors::PermanentError.new("#{data['job_class']} (job #{data['job_id']}) raised #{e.class}: #{e.message}",
                                               error_code: "active_job_failed",
                                               metadata: { "job_class" => data["job_class"], "job_id" => data["job_id"],
                                                           "exception_class" => e.class.name })
          failure.set_backtrace(e.backtrace || [])
          raise failure
        end
        { "job_id" => data["job_id"], "job_class" => data["job_class"] }
      end
    end
  end
end
