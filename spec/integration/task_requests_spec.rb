# frozen_string_literal: true

require "json"
require "securerandom"

RSpec.describe "asynchronous task requests (tasker_task_requests queue)" do
  around { |ex| with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir]) { ex.run } }

  def uuid7ish
    "01a2#{SecureRandom.hex(2)}-0000-7000-8000-#{SecureRandom.hex(6)}"
  end

  def task_for(correlation_id)
    eventually(timeout: 15) { TaskerCore::Client.find_tasks(correlation_id: correlation_id).first }
  end

  def send_sql(payload)
    psql("SELECT pgmq.send('tasker_task_requests', '#{payload}'::jsonb)").to_i
  end

  def archived_reason(msg_id)
    eventually(timeout: 15) do
      psql("SELECT headers->>'tasker_archive_reason' FROM pgmq.a_tasker_task_requests WHERE msg_id = #{msg_id}")
        .then { |r| r.empty? ? nil : r }
    end
  end

  it "turns a request sent with plain SQL into a task" do
    correlation = uuid7ish
    send_sql(JSON.generate(namespace: "linear_workflow", name: "mathematical_sequence", version: "1.0.0",
                           context: { even_number: 4 }, correlation_id: correlation, priority: "high"))
    task = task_for(correlation)
    done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
    expect(done.status).to eq("complete")
    expect(done.steps.last.result).to eq(4**16)
    expect(TaskerCore::Client.find_tasks(correlation_id: correlation).size).to eq(1)
  end

  it "accepts requests from Client.request_task" do
    correlation = uuid7ish
    id = TaskerCore::Client.request_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                         version: "1.0.0", context: { "even_number" => 2 },
                                         correlation_id: correlation)
    expect(id).to be_a(Integer)
    expect(TaskerCore::Client.wait_for(task_for(correlation).uuid, timeout: 15).status).to eq("complete")
  end

  it "archives malformed requests with the reason instead of retrying them forever" do
    bad = {
      '"just a string"' => /malformed task request/,
      '{"namespace": "linear_workflow"}' => /malformed task request: missing field/,
      '{"namespace": "linear_workflow", "name": "nope", "version": "1.0.0"}' => /no task template registered/,
      '{"namespace": "linear_workflow", "name": "mathematical_sequence", "version": "1.0.0", "context": [1]}' =>
        /context must be a JSON object/,
      '{"namespace": "linear_workflow", "name": "mathematical_sequence", "version": "1.0.0", "colour": 1}' =>
        /unknown field `colour`/,
      '{"namespace": "linear_workflow", "name": "mathematical_sequence", "version": "1.0.0", "priority": "asap"}' =>
        /unknown priority/
    }
    ids = bad.keys.map { |payload| send_sql(payload) }
    ids.zip(bad.values).each { |id, reason| expect(archived_reason(id)).to match(reason) }
    expect(psql("SELECT count(*) FROM pgmq.q_tasker_task_requests WHERE msg_id IN (#{ids.join(',')})")).to eq("0")
  end

  it "creates one task for a request delivered twice" do
    key = "req-#{SecureRandom.hex(6)}"
    correlation = uuid7ish
    2.times do
      send_sql(JSON.generate(namespace: "linear_workflow", name: "mathematical_sequence", version: "1.0.0",
                             context: { even_number: 2 }, correlation_id: correlation, idempotency_key: key))
    end
    TaskerCore::Client.wait_for(task_for(correlation).uuid, timeout: 15)
    eventually { psql("SELECT count(*) FROM pgmq.q_tasker_task_requests") == "0" }
    expect(TaskerCore::Client.find_tasks(correlation_id: correlation).size).to eq(1)
  end
end
