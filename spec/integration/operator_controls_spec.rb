# frozen_string_literal: true

RSpec.describe "operator controls" do
  around do |ex|
    SpecHandlers::Toggle.healed = false
    with_engine(namespaces: ["spec_ops"], template_paths: [fixture_templates], concurrency: 2) { ex.run }
  end

  let(:client) { TaskerCore::Client }

  def create(context)
    client.create_task(namespace: "spec_ops", name: "operator_controls", version: "1.0.0", context: context)
  end

  def failed_task
    done = client.wait_for(create("fail_second" => true).uuid, timeout: 15)
    expect(done.status).to eq("error")
    expect(done.step("second").state).to eq("error")
    expect(done.step("third").state).to eq("pending")
    done
  end

  it "retries a failed step with a fresh attempt budget and re-opens the task" do
    task = failed_task
    SpecHandlers::Toggle.healed = true
    reopened = client.retry_step(task.uuid, "second", reason: "upstream fixed", actor: "ops@example.com")
    expect(%w[in_progress complete]).to include(reopened.status)
    done = client.wait_for(task.uuid, timeout: 15)
    expect(done.status).to eq("complete")
    second = done.step("second")
    expect([second.state, second.attempts, second.max_attempts]).to eq(["complete", 2, 2])
    retried = second.transitions.find { |t| t.from_state == "error" }
    expect(retried.to_state).to eq("enqueued")
    expect(retried.metadata).to include("actor" => "ops@example.com", "reason" => "upstream fixed",
                                        "previous_max_attempts" => 1, "max_attempts" => 2)
    expect(done.transitions.map(&:to_state)).to eq(%w[pending in_progress error in_progress complete])
  end

  it "resolves a failed step by hand so its children run with the given result" do
    task = failed_task
    client.resolve_step_manually(task.uuid, "second", result: { "manual" => 6**30 }, reason: "charged by phone")
    done = client.wait_for(task.uuid, timeout: 15)
    expect(done.status).to eq("complete")
    expect(done.step("second").state).to eq("resolved_manually")
    expect(done.step("second").result).to eq("manual" => 6**30)
    expect(done.step("third").result).to eq("parent_result" => { "manual" => 6**30 })
    expect(done.step("second").transitions.last.metadata).to include("reason" => "charged by phone")
  end

  it "refuses controls that the state machine does not allow" do
    done = client.wait_for(create({}).uuid, timeout: 15)
    expect(done.status).to eq("complete")
    expect { client.retry_step(done.uuid, "second") }
      .to raise_error(TaskerCore::Errors::InvalidTransitionError, /only a step in error/)
    expect { client.resolve_step_manually(done.uuid, "second", result: 1) }
      .to raise_error(TaskerCore::Errors::InvalidTransitionError)
    expect { client.cancel_task(done.uuid) }
      .to raise_error(TaskerCore::Errors::InvalidTransitionError, /complete and cannot be cancelled/)
    expect { client.retry_step(done.uuid, "nope") }.to raise_error(TaskerCore::Errors::NotFoundError)
  end

  it "cancels a task: the running step finishes and is recorded, nothing else starts" do
    task = create("gated" => true)
    expect(SpecHandlers::Gate.entered.pop).to eq(task.uuid) # `first` is running
    cancelled = client.cancel_task(task.uuid, reason: "customer withdrew")
    expect(cancelled.status).to eq("cancelled")
    expect(client.wait_for(task.uuid, timeout: 1).status).to eq("cancelled")
    SpecHandlers::Gate.gate << :open
    first = eventually { client.find_task(task.uuid).step("first").then { |s| s if s.state == "complete" } }
    expect(first.result).to eq("gate" => "passed")
    done = client.find_task(task.uuid)
    expect(done.status).to eq("cancelled")
    expect(done.steps.map(&:state)).to eq(%w[complete cancelled cancelled])
    expect(done.transitions.last.metadata).to include("reason" => "customer withdrew", "cancelled_steps" => 2)
    expect { client.cancel_task(task.uuid) }.to raise_error(TaskerCore::Errors::InvalidTransitionError)
  end
end
