# frozen_string_literal: true

module TaskerCore
  # Values handlers receive and return, and the records {Client} returns.
  module Types
    # What a step handler may return instead of a plain Hash: a success with a result (any
    # JSON value) and metadata stored beside it, or an error result.
    class StepHandlerCallResult
      # @return [Boolean]
      attr_reader :success
      # @return [Object] the step's result (any JSON value)
      attr_reader :result
      # @return [Hash] stored beside the result (a success) or with the failure (an error)
      attr_reader :metadata
      # @return [Exception, nil] an error result's failure: the exception given as `error:`, or
      #   the {Errors::RetryableError} / {Errors::PermanentError} made by {.error} (its backtrace
      #   is where {.error} was called). It is what `error_handlers` receive.
      attr_reader :error
      # @return [Object, nil] an error result's `message:` (recorded through #to_s), nil to
      #   record the error's own message
      attr_reader :message
      # @return [Boolean] whether an error result may run again
      attr_reader :retryable
      # @return [Object, nil] an error result's `retry_after:` (see {.error})
      attr_reader :retry_after
      # @return [Object, nil] an error result's `error_code:`
      attr_reader :error_code
      # @return [Object, nil] recorded as the error class instead of the error's real class
      attr_reader :error_type

      EMPTY = {}.freeze
      private_constant :EMPTY

      # @return [StepHandlerCallResult] a success
      def self.success(result:, metadata: EMPTY)
        new(true, result, metadata, nil)
      end

      # A failure, recorded and reported exactly like the matching raised error:
      # `retryable: false` is a {Errors::PermanentError}, otherwise a {Errors::RetryableError}.
      # `error:` an exception the handler rescued, recorded with its own class, message and
      # backtrace (`message:` then overrides its message). `retry_after:` (seconds) replaces
      # the computed backoff when it is a non-negative Numeric, and is capped at one hour (3600
      # s, Infinity included); anything else (nil, a String, NaN, a negative number, another
      # object) leaves the computed backoff. `error_type:` replaces the recorded class name.
      # `message:`, `error_type:` and `error_code:` are recorded as Strings (through #to_s),
      # made valid UTF-8 and bounded in size; `metadata:` is stored with the failure.
      # @return [StepHandlerCallResult]
      def self.error(message: nil, error: nil, error_type: nil, retryable: true, retry_after: nil,
                     error_code: nil, metadata: {})
        error ||= failure_error(retryable, message, caller(1), retry_after: retry_after, error_code: error_code,
                                                               metadata: metadata)
        new(false, nil, metadata, error, message: message, retryable: retryable ? true : false,
                                         retry_after: retry_after, error_code: error_code, error_type: error_type)
      end

      # The step error an error result stands for, with the caller's backtrace.
      # @api private
      def self.failure_error(retryable, message, backtrace, retry_after:, error_code:, metadata:)
        error = if retryable
                  Errors::RetryableError.new(message, retry_after: retry_after, metadata: metadata)
                else
                  Errors::PermanentError.new(message, error_code: error_code, metadata: metadata)
                end
        error.set_backtrace(backtrace)
        error
      end

      # Normalize what a handler returned.
      # @raise [Errors::InvalidResultError] for anything but a Hash or a StepHandlerCallResult
      # @api private
      def self.from_handler_return(value, handler_class)
        case value
        when StepHandlerCallResult then value
        when Hash then success(result: value)
        else
          raise Errors::InvalidResultError,
                "#{handler_class}#call returned #{class_of(value)}; return a Hash or " \
                "TaskerCore::Types::StepHandlerCallResult.success(result: ...)"
        end
      end

      # The class of any value, a BasicObject (which has no #class) included.
      # @api private
      def self.class_of(value)
        Kernel.instance_method(:class).bind_call(value)
      rescue TypeError
        (class << value; self; end).superclass
      end

      # Use {.success} or {.error}.
      # @api private
      def initialize(success, result, metadata, error, message: nil, retryable: false, retry_after: nil,
                     error_code: nil, error_type: nil)
        @success = success
        @result = result
        @metadata = metadata || EMPTY
        @error = error
        @message = message
        @retryable = retryable
        @retry_after = retry_after
        @error_code = error_code
        @error_type = error_type
        freeze
      end

      # @return [Boolean]
      def success?
        @success
      end
    end
  end
end
