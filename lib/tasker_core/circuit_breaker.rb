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
      raise ArgumentError, "TaskerCore::CircuitBreaker.call needs a block" unless block

      Native::CircuitBreakers.call(name.to_s, block)
    end

    # Change one breaker's settings at runtime (creating it if needed).
    # @param failure_threshold [Integer] consecutive failures that open it
    # @param timeout [Numeric] seconds it stays open before a trial call
    # @param success_threshold [Integer] trial successes that close it
    def configure(name, failure_threshold: nil, timeout: nil, success_threshold: nil)
      Native::CircuitBreakers.configure(name.to_s, settings(failure_threshold, timeout, success_threshold))
    end

    # Settings for breakers created from now on (defaults: 5 failures, 30 s, 2 successes).
    def configure_defaults(failure_threshold: 5, timeout: 30, success_threshold: 2)
      Native::CircuitBreakers.configure_defaults(settings(failure_threshold, timeout, success_threshold))
    end

    # Open the breaker until {force_closed}.
    def force_open(name) = Native::CircuitBreakers.force_open(name.to_s)

    # Close the breaker and forget its failures.
    def force_closed(name) = Native::CircuitBreakers.force_closed(name.to_s)

    # @return [Hash{String => Hash}] each breaker's state, counters and recent transitions
    def metrics = Native::CircuitBreakers.metrics

    def settings(failure_threshold, timeout, success_threshold)
      { "failure_threshold" => failure_threshold, "timeout" => timeout&.to_f,
        "success_threshold" => success_threshold }.compact
    end
    private_class_method :settings
  end

  # Change a named circuit breaker's settings at runtime; see {CircuitBreaker.configure}.
  def self.configure_circuit_breaker(name, **settings)
    CircuitBreaker.configure(name, **settings)
  end
end
