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
      # @return [Hash] stored beside the result, not part of it
      attr_reader :metadata
      # @return [Hash, nil] for error results: message, error_type, retryable, retry_after, error_code
      attr_reader :error

      EMPTY = {}.freeze
      private_constant :EMPTY

      # @return [StepHandlerCallResult] a success
      def self.success(result:, metadata: EMPTY)
        new(true, result, metadata, nil)
      end

      # A failure; `retryable: false` makes it permanent. `retry_after:` (seconds) replaces the
      # computed backoff when it is a non-negative Numeric, and is capped at one hour (3600 s,
      # Infinity included); anything else (nil, a String, NaN, a negative number, another
      # object) leaves the computed backoff. `message:`, `error_type:` and `error_code:` are
      # recorded as Strings (through #to_s), made valid UTF-8 and bounded in size.
      # @return [StepHandlerCallResult]
      def self.error(message:, error_type: "StepError", retryable: true, retry_after: nil,
                     error_code: nil, metadata: {})
        new(false, nil, metadata, { message: message, error_type: error_type, retryable: retryable,
                                    retry_after: retry_after, error_code: error_code })
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
      def initialize(success, result, metadata, error)
        @success = success
        @result = result
        @metadata = metadata || EMPTY
        @error = error
        freeze
      end

      # @return [Boolean]
      def success?
        @success
      end
    end
  end
end
