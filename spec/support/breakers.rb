# frozen_string_literal: true

# Named circuit breakers belong to the process, not to an engine: an example that opens one
# (force_open, or failures) would leave it open for every later example in random order. Each
# example ends with every named breaker it left open or half-open closed again, so the next one
# starts from closed breakers and can assert exactly what it expects (health "ok", not "ok or
# degraded").
RSpec.configure do |config|
  config.after do
    TaskerCore::CircuitBreaker.metrics.each do |name, metrics|
      TaskerCore::CircuitBreaker.force_closed(name) unless metrics["state"] == "closed"
    end
  end
end
