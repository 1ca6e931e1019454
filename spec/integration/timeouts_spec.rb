# frozen_string_literal: true

RSpec.describe "step timeouts" do
  around do |ex|
    with_engine(namespaces: ["spec_timeouts"], template_paths: [fixture_templates], concurrency: 2,
                timeout_grace: 0.5) { ex.run }
  end

  it "interrupts a handler past its timeout, records a retryable timeout, and runs the step again" do
    task = TaskerCore::Client.create_task(namespace: "spec_timeouts", name: "timeouts", version: "1.0.0", context: {})
    done = TaskerCore::Client.wait_for(task.uuid, timeout: 20)
    expect(done.status).to eq("complete")

    slow = done.step("slow_once")
    expect(slow.result).to eq("attempt" => 2) # the interrupt was not swallowed by `rescue StandardError`
    expect(slow.attempts).to eq(2)
    timed_out = slow.transitions.find { |t| t.to_state == "waiting_for_retry" }
    expect(timed_out.metadata).to include("error_class" => "TaskerCore::Errors::StepTimeoutError")
    expect(timed_out.metadata["message"]).to match(/exceeded its timeout of 1s \(attempt 1\)/)

    stubborn = done.step("stubborn_once")
    expect(stubborn.result).to eq("attempt" => 2)
    expect(stubborn.transitions.map(&:to_state))
      .to eq(%w[pending enqueued in_progress waiting_for_retry enqueued in_progress complete])

    # The stubborn first attempt finished late; its result was discarded, not applied.
    eventually(timeout: 5) { !SpecHandlers::StubbornOnce.late_results.empty? }
    expect(SpecHandlers::StubbornOnce.late_results.pop).to eq(1)
    expect(TaskerCore::Client.find_task(task.uuid).step("stubborn_once").result).to eq("attempt" => 2)
    # The pool is back at its size: the stuck thread was replaced.
    expect(TaskerCore.worker_threads).to eq(2)
  end
end
