# frozen_string_literal: true

RSpec.describe TaskerCore::CircuitBreakerSettings do
  def config(**settings)
    TaskerCore::Configuration.new.tap do |c|
      c.database_url = "postgres://localhost/x"
      settings.each { |k, v| c.public_send("#{k}=", v) }
    end
  end

  it "defaults by environment: production trips later and waits longer than development" do
    prod = config(environment: "production").resolved_circuit_breakers
    dev = config(environment: "development").resolved_circuit_breakers
    expect(prod[:pgmq]).to eq(failure_threshold: 5, timeout: 10, success_threshold: 1)
    expect(prod[:handlers]).to eq(failure_threshold: 5, timeout: 30, success_threshold: 1)
    expect(dev[:pgmq]).to eq(failure_threshold: 3, timeout: 2, success_threshold: 1)
    expect(config(environment: "test").resolved_circuit_breakers).to eq(dev)
    expect(config(environment: "staging").resolved_circuit_breakers).to eq(prod)
  end

  it "takes the environment from TASKER_ENV, RAILS_ENV or RACK_ENV" do
    old = ENV.to_h.slice("TASKER_ENV", "RAILS_ENV", "RACK_ENV")
    %w[TASKER_ENV RAILS_ENV RACK_ENV].each { |k| ENV.delete(k) }
    expect(TaskerCore::Configuration.new.environment).to eq("development")
    ENV["RACK_ENV"] = "production"
    expect(TaskerCore::Configuration.new.environment).to eq("production")
    ENV["TASKER_ENV"] = "test"
    expect(TaskerCore::Configuration.new.environment).to eq("test")
  ensure
    %w[TASKER_ENV RAILS_ENV RACK_ENV].each { |k| old.key?(k) ? ENV[k] = old[k] : ENV.delete(k) }
  end

  it "merges defaults, components and per-name entries in that order" do
    c = config(environment: "production", circuit_breakers: {
                 defaults: { failure_threshold: 7 },
                 pgmq: { timeout: 3 },
                 namespaces: { "billing" => { success_threshold: 4 } },
                 handler_classes: { "Billing::Charge" => { timeout: 60 } },
                 named: { payments_api: { timeout: 9 } }
               })
    r = c.resolved_circuit_breakers
    expect(r[:pgmq]).to eq(failure_threshold: 7, timeout: 3, success_threshold: 1)
    expect(r[:handlers]).to eq(failure_threshold: 7, timeout: 30, success_threshold: 1)
    expect(r[:namespaces]).to eq("billing" => { failure_threshold: 7, timeout: 3, success_threshold: 4 })
    expect(r[:handler_classes]).to eq("Billing::Charge" => { failure_threshold: 7, timeout: 60, success_threshold: 1 })
    expect(r[:named]).to eq("payments_api" => { failure_threshold: 7, timeout: 9, success_threshold: 2 })
    native = c.validate!.to_native
    expect(native["queue_circuit_breaker"]).to eq("failure_threshold" => 7, "timeout" => 3.0, "success_threshold" => 1)
    expect(native["namespace_circuit_breakers"]).to eq("billing" => { "failure_threshold" => 7, "timeout" => 3.0,
                                                                      "success_threshold" => 4 })
  end

  {
    "an unknown section" => [{ queues: {} }, /unknown keys queues/],
    "an unknown setting" => [{ pgmq: { retries: 3 } }, /pgmq: unknown setting retries/],
    "a zero threshold" => [{ handlers: { failure_threshold: 0 } }, /failure_threshold must be an Integer/],
    "a negative timeout" => [{ defaults: { timeout: -1 } }, /timeout must be a positive number/],
    "a bad namespace" => [{ namespaces: { "Bad-Name" => {} } }, /namespaces: namespace "Bad-Name" is invalid/],
    "a non-Hash" => [[], /must be a Hash/]
  }.each do |what, (settings, message)|
    it "rejects #{what} with a message naming it" do
      expect { config(circuit_breakers: settings).validate! }
        .to raise_error(TaskerCore::Errors::ConfigurationError, message)
    end
  end

  it "changes breakers at runtime only with one target and valid settings" do
    expect { TaskerCore.configure_circuit_breaker(failure_threshold: 2) }.to raise_error(TaskerCore::Errors::ConfigurationError)
    expect do
      TaskerCore.configure_circuit_breaker(:x, namespace: "y", timeout: 1)
    end.to raise_error(TaskerCore::Errors::ConfigurationError)
    expect { TaskerCore.configure_circuit_breaker(:spec_x, timeout: 0) }
      .to raise_error(TaskerCore::Errors::ConfigurationError, /timeout/)
    expect { TaskerCore.configure_circuit_breaker(namespace: "No Such", timeout: 1) }
      .to raise_error(TaskerCore::Errors::ConfigurationError, /namespace "No Such" is invalid/)
    TaskerCore.configure_circuit_breaker(:spec_runtime_named, failure_threshold: 9)
    expect(TaskerCore::CircuitBreaker.metrics).to include("spec_runtime_named")
  end
end
