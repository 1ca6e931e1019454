# frozen_string_literal: true

RSpec.describe "a handler guarding a third-party call with a circuit breaker" do
  around { |ex| with_engine(namespaces: ["spec_breaker"], template_paths: [fixture_templates]) { ex.run } }

  it "retries after the breaker's retry_after while it is open, and runs once it closes" do
    breaker = "partner_#{rand(1 << 40)}"
    TaskerCore::CircuitBreaker.configure(breaker, timeout: 0.5)
    TaskerCore::CircuitBreaker.force_open(breaker)
    task = TaskerCore::Client.create_task(namespace: "spec_breaker", name: "guarded", version: "1.0.0",
                                          context: { "breaker" => breaker })
    waiting = eventually(timeout: 15) do
      TaskerCore::Client.find_task(task.uuid).step("call_partner").then { |s| s if s.state == "waiting_for_retry" }
    end
    expect(waiting.error).to include("error_class" => "TaskerCore::Errors::CircuitOpenError", "retryable" => true)
    expect(waiting.transitions.last.metadata).to include("retry_in_ms" => 500)
    TaskerCore::CircuitBreaker.force_closed(breaker)
    done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
    expect(done.status).to eq("complete")
    expect(done.step("call_partner").result).to eq("called_on_attempt" => 2)
  end
end
