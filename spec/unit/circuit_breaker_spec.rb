# frozen_string_literal: true

RSpec.describe TaskerCore::CircuitBreaker do
  let(:name) { "spec_api_#{rand(1 << 40)}" }

  before { described_class.configure(name, failure_threshold: 2, timeout: 0.2, success_threshold: 1) }

  it "returns the block's value while closed" do
    expect(described_class.call(name) { 6**30 }).to eq(6**30)
    expect(described_class.metrics[name]).to include("state" => "closed", "calls" => 1, "successes" => 1)
  end

  it "opens after consecutive failures and then rejects without running the block" do
    2.times { expect { described_class.call(name) { raise IOError, "down" } }.to raise_error(IOError) }
    ran = false
    expect { described_class.call(name) { ran = true } }.to raise_error(TaskerCore::Errors::CircuitOpenError) { |e|
      expect(e).to be_a(TaskerCore::RetryableError)
      expect(e.retry_after).to be_between(0.0, 0.2)
      expect(e.message).to match(/circuit breaker #{name} is open/)
    }
    expect(ran).to be(false)
    expect(described_class.metrics[name]).to include("state" => "open", "rejections" => 1, "failures" => 2)
  end

  it "lets a trial through after the timeout and closes when it succeeds" do
    2.times { expect { described_class.call(name) { raise "down" } }.to raise_error(RuntimeError) }
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
    value = begin
      described_class.call(name) { :recovered }
    rescue TaskerCore::Errors::CircuitOpenError
      raise if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.05
      retry
    end
    expect(value).to eq(:recovered)
    expect(described_class.metrics[name]["state"]).to eq("closed")
    expect(described_class.metrics[name]["transitions"])
      .to eq(["closed->open (failure threshold reached)", "open->half_open (open timeout elapsed)",
              "half_open->closed (trial calls succeeded)"])
  end

  it "does not count a PermanentError as an outage" do
    3.times do
      expect { described_class.call(name) { raise TaskerCore::PermanentError, "404" } }
        .to raise_error(TaskerCore::PermanentError)
    end
    expect(described_class.metrics[name]["state"]).to eq("closed")
  end

  it "can be forced open and closed, and needs a block" do
    described_class.force_open(name)
    expect { described_class.call(name) { 1 } }.to raise_error(TaskerCore::Errors::CircuitOpenError)
    described_class.force_closed(name)
    expect(described_class.call(name) { 2 }).to eq(2)
    expect { described_class.call(name) }.to raise_error(TaskerCore::Errors::ConfigurationError, /needs a block/)
  end
end
