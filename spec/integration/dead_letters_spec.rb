# frozen_string_literal: true

require "open3"
require "rbconfig"

# Dead letters: messages archived as unrunnable, listed and replayed (API and CLI).
RSpec.describe "dead letters" do
  let(:exe) { File.expand_path("../../exe/tasker_core", __dir__) }
  # A name no earlier run registered (templates stay registered in the spec database).
  let(:late_name) { "late_#{SecureRandom.hex(4)}" }
  let(:late) do
    <<~YAML
      name: #{late_name}
      namespace: spec_dead
      version: "1.0.0"
      steps:
        - name: work
          handler: { callable: SpecHandlers::Timed }
    YAML
  end

  def cli(*args)
    out, err, status = Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, *args)
    [out + err, status.exitstatus]
  end

  def wait_until(timeout: 15)
    deadline = Time.now + timeout
    sleep 0.05 until (found = yield) || Time.now > deadline
    found
  end

  it "lists a refused task request and replays it once its template exists" do
    key = "dead-#{SecureRandom.hex(4)}"
    with_template_dir("plain.yaml" => late.sub("name: #{late_name}", "name: other")) do |dir|
      with_engine(namespaces: ["spec_dead"], template_paths: [dir]) do
        TaskerCore::Client.request_task(namespace: "spec_dead", name: late_name, version: "1.0.0", context: { "k" => key })
        letter = wait_until { TaskerCore.dead_letters(limit: 200).find { |l| l["message"].to_s.include?(key) } }
        expect(letter).to include("reason" => a_string_including("spec_dead/#{late_name}@1.0.0"))

        out, code = cli("dead", "list", "--limit", "200")
        expect(code).to eq(0)
        expect(out).to include(letter["msg_id"].to_s, key)
      end
    end
    with_template_dir("late.yaml" => late) do |dir|
      with_engine(namespaces: ["spec_dead"], template_paths: [dir]) do
        out, code = cli("dead", "replay", letter_id = TaskerCore.dead_letters(limit: 200)
                                                              .find { |l| l["message"].to_s.include?(key) }["msg_id"].to_s)
        expect([out, code]).to match([/replayed dead letter #{letter_id} as message \d+/, 0])
        find = "SELECT task_uuid FROM tasker.tasks WHERE context->>'k' = '#{key}'"
        uuid = wait_until { psql(find).then { |u| u unless u.empty? } }
        expect(TaskerCore::Client.wait_for(uuid, timeout: 15).status).to eq("complete")
        expect(TaskerCore.dead_letters(limit: 200).none? { |l| l["message"].to_s.include?(key) }).to be(true)
        expect { TaskerCore.replay(Integer(letter_id)) }.to raise_error(TaskerCore::Errors::NotFoundError, /no dead letter/)
      end
    end
  end

  it "lists and replays a namespace queue's poison message" do
    with_template_dir("late.yaml" => late) do |dir|
      with_engine(namespaces: ["spec_dead"], template_paths: [dir]) do
        psql(%(SELECT pgmq.send('tasker_ns_spec_dead', '{"not": "a step"}')))
        letter = wait_until { TaskerCore.dead_letters(namespace: "spec_dead").find { |l| l["message"].include?("not") } }
        expect(letter["reason"]).to match(/not a step message/)
        new_id = TaskerCore.replay(letter["msg_id"], namespace: :spec_dead)
        expect(new_id).to be > letter["msg_id"]
        again = wait_until { TaskerCore.dead_letters(namespace: "spec_dead").find { |l| l["msg_id"] == new_id } }
        expect(again["reason"]).to match(/not a step message/) # still unrunnable: archived again, nothing lost
        expect { TaskerCore.dead_letters(namespace: "Bad Name") }.to raise_error(TaskerCore::Errors::ValidationError)
        out, code = cli("dead", "replay", "abc")
        expect([out, code]).to match([/ID must be a message id/, 1])
      end
    end
  end
end
