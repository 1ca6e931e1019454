# frozen_string_literal: true

module TaskerCore
  # The gem's logger. Every line goes through the engine's one log pipeline (Rust `tracing`),
  # with the engine's own lines: one filter, one format (text or JSON lines), one output.
  # Inside a step handler the step's correlation id, task and step uuids, namespace and step
  # name are attached to every line automatically.
  #
  # @example
  #   TaskerCore::Logger.info("charged card", order_id: order.id, amount_cents: 1299)
  #   TaskerCore::Logger.debug { "expensive #{dump}" }   # the block runs only when enabled
  #
  # The filter takes `RUST_LOG`-style directives; this logger's target is `ruby`
  # (`config.log_level = "warn,ruby=debug"`). A call at a disabled level returns false at once:
  # no message is built and the engine allocates nothing.
  module Logger
    # Level names and the numbers the engine knows them by.
    LEVELS = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 }.freeze
    # The Thread-local key of the step event a handler thread is running.
    # @api private
    CONTEXT_KEY = :tasker_step_event

    # The level methods below are generated from {LEVELS}.
    #
    # @!method self.trace(message = nil, fields = nil)
    #   Write a line at level trace.
    #   @param message [String, nil] (or a block returning it)
    #   @param fields [Hash, nil] structured fields (keywords), top-level keys of a JSON record
    #   @return [Boolean] whether the line was written
    # @!method self.trace?
    #   @return [Boolean] whether lines at level trace are written
    #
    # @!method self.debug(message = nil, fields = nil)
    #   Write a line at level debug.
    #   @param message [String, nil] (or a block returning it)
    #   @param fields [Hash, nil] structured fields (keywords), top-level keys of a JSON record
    #   @return [Boolean] whether the line was written
    # @!method self.debug?
    #   @return [Boolean] whether lines at level debug are written
    #
    # @!method self.info(message = nil, fields = nil)
    #   Write a line at level info.
    #   @param message [String, nil] (or a block returning it)
    #   @param fields [Hash, nil] structured fields (keywords), top-level keys of a JSON record
    #   @return [Boolean] whether the line was written
    # @!method self.info?
    #   @return [Boolean] whether lines at level info are written
    #
    # @!method self.warn(message = nil, fields = nil)
    #   Write a line at level warn.
    #   @param message [String, nil] (or a block returning it)
    #   @param fields [Hash, nil] structured fields (keywords), top-level keys of a JSON record
    #   @return [Boolean] whether the line was written
    # @!method self.warn?
    #   @return [Boolean] whether lines at level warn are written
    #
    # @!method self.error(message = nil, fields = nil)
    #   Write a line at level error.
    #   @param message [String, nil] (or a block returning it)
    #   @param fields [Hash, nil] structured fields (keywords), top-level keys of a JSON record
    #   @return [Boolean] whether the line was written
    # @!method self.error?
    #   @return [Boolean] whether lines at level error are written

    # Plain methods (not define_method): a disabled call allocates nothing but what the caller
    # passes. Fields arrive as keywords, which Ruby hands over as one positional Hash.
    LEVELS.each do |name, number|
      module_eval(<<~RUBY, __FILE__, __LINE__ + 1)
        # @param message [String, nil] (or a block returning it)
        # @param fields [Hash, nil] structured fields (keywords), top-level keys of a JSON record
        # @return [Boolean] whether the line was written
        def self.#{name}(message = nil, fields = nil)
          return false unless Native::Log.enabled?(#{number})

          message = yield if message.nil? && block_given?
          Native::Log.write(#{number}, message.to_s, with_context(fields))
        end

        # @return [Boolean] whether lines at this level are written
        def self.#{name}? = Native::Log.enabled?(#{number})
      RUBY
    end

    # Change the pipeline now (TaskerCore.start applies the configuration's settings).
    # @param level [String] filter directives, e.g. "info" or "warn,tasker_core=debug"
    # @param format [Symbol, String] :text or :json (not used by :otlp)
    # @param output [Symbol, String] :stderr, :stdout, :otlp or a file path
    # @param endpoint [String, nil] for :otlp, the collector's base URL (nil:
    #   OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_LOGS_ENDPOINT)
    # @param service_name [String, nil] for :otlp
    # @raise [Errors::ConfigurationError] for an invalid filter, format or unwritable file
    def self.configure(level:, format: :text, output: :stderr, endpoint: nil, service_name: nil)
      Native::Log.configure(level.to_s, format.to_s, output.to_s, endpoint&.to_s, service_name&.to_s)
      if output.to_s == "otlp" && !@flush_at_exit
        @flush_at_exit = true
        at_exit { Native::Log.flush } # records still batched at exit are sent then
      end
      true
    end

    # Send buffered records now (OTLP output batches them); TaskerCore.stop calls it.
    def self.flush = Native::Log.flush

    # The fields of the step a handler thread is running, merged under the caller's.
    # @api private
    def self.with_context(fields)
      event = Thread.current[CONTEXT_KEY]
      return fields if event.nil?

      context = {
        "correlation_id" => event.correlation_id, "task_uuid" => event.task_uuid,
        "step_uuid" => event.step_uuid, "namespace" => event.namespace, "step_name" => event.step_name
      }
      if (trace_id = event.trace_id)
        context["trace_id"] = trace_id
        context["span_id"] = event.span_id
      end
      fields ? context.merge(fields.transform_keys(&:to_s)) : context
    end
  end
end
