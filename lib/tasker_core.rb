# frozen_string_literal: true

require "monitor"
require "pathname"
require_relative "tasker_core/version"
require_relative "tasker_core/errors"
require_relative "tasker_core/native"
require_relative "tasker_core/logger"
require_relative "tasker_core/configuration"
require_relative "tasker_core/circuit_breaker_settings"
require_relative "tasker_core/types/step_handler_call_result"
require_relative "tasker_core/types/handler_views"
require_relative "tasker_core/types/task_record"
require_relative "tasker_core/step_handler/base"
require_relative "tasker_core/step_handler/api"
require_relative "tasker_core/base_step_handler"
require_relative "tasker_core/registry"
require_relative "tasker_core/step_execution"
require_relative "tasker_core/error_reporter"
require_relative "tasker_core/worker"
require_relative "tasker_core/client"
require_relative "tasker_core/schedules"
require_relative "tasker_core/rate_limit"
require_relative "tasker_core/active_job"
require_relative "tasker_core/circuit_breaker"
require_relative "tasker_core/web"
require_relative "tasker_core/boot_retry"

# Workflow orchestration with a Rust core: DAGs of Ruby step handlers, persisted in
# PostgreSQL and dispatched through pgmq. Nothing starts at require time.
module TaskerCore
  class << self
    # @return [Configuration]
    def configuration
      @configuration ||= Configuration.new
    end

    # Change settings. Takes effect at the next {start}.
    # @yieldparam config [Configuration]
    # @return [Configuration]
    def configure
      yield configuration
      configuration.validate!
    end

    # Forget all settings (tests).
    def reset_configuration!
      @configuration = nil
    end

    # Apply the database schema (pgmq and tasker tables). Safe to run again and from several
    # processes at once.
    # @param database_url [String]
    def migrate!(database_url: configuration.database_url)
      if database_url.nil? || database_url.to_s.empty?
        raise Errors::ConfigurationError, "TaskerCore configuration: database_url must be set to migrate"
      end

      Native.migrate(database_url.to_s)
      true
    end

    # Connect, register the configured templates, and start the handler threads for the
    # configured namespaces. Returns at once if already running in this process. A child
    # process forked after start gets its own engine when it calls start.
    # @return [self]
    def start
      lifecycle.synchronize do
        forget_parent_engine!
        return self if @engine&.running?

        configuration.validate!
        telemetry = configuration.resolved_telemetry
        Logger.configure(level: configuration.log_level, format: configuration.log_format,
                         output: configuration.log_output, endpoint: telemetry&.fetch("endpoint"),
                         service_name: telemetry&.fetch("service_name"))
        @engine = Native::Engine.start(configuration.to_native)
        apply_named_breaker_settings(configuration.resolved_circuit_breakers)
        @registry = Registry.new(@engine.templates)
        @pid = Process.pid
        @error_reporter = ErrorReporter.new(configuration.error_handlers, Logger)
        if configuration.served_namespaces.any? && configuration.mode.to_s == "embedded"
          @worker = Worker.new(engine: @engine, registry: @registry, concurrency: configuration.concurrency,
                               logger: Logger, timeout_grace: configuration.timeout_grace).start
        end
      end
      run_hooks(:startup)
      self
    end

    # Stop claiming steps, let running handlers finish (up to `timeout` seconds), apply their
    # results and disconnect. Handlers still running at the deadline are killed; their steps
    # run again elsewhere after their claims expire. Always stops, whatever the handlers did:
    # nothing a handler thread raised is raised here, and {running?} is false afterwards.
    # @param timeout [Numeric] seconds, at most a year; `Float::INFINITY` waits for running
    #   handlers without a limit
    # @return [Boolean] false if nothing was running
    # @raise [Errors::ValidationError] for a timeout that is not such a number (nothing is stopped)
    def stop(timeout: configuration.shutdown_timeout)
      timeout = Native.seconds("stop timeout", timeout, true)
      BootRetry.stop # a background start (Rails boot) ends first
      lifecycle.synchronize do
        forget_parent_engine!
        return false unless @engine&.running?

        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
        begin
          run_hooks(:shutdown)
        ensure
          stop_engine(deadline)
        end
        true
      end
    end

    # @return [Boolean] whether the engine runs in this process
    def running?
      @pid == Process.pid && @engine&.running? ? true : false
    end

    # This process's engine (`TaskerCore::Native::Engine`), started first if this process was
    # forked from a started one.
    # @raise [Errors::NotStartedError] when {start} was not called
    # @api private
    def engine
      ensure_started_after_fork
      engine = @engine
      raise Errors::NotStartedError, "TaskerCore is not started; call TaskerCore.start first" unless engine&.running?

      engine
    end

    # Memory and queue figures of the engine in this process, for development and monitoring:
    # the string cache (size, capacity, hits, misses, evictions), steps waiting for a handler
    # thread, outcomes not yet applied, templates held, and handler threads.
    # @return [Hash, nil] nil when not running
    def memory_stats
      stats = running? ? @engine.memory_stats : nil
      stats&.merge("handler_threads" => worker_threads)
    end

    # The health of this process's engine, JSON-able: "status" ("ok"; "degraded" when a
    # circuit breaker is open or, in embedded mode, fewer handler threads are alive than
    # `concurrency`; "down" when the database is unreachable; "stopped"), "reasons" (why it is
    # not "ok", e.g. "handler threads 1 of 2 alive"; empty when ok or stopped), the database
    # (reachable, latency), each served queue's depth and oldest message age, every circuit
    # breaker's state and counters, the handler threads (total, busy, idle) and the paused
    # namespaces ("paused", see {pause}).
    # {Web::Health} serves it over Rack.
    # @return [Hash]
    def health
      native = running? ? @engine.health : nil
      breakers = CircuitBreaker.metrics
      busy = running? && @worker ? @worker.busy_count : 0
      total = worker_threads
      reasons = native ? health_reasons(native, breakers, total) : []
      status = if native.nil? then "stopped"
               elsif !native.dig("database", "reachable") then "down"
               elsif reasons.any? then "degraded"
               else
                 "ok"
               end
      {
        "status" => status, "reasons" => reasons, "pid" => Process.pid, "running" => !native.nil?,
        "database" => native&.fetch("database"), "queues" => native ? native["queues"] : {},
        "circuit_breakers" => breakers, "queue_breakers" => native ? native["queue_breakers"] : {},
        "handler_breakers" => native ? native["handler_breakers"] : {},
        "paused" => native&.dig("database", "reachable") ? paused_namespaces : [],
        "handler_threads" => { "total" => total, "busy" => busy, "idle" => [total - busy, 0].max }
      }
    end

    # @return [Registry, nil] handlers registered by the loaded templates
    def registry
      running? ? @registry : nil
    end

    # Wraps every handler call (the Railtie sets the Rails reloader); nil: called directly.
    # @return [#call, nil] a callable taking the call as a block
    attr_accessor :handler_wrapper

    # Pause a namespace for every process sharing the database: none claims its steps from
    # within one poll interval (this process at once); its work stays queued, retries and new
    # tasks included, until {resume}. Persisted: a process that starts meanwhile obeys it.
    # With `template:`, only that template's tasks (every version) are paused, and every
    # process obeys from its next claim: a step read meanwhile waits, with its attempts
    # untouched, and starts as soon as the template is resumed.
    # @param namespace [String, Symbol] a registered namespace
    # @param template [String, Symbol, nil] a template's name in that namespace
    # @raise [Errors::NotFoundError] when no template of the namespace (or no such template)
    #   was ever registered
    # @return [true]
    def pause(namespace:, template: nil, reason: nil, actor: nil)
      engine.pause(namespace.to_s, template&.to_s, Client.intervention(actor, reason))
      true
    end

    # Let every process claim a paused namespace's (or template's) steps again.
    # @return [Boolean] false when it was not paused
    def resume(namespace:, template: nil)
      engine.resume(namespace.to_s, template&.to_s)
    end

    # @return [Array<Hash>] what is paused: "namespace", "template" (nil for a whole
    #   namespace), "paused_at", "actor", "reason"
    def paused = engine.paused

    # Run retention now, whichever process holds the maintenance lease: delete the finished
    # tasks (with their steps, edges and histories) and the archived queue messages older than
    # the windows of {Configuration#retention}, batch after batch, until none is left. Worker
    # processes do this every `retention[:interval]` by themselves (one at a time).
    # @return [Hash] "tasks", "steps", "transitions", "archived", "batches"
    def run_maintenance = engine.run_maintenance

    # The cron schedules (declared in the configuration or templates, or created at runtime).
    # @return [Schedules]
    def schedules = Schedules.new(engine)

    # Dead letters: messages the engine archived because they could not run (not a step
    # message, an unknown or finished step, a task request that was refused), newest first.
    # @param namespace [String, Symbol, nil] whose queue; nil: the task requests queue
    # @param limit [Integer] at most this many (1 to 200)
    # @return [Array<Hash>] "msg_id", "reason", "message" (its JSON text, cut at 2,000
    #   characters), "read_ct", "enqueued_at", "archived_at"
    def dead_letters(namespace: nil, limit: 50, before: nil)
      engine.dead_letters(namespace&.to_s, before, limit)["letters"]
    end

    # Send a dead letter back to its queue, as a new message (visible now); it leaves the
    # archive in the same transaction. A step message whose step is finished is archived
    # again by its next claim, with the reason.
    # @return [Integer] the new message's id
    # @raise [Errors::NotFoundError] when there is no such dead letter
    def replay(id, namespace: nil) = engine.replay_dead_letter(namespace&.to_s, id)

    # Stop, then start again with the current configuration.
    # @return [self]
    def restart(timeout: configuration.shutdown_timeout)
      stop(timeout: timeout)
      start
    end

    # Same as {.stop}.
    def shutdown(timeout: configuration.shutdown_timeout) = stop(timeout: timeout)

    # A process forked after start (Puma's preload, Spring, Resque) starts its own engine the
    # first time it uses TaskerCore: the parent's threads and connections do not exist here.
    # @api private
    def ensure_started_after_fork
      return if @pid.nil? || @pid == Process.pid

      lifecycle.synchronize { start unless @pid == Process.pid }
    end

    # @return [Integer] live handler threads in this process
    def worker_threads
      running? && @worker ? @worker.alive_count : 0
    end

    # Hand a handler's exception to the configured error handlers (never blocks the caller).
    # @api private
    def report_error(error, event)
      return unless running? && @error_reporter

      @error_reporter.report(error, {
                               "correlation_id" => event.correlation_id, "task_uuid" => event.task_uuid,
                               "step_uuid" => event.step_uuid, "namespace" => event.namespace,
                               "task_name" => event.task_name, "step_name" => event.step_name,
                               "attempt" => event.attempts, "handler_class" => event.handler_class
                             })
    end

    private

    # The second half of {stop}: every part runs even when an earlier one raised.
    def stop_engine(deadline)
      worker = @worker
      engine = @engine
      begin
        engine.begin_shutdown
      ensure
        begin
          killed = worker ? worker.join(deadline) : 0
          configuration.logger.warn("stopped #{killed} handler thread(s) still busy at shutdown") if killed.positive?
        ensure
          @worker = nil
          left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          begin
            engine.shutdown([left, 1.0].max)
          ensure
            @engine = nil
            @error_reporter&.stop
            Logger.flush
          end
        end
      end
    end

    # The paused namespaces' names for {health} (none when they cannot be read).
    def paused_namespaces
      @engine.paused.map { |p| p["template"] ? "#{p['namespace']}/#{p['template']}" : p["namespace"] }
    rescue Errors::Error
      []
    end

    # Why a running engine is not "ok".
    def health_reasons(native, breakers, alive)
      reasons = []
      reasons << "database unreachable: #{native.dig('database', 'error')}" unless native.dig("database", "reachable")
      pool = native.dig("database", "pool")
      if pool && pool["recent_failures"].positive?
        reasons << "#{pool['recent_failures']} database operation(s) found no connection in the last minute " \
                   "(pool #{pool['size']}/#{pool['max']}, last: #{pool['last_failure']})"
      end
      { "circuit breaker" => breakers, "queue breaker" => native["queue_breakers"],
        "handler breaker" => native["handler_breakers"] }.each do |label, group|
        group.each { |name, b| reasons << "#{label} #{name} is #{b['state']}" unless b["state"] == "closed" }
      end
      worker = @worker
      if worker && !worker.stopping? && alive < worker.concurrency
        reasons << "handler threads #{alive} of #{worker.concurrency} alive"
      end
      reasons
    end

    def lifecycle
      @lifecycle ||= Monitor.new
    end

    def run_hooks(event)
      configuration.hooks.fetch(event).each do |hook|
        hook.call
      rescue StandardError => e
        Logger.error("#{event} hook raised #{e.class}: #{e.message}")
      end
    end

    # Named breakers are process-wide (they outlive an engine): settings apply from now on.
    def apply_named_breaker_settings(breakers)
      Native::CircuitBreakers.configure_defaults(CircuitBreakerSettings.to_native(breakers[:defaults]))
      breakers[:named].each { |name, one| Native::CircuitBreakers.configure(name, CircuitBreakerSettings.to_native(one)) }
    end

    # After fork, the parent's handler threads do not exist in this process.
    def forget_parent_engine!
      return if @pid.nil? || @pid == Process.pid

      @worker = nil
      @registry = nil
      @engine = nil # its Drop leaves the parent's threads and sockets alone
      @pid = nil
    end
  end
end

require_relative "tasker_core/railtie" if defined?(Rails::Railtie)
