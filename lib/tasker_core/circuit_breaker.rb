# frozen_string_literal: true

module TaskerCore
  # Circuit breakers for handler code that calls third parties. A breaker opens after
  # `failure_threshold` consecutive failures, rejects calls at once for `timeout` seconds
  # (raising {Errors::CircuitOpenError}, a {RetryableError} whose `retry_after` the engine
  # honours), then lets one trial call through at a time and closes after `success_threshold`
  # trial successes. Breakers live in the Rust core, one per name per process.
  #
  # @example
  #   TaskerCore::CircuitBreaker.call(:payments_api) { gateway.charge(order) }
  module CircuitBreaker
    module_function

    # Run the block under the breaker `name`. Exceptions from the block count as failures,
    # except {PermanentError} (a business outcome, not an outage), and are re-raised.
    # @raise [Errors::CircuitOpenError] while the breaker is open
    # @return the block's value
    def call(name, &block)
      raise Errors::ConfigurationError, "TaskerCore::CircuitBreaker.call needs a block" unless block

      Native::CircuitBreakers.call(name.to_s, block)
    end

    # Change one breaker's settings at runtime (creating it if needed).
    # @param failure_threshold [Integer] consecutive failures that open it
    # @param timeout [Numeric] seconds it stays open before a trial call
    # @param success_threshold [Integer] trial successes that close it
    # @raise [Errors::ConfigurationError] for a setting out of range
    def configure(name, failure_threshold: nil, timeout: nil, success_threshold: nil)
      one = settings(failure_threshold, timeout, success_threshold)
      CircuitBreakerSettings.validate_one!("for #{name}", one)
      Native::CircuitBreakers.configure(name.to_s, one)
    end

    # Settings for breakers created from now on; a setting not given takes the production
    # default (`Native::DEFAULTS`: 5 failures, 30 s, 2 successes).
    # @raise [Errors::ConfigurationError] for a setting out of range
    def configure_defaults(failure_threshold: nil, timeout: nil, success_threshold: nil)
      given = settings(failure_threshold, timeout, success_threshold)
      one = Native::DEFAULTS.dig("circuit_breakers", "production", "defaults").merge(given)
      CircuitBreakerSettings.validate_one!("defaults", one)
      Native::CircuitBreakers.configure_defaults(one)
    end

    # Open the breaker until {force_closed}.
    def force_open(name) = Native::CircuitBreakers.force_open(name.to_s)

    # Close the breaker and forget its failures.
    def force_closed(name) = Native::CircuitBreakers.force_closed(name.to_s)

    # @return [Hash{String => Hash}] each breaker's state, counters and recent transitions
    def metrics = Native::CircuitBreakers.metrics

    # @return [Hash{String => Hash}] the running engine's breakers of each namespace queue
    #   (by queue name) or of each handler class; {} when stopped
    def engine_metrics(kind)
      TaskerCore.running? ? TaskerCore.engine.breaker_metrics(kind.to_s) : {}
    end

    def stringify(settings)
      settings.transform_keys(&:to_s)
    end
    private_class_method :stringify

    def settings(failure_threshold, timeout, success_threshold)
      { "failure_threshold" => failure_threshold, "timeout" => timeout,
        "success_threshold" => success_threshold }.compact
    end
    private_class_method :settings
  end

  # Change a circuit breaker's settings at runtime, without a restart:
  #
  #   TaskerCore.configure_circuit_breaker(:payments_api, timeout: 60)            # a named breaker
  #   TaskerCore.configure_circuit_breaker(namespace: "billing", failure_threshold: 3) # a queue
  #   TaskerCore.configure_circuit_breaker(handler: "Billing::Charge", timeout: 10)    # a handler class
  #
  # Settings not given keep their current values. Queue and handler breakers belong to the
  # running engine (they are configured again from {Configuration#circuit_breakers} at start).
  # @raise [Errors::NotStartedError] for a queue or handler breaker while the engine is stopped
  # @raise [Errors::ConfigurationError] for invalid settings
  def self.configure_circuit_breaker(name = nil, namespace: nil, handler: nil, **settings)
    targets = [name, namespace, handler].compact
    unless targets.size == 1
      raise Errors::ConfigurationError, "configure_circuit_breaker needs exactly one of a name, namespace: or handler:"
    end

    CircuitBreakerSettings.validate_one!("for #{targets.first}", settings)
    if namespace
      CircuitBreakerSettings.validate_namespace!(namespace)
      TaskerCore.engine.configure_breaker("namespace", namespace.to_s, CircuitBreaker.send(:stringify, settings))
    elsif handler
      TaskerCore.engine.configure_breaker("handler", handler.to_s, CircuitBreaker.send(:stringify, settings))
    else
      CircuitBreaker.configure(name, **settings)
    end
  end
end
