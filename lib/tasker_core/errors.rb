# frozen_string_literal: true

module TaskerCore
  # The one error hierarchy of the gem. The native extension raises these classes by name, so
  # every failure of the gem itself is a `TaskerCore::Errors::Error`. (What passes through it
  # keeps its own class: a block's exception from {CircuitBreaker.call}, a handler's from
  # {Testing.run_step}; a step's timeout is `Worker::HandlerTimeout`, an Exception on purpose.)
  module Errors
    # Base class of every error raised by tasker_core.
    class Error < StandardError; end

    # Invalid configuration (a setting is missing or out of range).
    class ConfigurationError < Error; end

    # A task template is malformed; the message names the file and the step.
    class TemplateError < Error; end

    # No template is registered under the requested namespace, name and version.
    class TemplateNotFoundError < Error; end

    # A task or step does not exist.
    class NotFoundError < Error; end

    # An argument was refused (context that is not a Hash, a value with no JSON form, ...).
    class ValidationError < Error; end

    # A state change that the workflow state machine does not allow.
    class InvalidTransitionError < Error; end

    # The engine is not running in this process.
    class NotStartedError < Error; end

    # Waiting took longer than allowed.
    class TimeoutError < Error; end

    # Applying the database schema failed.
    class MigrationError < Error; end

    # PostgreSQL reported an error.
    class DatabaseError < Error; end

    # A step names a handler class that no loaded template registered, or that is not loaded.
    class HandlerNotFoundError < Error; end

    # A handler returned something that is neither a Hash nor a StepHandlerCallResult.
    class InvalidResultError < Error; end

    # Recorded on a step whose handler ran longer than the step's `timeout_seconds`.
    class StepTimeoutError < Error; end

    # A defect inside tasker_core itself (a Rust panic caught at the native boundary): the
    # message says where. Please report it; the process and its other threads carry on.
    class InternalError < Error; end

    # Base of the errors a step handler raises to say how its step failed.
    class StepError < Error
      # @return [Hash] extra data recorded with the failure
      attr_reader :metadata

      def initialize(message = nil, metadata: {})
        super(message)
        @metadata = metadata
      end
    end

    # The step failed but may succeed later: it runs again after a backoff while attempts
    # remain. `retry_after:` (seconds) replaces the computed backoff.
    class RetryableError < StepError
      # @return [Numeric, nil] seconds to wait before the next attempt
      attr_reader :retry_after

      def initialize(message = nil, retry_after: nil, metadata: {})
        super(message, metadata: metadata)
        @retry_after = retry_after
      end
    end

    # A job or task could not be enqueued (the database refused or could not be reached, or
    # the job's queue or priority cannot be mapped); nothing was enqueued.
    class EnqueueError < Error; end

    # A circuit breaker is open: the guarded call was not made. Retryable, with `retry_after`
    # set to the seconds until the breaker lets a trial call through.
    class CircuitOpenError < RetryableError; end

    # {TaskerCore::RateLimit.acquire} could not take a start within its timeout. Retryable,
    # with `retry_after` set to the seconds until a start may be taken.
    class RateLimitedError < RetryableError; end

    # The step failed and must not run again (bad input, a declined payment, ...).
    class PermanentError < StepError
      # @return [String, nil] a machine-readable reason
      attr_reader :error_code

      def initialize(message = nil, error_code: nil, metadata: {})
        super(message, metadata: metadata)
        @error_code = error_code
      end
    end
  end

  # Shorthand for {Errors::RetryableError}.
  RetryableError = Errors::RetryableError
  # Shorthand for {Errors::PermanentError}.
  PermanentError = Errors::PermanentError
end
