# frozen_string_literal: true

module TaskerCore
  # Runs one step event through its handler and hands the outcome back to the engine.
  # @api private
  module StepExecution
    module_function

    # @return [Types::StepHandlerCallResult, Hash] a result, or a failure Hash for the engine
    def run_handler(event, registry)
      wrapper = TaskerCore.handler_wrapper
      return wrapper.call { run_handler_now(event, registry) } if wrapper

      run_handler_now(event, registry)
    end

    # {run_handler} without the handler wrapper: resolves the handler class, calls it, and turns
    # its return value or exception into an outcome.
    # @return [Types::StepHandlerCallResult, Hash] a result, or a failure Hash for the engine
    def run_handler_now(event, registry)
      klass = registry.resolve(event.handler_class)
      handler = klass.new(config: registry.config_for(event))
      returned = handler.call(Types::Task.new(event), Types::Sequence.new(event), Types::Step.new(event))
      Types::StepHandlerCallResult.from_handler_return(returned, klass)
    rescue Errors::PermanentError => e
      reported(e, event) { failure(e, "permanent", error_code: e.error_code) }
    rescue Errors::RetryableError => e
      reported(e, event) { failure(e, "retryable", retry_after: e.retry_after) }
    rescue Errors::HandlerNotFoundError, Errors::InvalidResultError, Errors::ConfigurationError,
           NotImplementedError => e
      reported(e, event) { failure(e, "permanent") }
    rescue StandardError, ScriptError => e
      reported(e, event) { failure(e, "retryable", fault: true) }
    end

    # Passes `error` to the configured error handlers, then returns the block's value.
    def reported(error, event)
      TaskerCore.report_error(error, event)
      yield
    end

    # The failure recorded when a handler outlives its step's timeout.
    def timeout_failure(event)
      error = Errors::StepTimeoutError.new(
        "step #{event.step_name} exceeded its timeout of #{event.timeout_seconds}s (attempt #{event.attempts})"
      )
      reported(error, event) { failure(error, "retryable", fault: true) }
    end

    # `fault`: the handler itself misbehaved (timeout, unclassified exception); counts
    # against its handler class's circuit breaker. Classified errors are business outcomes.
    def failure(error, kind, retry_after: nil, error_code: nil, fault: false)
      {
        "fault" => fault,
        "kind" => kind,
        "error_class" => error.class.name || error.class.inspect,
        "message" => error.message.to_s,
        "backtrace" => Array(error.backtrace).first(50),
        "retry_after" => retry_after&.to_f,
        "error_code" => error_code&.to_s
      }
    end

    # Hand an outcome back. Never raises: a step that cannot be handed back (already timed out,
    # engine stopped) is logged and runs again after its claim expires.
    def deliver(event, outcome, logger)
      case outcome
      when Hash then event.complete_failure(outcome)
      when Types::StepHandlerCallResult then deliver_result(event, outcome)
      end
    rescue Errors::Error => e
      logger.warn("step #{event.step_uuid} not handed back: #{e.message}")
    end

    # Hands back a {Types::StepHandlerCallResult}: its result, or its error as a failure. A result
    # the engine cannot store fails the step permanently with {Errors::InvalidResultError}.
    def deliver_result(event, result)
      if result.success?
        begin
          event.complete_success(result.result, result.metadata)
        rescue Errors::ValidationError => e
          invalid = Errors::InvalidResultError.new("step result cannot be stored: #{e.message}")
          TaskerCore.report_error(invalid, event)
          event.complete_failure(failure(invalid, "permanent"))
        end
      else
        err = result.error
        event.complete_failure(
          "kind" => err[:retryable] ? "retryable" : "permanent",
          "error_class" => err[:error_type].to_s, "message" => err[:message].to_s, "backtrace" => [],
          "retry_after" => err[:retry_after]&.to_f, "error_code" => err[:error_code]&.to_s
        )
      end
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
