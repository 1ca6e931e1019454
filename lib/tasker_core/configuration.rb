# frozen_string_literal: true

module TaskerCore
  # Settings of the engine in this process. Set them in a `TaskerCore.configure` block.
  #
  # @example
  #   TaskerCore.configure do |c|
  #     c.database_url = ENV.fetch("DATABASE_URL")
  #     c.template_paths = ["config/tasker/templates"]
  #     c.namespaces = ["billing"]
  #     c.concurrency = 4
  #   end
  class Configuration
    # The longest duration any setting in seconds may have (one year): the engine's bound,
    # read from the extension so it is defined once.
    MAX_SECONDS = Native::LIMITS.fetch("max_seconds")

    # @return [String] PostgreSQL URL (default: TASKER_DATABASE_URL, then DATABASE_URL)
    attr_accessor :database_url
    # @return [Boolean] database_url goes through a pooler in transaction mode (PgBouncer
    #   `pool_mode = transaction`): no named prepared statements, every statement in a
    #   transaction of its own, no session state (docs/operations.md, "PgBouncer"). Default:
    #   TASKER_TRANSACTION_POOLING=1, else false
    attr_accessor :transaction_pooling
    # @return [String, nil] a direct PostgreSQL URL (not through the transaction pooler) for
    #   the one LISTEN connection; without it, with {#transaction_pooling}, processes find each
    #   other's work by polling. Default: TASKER_LISTEN_DATABASE_URL
    attr_accessor :listen_database_url
    # @return [Array<String>] files or directories of task templates
    attr_accessor :template_paths
    # @return [Array<String>] namespaces whose steps this process runs ([]: create/read only)
    attr_accessor :namespaces
    # @return [Symbol] :embedded (handler threads run the namespaces' steps; the default),
    #   :client (creates and reads tasks only, e.g. a web process; namespaces are ignored), or
    #   :inline (tests: steps are claimed but run only by {TaskerCore::Testing.drain!} /
    #   {TaskerCore::Testing.inline}, in the calling thread)
    attr_accessor :mode
    # @return [Integer] handler threads (and steps claimed at once)
    attr_accessor :concurrency
    # @return [Integer, nil] connections of the engine's main pool (default 10, whatever
    #   {#concurrency} is: handler threads hold no connection); see docs/configuration.md for a
    #   process's whole connection budget
    attr_accessor :pool_size
    # @return [Float] seconds an idle queue poller waits between looks without a wake-up
    attr_accessor :poll_interval
    # @return [Float] seconds TaskerCore.stop waits for running handlers by default
    attr_accessor :shutdown_timeout
    # @return [Float] seconds a handler interrupted at its step's timeout gets to unwind before
    #   its thread is retired and replaced
    attr_accessor :timeout_grace
    # @return [String, nil] claim owner recorded on steps (default "host:pid")
    attr_accessor :worker_id
    # @return [Integer] seconds a claim outlives its step's timeout: a process that died in the
    #   middle of a step is replaced after timeout_seconds + claim_grace
    attr_accessor :claim_grace
    # @return [Integer] distinct names (step, namespace, ...) the engine's string cache keeps
    attr_accessor :string_cache_capacity
    # @return [Hash] circuit breaker settings: defaults, pgmq (namespace queues), handlers
    #   (handler classes), and per namespace / handler class / name overrides; merged over the
    #   environment's defaults (see {CircuitBreakerSettings} and docs/configuration.md)
    attr_accessor :circuit_breakers
    # @return [String] selects environment-specific defaults ("production", "development",
    #   "test"; others get production's). Default: TASKER_ENV, RAILS_ENV, RACK_ENV, else
    #   "development"
    attr_accessor :environment
    # @return [Numeric] seconds a step may stay enqueued without a message in its queue before
    #   it is sent again (heals a dropped and recreated queue table)
    attr_accessor :requeue_after
    # @return [Numeric] seconds a queue read waits for a lock on its queue table before it
    #   fails (and counts against that queue's circuit breaker)
    attr_accessor :queue_lock_timeout
    # @return [::Logger] where the gem's boot and shutdown messages also go (e.g. Rails.logger);
    #   everything else goes through {TaskerCore::Logger}
    attr_accessor :logger
    # @return [String] log filter directives, RUST_LOG style ("info", "warn,ruby=debug");
    #   default TASKER_LOG, else RUST_LOG, else "warn,ruby=info"
    attr_accessor :log_level
    # @return [Symbol] :text (human) or :json (one object per line)
    attr_accessor :log_format
    # @return [Hash] OpenTelemetry export (metrics and traces over OTLP/HTTP protobuf): endpoint
    #   (base URL, e.g. "http://127.0.0.1:4318"), service_name, export_interval (seconds),
    #   sampling_ratio, enabled. Off unless an endpoint is given here or in
    #   OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_SERVICE_NAME, OTEL_METRIC_EXPORT_INTERVAL (ms),
    #   OTEL_TRACES_SAMPLER_ARG and OTEL_SDK_DISABLED are honoured
    attr_accessor :telemetry
    # @return [Symbol, String] :stderr, :stdout, :otlp (OpenTelemetry logs to the telemetry
    #   endpoint) or a file path
    attr_accessor :log_output
    # @return [Array<Hash>] cron schedules, each creating a task of the template it names at
    #   every tick: `{ name:, cron: "*/5 * * * *", namespace:, task:, version:, timezone: "UTC",
    #   context: {}, missed: :skip }` (`missed: :fire_once` fires one task for ticks that passed
    #   while no process ran). A template can declare its own under `schedules:`. Stored at
    #   start; every worker process runs them, each tick creating exactly one task
    attr_accessor :schedules
    # @return [Hash] how long finished work is kept and how retention runs (docs/operations.md,
    #   "Retention"): `completed:` (complete and cancelled tasks, seconds after finishing;
    #   default 7 days), `errored:` (default 30 days), `archive:` (archived queue messages and
    #   cron fires; default 7 days) — nil keeps that kind forever; `interval:` (seconds between
    #   a worker process's attempts to run it; default 60; nil: only `tasker_core maintenance
    #   run`), `batch_size:` (rows per transaction; default 500). Merged over the defaults.
    attr_accessor :retention
    # @return [Array<String>] Active Job queues whose jobs this process runs (each adds its
    #   namespace, `aj_<queue>`, to {#namespaces}); default TASKER_ACTIVE_JOB_QUEUES, else [].
    #   See docs/active_job.md
    attr_accessor :active_job_queues
    # @return [Symbol, nil] how Active Job enqueues: nil (default) in the engine's own
    #   transaction; `:active_record` through the application's ActiveRecord connection, inside
    #   its open transaction (a job enqueued in a transaction that rolls back does not exist)
    attr_accessor :active_job_transaction
    # @return [Array<#call>] called with (exception, context Hash) for every exception a
    #   handler raises (and every step timeout), on a Ruby thread of their own
    attr_reader :error_handlers
    # @return [Hash{Symbol => Array<#call>}] lifecycle hooks, see {#on}
    attr_reader :hooks

    # The lifecycle events {#on} accepts.
    EVENTS = %i[startup shutdown].freeze

    # Run the block at a point of the engine's life: `:startup` (after TaskerCore.start has
    # started the engine and its handler threads), `:shutdown` (when TaskerCore.stop begins,
    # before running handlers are drained).
    #
    # @example
    #   c.on(:startup) { Rails.logger.info("tasker up") }
    def on(event, &block)
      unless EVENTS.include?(event)
        raise Errors::ConfigurationError,
              "unknown event #{event.inspect} (known: #{EVENTS.join(", ")})"
      end
      raise Errors::ConfigurationError, "TaskerCore::Configuration#on needs a block" unless block

      @hooks[event] << block
      self
    end

    def initialize
      @database_url = ENV["TASKER_DATABASE_URL"] || ENV.fetch("DATABASE_URL", nil)
      @template_paths = env_list("TASKER_TEMPLATE_PATHS") || []
      @namespaces = env_list("TASKER_NAMESPACES") || []
      @mode = (ENV["TASKER_MODE"] || "embedded").to_sym
      @error_handlers = []
      @hooks = EVENTS.to_h { |e| [e, []] }
      engine = Native::DEFAULTS
      @concurrency = env_int("TASKER_CONCURRENCY") || engine.fetch("concurrency")
      @pool_size = nil
      @poll_interval = engine.fetch("poll_interval")
      @shutdown_timeout = 30
      @timeout_grace = 5
      @worker_id = nil
      @claim_grace = engine.fetch("claim_grace")
      @string_cache_capacity = engine.fetch("string_cache_capacity")
      @requeue_after = engine.fetch("requeue_after")
      @queue_lock_timeout = engine.fetch("queue_lock_timeout")
      @circuit_breakers = {}
      @environment = ENV["TASKER_ENV"] || ENV["RAILS_ENV"] || ENV["RACK_ENV"] || "development"
      @logger = default_logger
      @log_level = ENV["TASKER_LOG"] || ENV["RUST_LOG"] || engine.fetch("log_filter")
      @log_format = :text
      @telemetry = {}
      @log_output = :stderr
      @schedules = []
      @active_job_queues = env_list("TASKER_ACTIVE_JOB_QUEUES") || []
      @active_job_transaction = nil
      @retention = {}
      @transaction_pooling = %w[1 true yes].include?(ENV.fetch("TASKER_TRANSACTION_POOLING", "").downcase)
      @listen_database_url = ENV.fetch("TASKER_LISTEN_DATABASE_URL", nil)
    end

    # The namespaces this process serves: {#namespaces} and those of {#active_job_queues}.
    # @return [Array<String>]
    def served_namespaces
      (namespaces.map(&:to_s) + active_job_queues.map { |q| TaskerCore::ActiveJob.namespace_for(q) }).uniq
    end

    # @raise [Errors::ConfigurationError] naming the first invalid setting
    # @return [self]
    def validate!
      validate_process!
      validate_workers!
      validate_durations!
      CircuitBreakerSettings.validate!(circuit_breakers)
      validate_telemetry!
      validate_logging!
      validate_schedules!
      validate_active_job_queues!
      resolved_retention
      self
    end

    # Keys of {#retention}.
    RETENTION_KEYS = %i[completed errored archive interval batch_size].freeze

    # {#retention} over the engine's defaults, checked.
    # @return [Hash{Symbol => Object}]
    # @raise [Errors::ConfigurationError] for an unknown key or a bad value
    def resolved_retention
      invalid!(:retention, "must be a Hash (#{RETENTION_KEYS.join(', ')})") unless retention.is_a?(Hash)
      given = retention.transform_keys(&:to_sym)
      unknown = given.keys - RETENTION_KEYS
      invalid!(:retention, "has unknown keys #{unknown.join(', ')} (known: #{RETENTION_KEYS.join(', ')})") if unknown.any?
      defaults = Native::DEFAULTS.fetch("retention")
      resolved = RETENTION_KEYS.to_h { |k| [k, given.fetch(k) { defaults.fetch(k.to_s) }] }
      resolved.slice(:completed, :errored, :archive, :interval).each do |key, value|
        next if value.nil? || positive?(value)

        invalid!(:retention, "#{key} must be a positive number of seconds, at most #{MAX_SECONDS.to_i} (one year), " \
                             "or nil (keep forever#{key == :interval ? '; run on demand only' : ''}), got #{value.inspect}")
      end
      max = defaults.fetch("max_batch_size")
      unless int_in?(resolved[:batch_size], 1..max)
        invalid!(:retention, "batch_size must be an Integer from 1 to #{max}, got #{resolved[:batch_size].inspect}")
      end
      resolved
    end

    # Settings as text, with the password of database_url (and of a telemetry endpoint)
    # masked: safe for logs and consoles.
    # @return [String]
    def inspect
      shown = instance_variables.map do |ivar|
        value = instance_variable_get(ivar)
        value = Configuration.redact_url(value) if %i[@database_url @listen_database_url].include?(ivar) && value
        if ivar == :@telemetry && value.is_a?(Hash)
          value = value.transform_values do |v|
            v.is_a?(String) ? Configuration.redact_url(v) : v
          end
        end
        "#{ivar.to_s.delete_prefix("@")}=#{value.inspect}"
      end
      "#<#{self.class.name} #{shown.join(", ")}>"
    end
    alias to_s inspect

    # `url` with its password (and any `password=` query parameter) replaced by `***`.
    # @param url [Object]
    # @return [Object] a String with the secret masked, or `url` unchanged if it is not a String
    def self.redact_url(url)
      return url unless url.is_a?(String)

      url.sub(%r{\A([a-z][a-z0-9+.-]*://[^/:@]*:)[^@/]*@}i, '\1***@').gsub(/(password=)[^&\s]*/i, '\1***')
    end

    # The hash handed to the native engine.
    # @api private
    def to_native
      breakers = resolved_circuit_breakers
      {
        "database_url" => database_url,
        "transaction_pooling" => transaction_pooling ? true : false,
        "listen_database_url" => listen_database_url,
        "namespaces" => mode.to_s == "client" ? [] : served_namespaces,
        "template_texts" => active_job_queues.map { |q| TaskerCore::ActiveJob.template_for(q) },
        "template_paths" => template_paths.map(&:to_s),
        "concurrency" => concurrency,
        "pool_size" => pool_size || Native::DEFAULTS.fetch("pool_size"),
        "poll_interval_ms" => (poll_interval * 1000).round,
        "worker_id" => worker_id,
        "claim_grace_seconds" => claim_grace,
        "string_cache_capacity" => string_cache_capacity,
        "requeue_after_seconds" => requeue_after.to_f,
        "queue_lock_timeout_seconds" => queue_lock_timeout.to_f,
        "queue_circuit_breaker" => CircuitBreakerSettings.to_native(breakers[:pgmq]),
        "handler_circuit_breaker" => CircuitBreakerSettings.to_native(breakers[:handlers]),
        "namespace_circuit_breakers" => breakers[:namespaces].transform_values { |v| CircuitBreakerSettings.to_native(v) },
        "handler_class_circuit_breakers" =>
          breakers[:handler_classes].transform_values { |v| CircuitBreakerSettings.to_native(v) },
        "telemetry" => resolved_telemetry,
        "schedules" => schedules.map { |h| Configuration.schedule_hash(h) },
        "retention" => resolved_retention.to_h do |k, v|
          [k == :batch_size ? "batch_size" : "#{k}_seconds", v.nil? || k == :batch_size ? v : v.to_f]
        end
      }
    end

    # A schedule Hash as the engine reads it (string keys, `missed` a String).
    # @api private
    def self.schedule_hash(hash)
      hash.to_h { |k, v| [k.to_s, k.to_s == "missed" && v.is_a?(Symbol) ? v.to_s : v] }
    end

    # The keys {#telemetry} accepts.
    TELEMETRY_KEYS = %i[enabled endpoint service_name export_interval sampling_ratio protocol].freeze

    # The OpenTelemetry settings in effect (nil: export is off).
    # @return [Hash, nil]
    def resolved_telemetry
      t = telemetry.transform_keys(&:to_sym)
      return nil if t[:enabled] == false || ENV["OTEL_SDK_DISABLED"].to_s.casecmp?("true")

      endpoint = t[:endpoint] || ENV.fetch("OTEL_EXPORTER_OTLP_ENDPOINT", nil)
      return nil if endpoint.nil? && t[:enabled] != true

      interval = t[:export_interval] || (ENV["OTEL_METRIC_EXPORT_INTERVAL"]&.to_f&./ 1000.0) || 60.0
      {
        "endpoint" => t[:endpoint]&.to_s, # nil: the exporter reads the OTEL_EXPORTER_OTLP_* variables
        "service_name" => (t[:service_name] || ENV["OTEL_SERVICE_NAME"] || "tasker_core").to_s,
        "export_interval_seconds" => interval.to_f,
        "sampling_ratio" => (t[:sampling_ratio] || ENV["OTEL_TRACES_SAMPLER_ARG"] || 1.0).to_f
      }
    end

    # The circuit breaker settings in effect: the environment's defaults merged with
    # {#circuit_breakers}.
    # @return [Hash]
    def resolved_circuit_breakers
      CircuitBreakerSettings.resolve(environment, circuit_breakers)
    end

    private

    def validate_telemetry!
      invalid!(:telemetry, "must be a Hash") unless telemetry.is_a?(Hash)
      unknown = telemetry.keys.map(&:to_sym) - TELEMETRY_KEYS
      invalid!(:telemetry, "has unknown keys #{unknown.join(", ")} (known: #{TELEMETRY_KEYS.join(", ")})") if unknown.any?
      t = telemetry.transform_keys(&:to_sym)
      protocol = (t[:protocol] || ENV["OTEL_EXPORTER_OTLP_PROTOCOL"] || "http/protobuf").to_s
      invalid!(:telemetry, "protocol #{protocol.inspect} is not supported (use http/protobuf)") unless protocol == "http/protobuf"
      if t[:endpoint] && !%r{\Ahttps?://[^/\s]+}.match?(t[:endpoint].to_s)
        invalid!(:telemetry, "endpoint must be an http(s) URL such as http://127.0.0.1:4318")
      end
      if t[:export_interval] && !positive?(t[:export_interval])
        invalid!(:telemetry, "export_interval must be a positive number of seconds")
      end
      ratio = t[:sampling_ratio]
      return unless ratio && !(ratio.is_a?(Numeric) && ratio.between?(0, 1))

      invalid!(:telemetry, "sampling_ratio must be a number from 0 to 1")
    end

    # The shape of each schedule (its cron expression and timezone are checked at start).
    def validate_schedules!
      invalid!(:schedules, "must be an Array of Hashes") unless schedules.is_a?(Array) && schedules.all?(Hash)
      names = schedules.map { |h| (h[:name] || h["name"]).to_s }
      dup = names.tally.find { |_, n| n > 1 }
      invalid!(:schedules, "names schedule #{dup.first.inspect} twice") if dup
    end

    def validate_active_job_queues!
      unless active_job_queues.is_a?(Array) && active_job_queues.all? { |q| q.is_a?(String) || q.is_a?(Symbol) }
        invalid!(:active_job_queues, "must be an Array of queue names")
      end
      active_job_queues.each { |q| TaskerCore::ActiveJob.namespace_for(q) }
      unless [nil, :active_record].include?(active_job_transaction)
        invalid!(:active_job_transaction, "must be nil or :active_record, got #{active_job_transaction.inspect}")
      end
    rescue Errors::EnqueueError => e
      invalid!(:active_job_queues, "has an invalid entry: #{e.message}")
    end

    # "a,b" / "a:b" from the environment, nil when unset.
    def env_list(name)
      value = ENV.fetch(name, nil)
      value&.split(/[,:]/)&.map(&:strip)&.reject(&:empty?)
    end

    def env_int(name)
      value = ENV.fetch(name, nil)
      return nil if value.nil?

      Integer(value, 10)
    rescue ArgumentError
      raise Errors::ConfigurationError, "TaskerCore configuration: #{name}=#{value.inspect} must be an Integer"
    end

    # Where the engine connects, what it loads, in which mode.
    def validate_process!
      unless database_url.is_a?(String) && !database_url.empty?
        invalid!(:database_url, "must be a PostgreSQL URL (or set DATABASE_URL)")
      end
      invalid!(:template_paths, "must be an Array of paths") unless string_array?(template_paths)
      invalid!(:mode, "must be :embedded, :client or :inline") unless %w[embedded client inline].include?(mode.to_s)
      invalid!(:transaction_pooling, "must be true or false") unless [true, false].include?(transaction_pooling)
      unless listen_database_url.nil? || (listen_database_url.is_a?(String) && !listen_database_url.empty?)
        invalid!(:listen_database_url, "must be a PostgreSQL URL or nil")
      end
      unless int_in?(string_cache_capacity, 1..10_000_000)
        invalid!(:string_cache_capacity, "must be an Integer from 1 to 10000000")
      end
      return if environment.is_a?(String) || environment.is_a?(Symbol)

      invalid!(:environment, "must be a String such as \"production\"")
    end

    # What the process runs: namespaces, handler threads, connections, error handlers.
    def validate_workers!
      invalid!(:namespaces, "must be an Array of Strings") unless namespaces.is_a?(Array) && namespaces.all?(String)
      unless error_handlers.is_a?(Array) && error_handlers.all? { |h| h.respond_to?(:call) }
        invalid!(:error_handlers, "must be an Array of callables (exception, context)")
      end
      namespaces.each do |ns|
        problem = Native.namespace_problem(ns)
        invalid!(:namespaces, "has an invalid entry: #{problem}") if problem
      end
      invalid!(:concurrency, "must be an Integer from 1 to 1024") unless int_in?(concurrency, 1..1024)
      invalid!(:pool_size, "must be an Integer from 2 to 1000") unless pool_size.nil? || int_in?(pool_size, 2..1000)
    end

    def validate_durations!
      %i[poll_interval shutdown_timeout timeout_grace requeue_after queue_lock_timeout].each do |setting|
        next if positive?(public_send(setting))

        invalid!(setting, "must be a positive number of seconds, at most #{MAX_SECONDS.to_i} (one year), " \
                          "got #{public_send(setting).inspect}")
      end
      grace = Native::LIMITS.fetch("min_claim_grace_seconds")..Native::LIMITS.fetch("max_claim_grace_seconds")
      invalid!(:claim_grace, "must be an Integer from #{grace.min} to #{grace.max} (seconds)") unless int_in?(claim_grace, grace)
    end

    def validate_logging!
      invalid!(:log_level, "must be a String of filter directives") unless log_level.is_a?(String)
      invalid!(:log_format, "must be :text or :json") unless %w[text json].include?(log_format.to_s)
      return if log_output.is_a?(String) || log_output.is_a?(Pathname) || %i[stderr stdout otlp].include?(log_output)

      invalid!(:log_output, "must be :stderr, :stdout, :otlp or a file path")
    end

    def invalid!(setting, message)
      raise Errors::ConfigurationError, "TaskerCore configuration: #{setting} #{message}"
    end

    def string_array?(value)
      value.is_a?(Array) && value.all? { |v| v.is_a?(String) || v.is_a?(Pathname) }
    end

    def int_in?(value, range)
      value.is_a?(Integer) && range.cover?(value)
    end

    # A duration setting: a positive, finite number of seconds, at most
    # {Configuration::MAX_SECONDS} (Native::LIMITS, the engine's own bound).
    def positive?(value)
      value.is_a?(Numeric) && value.real? && value.positive? && value <= MAX_SECONDS
    end

    def default_logger
      require "logger"
      ::Logger.new($stderr, level: ::Logger::WARN, progname: "tasker_core")
    end
  end
end
