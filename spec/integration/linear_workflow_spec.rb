# frozen_string_literal: true

RSpec.describe "the linear demo workflow on PostgreSQL" do
  around { |ex| with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir]) { ex.run } }

  it "squares 6 four times, recording every step and transition" do
    task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                          version: "1.0.0", context: { "even_number" => 6 })
    expect(task.uuid).to match(/\A\h{8}-\h{4}-7\h{3}-\h{4}-\h{12}\z/)
    expect(task.correlation_id).to match(/\A\h{8}-\h{4}-7/) # UUIDv7
    expect(task.status).to eq("in_progress")
    expect(task).to be_created

    done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
    expect(done.status).to eq("complete")
    expect(done.steps.map(&:name)).to eq(%w[linear_step_1 linear_step_2 linear_step_3 linear_step_4])
    expect(done.steps.map(&:result)).to eq([6**2, 6**4, 6**8, 6**16])
    expect(done.steps.last.result).to eq(2_821_109_907_456)
    expect(done.steps.map(&:state).uniq).to eq(["complete"])
    expect(done.steps.map(&:attempts)).to eq([1, 1, 1, 1])
    expect(done.step("linear_step_2").dependencies).to eq(["linear_step_1"])
    expect(done.step("linear_step_1").metadata).to eq("operation" => "square")

    expect(done.transitions.map { |t| [t.from_state, t.to_state] })
      .to eq([[nil, "pending"], %w[pending in_progress], %w[in_progress complete]])
    done.steps.each do |step|
      expect(step.transitions.map { |t| [t.from_state, t.to_state] })
        .to eq([[nil, "pending"], %w[pending enqueued], %w[enqueued in_progress], %w[in_progress complete]])
      expect(step.transitions[2].metadata).to include("attempt" => 1)
    end
  end

  it "keeps a caller's correlation ids" do
    correlation = "01a212e2-9b26-70b3-8e02-60675d2a5fcf"
    parent = "01a212e2-0000-7000-8000-000000000001"
    task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                          version: "1.0.0", context: { "even_number" => 2 },
                                          correlation_id: correlation, parent_correlation_id: parent)
    done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
    expect([done.correlation_id, done.parent_correlation_id]).to eq([correlation, parent])
    expect(done.steps.last.result).to eq(2**16)
  end

  it "runs many tasks concurrently to completion" do
    tasks = (1..20).map do |i|
      TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                     version: "1.0.0", context: { "even_number" => i * 2 })
    end
    results = tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 30).steps.last.result }
    expect(results).to eq((1..20).map { |i| (i * 2)**16 })
  end
end
