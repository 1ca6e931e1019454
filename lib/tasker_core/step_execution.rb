# frozen_string_literal: true

module TaskerCore
  # Runs one step event through its handler and hands the outcome back to the engine.
  #
  # Whatever a handler raises or returns becomes that step's outcome: {run_handler} never
  # raises (except the worker's own {Worker::HandlerTimeout}) and {deliver} never raises. Every
  # String of a failure Hash is valid UTF-8 without NUL bytes and bounded in size, whatever the
  # exception's message, backtrace or class looked like.
  # @api private
  module StepExecution
    # Bytes kept of a failure message (the rest is cut, and the cut is marked): the engine's
    # bound (core/src/limits.rs), which it enforces again on what it receives.
    MESSAGE_LIMIT = Native::LIMITS.fetch("max_failure_text_bytes")
    # Backtrace lines kept (the engine's bound too).
    BACKTRACE_LINES = Native::LIMITS.fetch("max_backtrace_lines")
    # Bytes kept of one backtrace line.
    LINE_LIMIT = 1024
    # Bytes kept of an error class name or error code.
    NAME_LIMIT = 1024
    # The engine's ceiling for a handler's `retry_after` (RETRY_AFTER_CEILING in
    # core/src/orchestration/backoff.rs): larger values, Infinity included, are clamped to it.
    RETRY_AFTER_CEILING = Native::LIMITS.fetch("retry_after_ceiling_seconds")
    # Replaces invalid bytes, characters with no UTF-8 form and NUL bytes.
    REPLACEMENT = "\uFFFD"

    # Core methods, called unbound so that an exception class that overrides them (or a
    # BasicObject) cannot change what is recorded.
    CLASS_OF = Kernel.instance_method(:class)
    MODULE_NAME = Module.instance_method(:name)
    SUPERCLASS = Class.instance_method(:superclass)
    ARRAY_FIRST = Array.instance_method(:first)
    private_constant :CLASS_OF, :MODULE_NAME, :SUPERCLASS, :ARRAY_FIRST

    module_function

    # Run the step's handler (inside the handler wrapper, if one is set).
    # @return [Types::StepHandlerCallResult, Hash] a success result, or a failure Hash for the
    #   engine (an error result is already turned into one)
    # @raise [Worker::HandlerTimeout] only that: anything else the handler (or the wrapper) raises
    #   becomes the failure
    def run_handler(event, registry)
      wrapper = TaskerCore.handler_wrapper
      return run_handler_now(event, registry) unless wrapper

      wrapper.call { run_handler_now(event, registry) }
    rescue Worker::HandlerTimeout
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException
      reported(e, event) { failure(e, "retryable", fault: true) }
    end

    # {run_handler} without the handler wrapper: resolves the handler class, calls it, and turns
    # its return value or exception into an outcome.
    # @return [Types::StepHandlerCallResult, Hash] a success result, or a failure Hash for the engine
    def run_handler_now(event, registry)
      klass = registry.resolve(event.handler_class)
      handler = klass.new(config: registry.config_for(event))
      returned = handler.call(Types::Task.new(event), Types::Sequence.new(event), Types::Step.new(event))
      result = Types::StepHandlerCallResult.from_handler_return(returned, klass)
      # An error result is turned into its failure here, under the step's timeout: its values
      # may be objects whose #to_s runs the handler's code.
      return result if result.success?

      reported(result.error, event) { error_result_failure(result) }
    rescue Worker::HandlerTimeout
      raise
    rescue Errors::PermanentError => e
      reported(e, event) { failure(e, "permanent", error_code: contained { e.error_code }) }
    rescue Errors::RetryableError => e
      reported(e, event) { failure(e, "retryable", retry_after: contained { e.retry_after }) }
    rescue Errors::HandlerNotFoundError, Errors::InvalidResultError, Errors::ConfigurationError,
           NotImplementedError => e
      reported(e, event) { failure(e, "permanent") }
    rescue Exception => e # rubocop:disable Lint/RescueException
      # Any other exception, StandardError or not (SystemStackError, NoMemoryError, Interrupt,
      # SystemExit from `exit`, a bare Exception): a retryable fault of the handler.
      reported(e, event) { failure(e, "retryable", fault: true) }
    end

    # Passes `error` to the configured error handlers (and to a {capturing_errors} block of
    # this thread), then returns the block's value.
    def reported(error, event)
      Thread.current[:tasker_core_step_errors]&.push(error)
      contained { TaskerCore.report_error(error, event) }
      yield
    end

    # The block's value and every error {reported} in this thread while it ran (for
    # {Testing.run_step}, which raises the handler's own exception).
    # @return [Array(Object, Array<Exception>)]
    def capturing_errors
      outer = Thread.current[:tasker_core_step_errors]
      errors = Thread.current[:tasker_core_step_errors] = []
      [yield, errors]
    ensure
      Thread.current[:tasker_core_step_errors] = outer
    end

    # The failure recorded when a handler outlives its step's timeout.
    def timeout_failure(event)
      error = Errors::StepTimeoutError.new(
        "step #{event.step_name} exceeded its timeout of #{event.timeout_seconds}s (attempt #{event.attempts})"
      )
      reported(error, event) { failure(error, "retryable", fault: true) }
    end

    # The failure Hash the engine records for `error`. Never raises (but for
    # {Worker::HandlerTimeout}, when the step's time runs out in an exception's own #message).
    # `fault`: the handler itself misbehaved (timeout, unclassified exception); counts
    # against its handler class's circuit breaker. Classified errors are business outcomes.
    # @param retry_after [Object] seconds; see {retry_after_seconds}
    # @param error_code [Object, nil] recorded as a String
    # @return [Hash{String => Object}] "fault", "kind", "error_class", "message", "backtrace",
    #   "retry_after", "error_code", "metadata" (a {StepError}'s, else nil)
    def failure(error, kind, retry_after: nil, error_code: nil, fault: false)
      {
        "fault" => fault ? true : false,
        "kind" => kind == "permanent" ? "permanent" : "retryable",
        "error_class" => class_name(error),
        "message" => message_of(error),
        "backtrace" => backtrace_of(error),
        "retry_after" => retry_after_seconds(retry_after),
        "error_code" => optional_text(error_code, NAME_LIMIT),
        "metadata" => metadata_of(error)
      }
    end

    # What a {StepError} carries in its metadata, as a Hash (nil when it has none or is not a
    # StepError: metadata is recorded, not made up).
    def metadata_of(error)
      return nil unless error.is_a?(Errors::StepError)

      present_hash(contained { error.metadata })
    end

    # `value` when it is a non-empty Hash, else nil.
    def present_hash(value) = value.is_a?(Hash) && !value.empty? ? value : nil

    # The failure Hash of a {Types::StepHandlerCallResult.error} result: its error recorded as
    # {failure} records a raised one, with the result's `message:`, `error_type:`,
    # `retry_after:`, `error_code:` and `metadata:` where given.
    # @return [Hash{String => Object}]
    def error_result_failure(result)
      error = result.error
      kind = result.retryable ? "retryable" : "permanent"
      out = failure(error, kind, retry_after: result.retry_after, error_code: result.error_code)
      error_type = optional_text(result.error_type, NAME_LIMIT)
      out["error_class"] = error_type unless error_type.nil? || error_type.empty?
      out["message"] = optional_text(result.message, MESSAGE_LIMIT) || "" unless result.message.nil?
      out["metadata"] = present_hash(result.metadata) || out["metadata"]
      out
    end

    # The real name of the error's class (an override of `.name` is not called); an anonymous
    # class is named after its nearest named superclass.
    # @return [String]
    def class_name(error)
      klass = CLASS_OF.bind_call(error)
      name = MODULE_NAME.bind_call(klass)
      return sanitize(name, NAME_LIMIT) if name

      ancestor = klass
      ancestor = SUPERCLASS.bind_call(ancestor) while ancestor && MODULE_NAME.bind_call(ancestor).nil?
      "anonymous subclass of #{ancestor ? sanitize(MODULE_NAME.bind_call(ancestor), NAME_LIMIT) : 'BasicObject'}"
    rescue Worker::HandlerTimeout
      raise
    rescue Exception # rubocop:disable Lint/RescueException
      "(unknown class)"
    end

    # The error's message, sanitized; a note naming the exception when #message raises.
    # @return [String]
    def message_of(error)
      text(error.message, MESSAGE_LIMIT)
    rescue Worker::HandlerTimeout
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException
      "(message unavailable: #{class_name(error)}#message raised #{class_name(e)})"
    end

    # At most {BACKTRACE_LINES} lines of the error's backtrace, each a sanitized String of at
    # most {LINE_LIMIT} bytes. A backtrace that is not an Array counts as one line.
    # @return [Array<String>]
    def backtrace_of(error)
      raw = error.backtrace
      lines = case raw
              when nil then []
              when Array then ARRAY_FIRST.bind_call(raw, BACKTRACE_LINES)
              else [raw]
              end
      lines.map { |line| backtrace_line(line) }
    rescue Worker::HandlerTimeout
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException
      ["(backtrace unavailable: #backtrace raised #{class_name(e)})"]
    end

    # One backtrace entry as a sanitized String.
    # @return [String]
    def backtrace_line(line)
      text(line, LINE_LIMIT)
    rescue Worker::HandlerTimeout
      raise
    rescue Exception # rubocop:disable Lint/RescueException
      "(unprintable backtrace entry)"
    end

    # A handler's `retry_after` as the engine takes it: a finite, non-negative number of
    # seconds (a Float), at most {RETRY_AFTER_CEILING} (larger values and Infinity are
    # clamped to it); nil (the computed backoff) for anything else: nil, a non-Numeric (a
    # String, an arbitrary object), NaN, a negative number, a Numeric with no Float form.
    # @return [Float, nil]
    def retry_after_seconds(value)
      return nil unless value.is_a?(Numeric)
      return RETRY_AFTER_CEILING if value.is_a?(Integer) && value > RETRY_AFTER_CEILING

      seconds = Float(value)
      return nil if seconds.nan? || seconds.negative?
      return 0.0 if seconds.zero? # and not -0.0

      seconds > RETRY_AFTER_CEILING ? RETRY_AFTER_CEILING : seconds
    rescue Worker::HandlerTimeout
      raise
    rescue Exception # rubocop:disable Lint/RescueException
      nil
    end

    # `value` as a sanitized String of at most `limit` bytes (a non-String through its #to_s).
    # @raise whatever the value's #to_s raises
    # @return [String]
    def text(value, limit)
      string = value.is_a?(String) ? value : value.to_s
      string = "" unless string.is_a?(String)
      sanitize(string, limit)
    end

    # {text} of `value`, or nil when `value` is nil; nil as well when its #to_s raises.
    # @return [String, nil]
    def optional_text(value, limit)
      value.nil? ? nil : text(value, limit)
    rescue Worker::HandlerTimeout
      raise
    rescue Exception # rubocop:disable Lint/RescueException
      nil
    end

    # A copy of `string` that is valid UTF-8 without NUL bytes and at most `limit` bytes long:
    # other encodings are transcoded, invalid bytes, characters with no UTF-8 form and NUL
    # bytes become {REPLACEMENT}; a longer text is cut at a character boundary and ends with
    # a note of its full size. Calls no method of a String subclass.
    # @return [String]
    def sanitize(string, limit)
      copy = String.new(string) # a plain String (not a subclass), same bytes and encoding
      total = copy.bytesize
      copy = copy.byteslice(0, limit) if total > limit
      copy = utf8(copy)
      copy = copy.tr("\0", REPLACEMENT) if copy.include?("\0")
      return copy if total <= limit && copy.bytesize <= limit

      note = " [truncated: #{total} bytes]"
      copy.byteslice(0, limit - note.bytesize).scrub("") + note
    end

    # @return [String] valid UTF-8
    def utf8(string)
      encoding = string.encoding
      unless [Encoding::UTF_8, Encoding::BINARY, Encoding::US_ASCII].include?(encoding) || encoding.dummy?
        return string.encode(Encoding::UTF_8, invalid: :replace, undef: :replace, replace: REPLACEMENT)
      end

      string.force_encoding(Encoding::UTF_8)
      string.valid_encoding? ? string : string.scrub(REPLACEMENT)
    rescue EncodingError
      string.force_encoding(Encoding::UTF_8).scrub(REPLACEMENT)
    end

    # "Class: message" of an exception, sanitized, for log lines.
    # @return [String]
    def describe(error)
      "#{class_name(error)}: #{message_of(error)}"
    rescue Exception # rubocop:disable Lint/RescueException
      "(unprintable exception)"
    end

    # The block's value; nil when it raises (a {Worker::HandlerTimeout} passes through).
    def contained
      yield
    rescue Worker::HandlerTimeout
      raise
    rescue Exception # rubocop:disable Lint/RescueException
      nil
    end

    # Hand an outcome back. Never raises. An outcome the engine refuses while the step is still
    # open (a value that cannot be converted, a defect) is replaced by a plain failure naming the
    # reason; a step that cannot be handed back at all (already timed out, engine stopped) is
    # logged and runs again after its claim expires.
    # @return [void]
    def deliver(event, outcome, logger)
      case outcome
      when Hash then event.complete_failure(outcome)
      when Types::StepHandlerCallResult then deliver_result(event, outcome)
      else raise Errors::InternalError, "the handler run produced no outcome (#{outcome.class})"
      end
    rescue Exception => e # rubocop:disable Lint/RescueException
      not_handed_back(event, e, logger)
    end

    # Hands back a {Types::StepHandlerCallResult}: its result, or its error as a failure. A result
    # the engine cannot store fails the step permanently with {Errors::InvalidResultError}.
    def deliver_result(event, result)
      return reported(result.error, event) { event.complete_failure(error_result_failure(result)) } unless result.success?

      begin
        event.complete_success(result.result, result.metadata)
      rescue Exception => e # rubocop:disable Lint/RescueException
        raise if completed?(event)

        detail = e.is_a?(Errors::ValidationError) ? message_of(e) : describe(e)
        invalid = Errors::InvalidResultError.new("step result cannot be stored: #{detail}")
        reported(invalid, event) { event.complete_failure(failure(invalid, "permanent")) }
      end
    end

    # The engine refused an outcome (`error`): record a plain failure instead while the step is
    # still open; otherwise only log.
    def not_handed_back(event, error, logger)
      detail = describe(error)
      if completed?(event)
        log(logger, :warn, "step #{contained { event.step_uuid }} not handed back: #{detail}")
        return
      end
      log(logger, :error, "step #{contained { event.step_uuid }}: its outcome could not be handed back " \
                          "(#{detail}); recording that as its failure")
      event.complete_failure(
        "fault" => true, "kind" => "retryable", "error_class" => "TaskerCore::Errors::InternalError",
        "message" => sanitize("the step's outcome could not be handed back: #{detail}", MESSAGE_LIMIT),
        "backtrace" => [], "retry_after" => nil, "error_code" => nil
      )
    rescue Exception => e # rubocop:disable Lint/RescueException
      log(logger, :error, "step #{contained { event.step_uuid }} not handed back (#{describe(e)}); " \
                          "it runs again after its claim expires")
    end

    # Whether the engine already took the step's outcome.
    def completed?(event)
      event.respond_to?(:completed?) && event.completed? ? true : false
    rescue Exception # rubocop:disable Lint/RescueException
      false
    end

    # Log without raising (a logger that fails loses the line).
    def log(logger, level, message)
      logger.public_send(level, message)
    rescue Exception # rubocop:disable Lint/RescueException
      nil
    end
  end

  module Types
    # Deep-freeze a JSON-like structure (handler configuration).
    # @api private
    def self.deep_freeze(value)
      case value
      when Hash then value.each_value { |v| deep_freeze(v) }
      when Array then value.each { |v| deep_freeze(v) }
      end
      value.freeze
    end
  end
end
