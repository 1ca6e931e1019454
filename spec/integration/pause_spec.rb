# frozen_string_literal: true

require "open3"
require "rbconfig"

module PauseSpec
  class << self
    attr_accessor :started
  end
  self.started = Queue.new

  # Records that it ran.
  class Work < TaskerCore::StepHandler::Base
    def call(task, _sequence, _step)
      PauseSpec.started << task.uuid
      { "ok" => true }
    end
  end
end

RSpec.describe "pausing a namespace" do
  let(:template) do
    <<~YAML
      name: work
      namespace: spec_pause
      version: "1.0.0"
      steps:
        - name: work
          handler: { callable: PauseSpec::Work }
    YAML
  end
  let(:exe) { File.expand_path("../../exe/tasker_core", __dir__) }

  def cli(*args)
    out, err, status = Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, *args)
    [out + err, status.exitstatus]
  end

  def create(count)
    TaskerCore::Client.create_tasks(Array.new(count) do |i|
      { namespace: "spec_pause", name: "work", version: "1.0.0", context: { "i" => i } }
    end)
  end

  def states(tasks)
    tasks.map { |t| TaskerCore::Client.find_task(t.uuid).step("work").state }.tally
  end

  around do |example|
    PauseSpec.started = Queue.new
    with_template_dir("work.yaml" => template) do |dir|
      with_engine(namespaces: ["spec_pause"], template_paths: [dir], concurrency: 4) { example.run }
    end
  ensure
    psql("DELETE FROM tasker.paused_namespaces WHERE namespace = 'spec_pause'")
  end

  it "keeps 100 queued steps from starting until resumed, then runs them all once" do
    expect(TaskerCore.pause(namespace: "spec_pause", reason: "incident 42", actor: "ops")).to be(true)
    tasks = create(100)
    sleep 1.0 # ten poll intervals
    expect(PauseSpec.started.size).to eq(0)
    expect(states(tasks)).to eq("enqueued" => 100)
    expect(TaskerCore.health["paused"]).to eq(["spec_pause"])
    TaskerCore::Web.authorize { |_request| :read_only }
    _, _, body = TaskerCore::Web.call("REQUEST_METHOD" => "GET", "PATH_INFO" => "/queues", "HTTP_ACCEPT" => "application/json")
    expect(JSON.parse(body.join)["paused"]).to include("spec_pause" => a_hash_including("reason" => "incident 42"))
    TaskerCore::Web.reset!
    expect(TaskerCore.paused).to contain_exactly(a_hash_including("namespace" => "spec_pause", "actor" => "ops",
                                                                  "reason" => "incident 42"))

    expect(TaskerCore.resume(namespace: "spec_pause")).to be(true)
    done = tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 30) }
    expect(done.map(&:status).uniq).to eq(["complete"])
    expect(done.map { |t| t.step("work").attempts }.uniq).to eq([1])
    expect(PauseSpec.started.size).to eq(100)
    expect(TaskerCore.resume(namespace: "spec_pause")).to be(false)
    expect(TaskerCore.health["paused"]).to eq([])
  end

  it "is obeyed by a running process when another process pauses, and persists across a restart" do
    out, code = cli("pause", "spec_pause", "--reason", "from the CLI")
    expect([out, code]).to match([/paused spec_pause/, 0])
    sleep 0.5 # more than one poll interval (0.1 s)
    tasks = create(20)
    sleep 0.5
    expect(PauseSpec.started.size).to eq(0)

    TaskerCore.restart(timeout: 5) # a process that starts while paused obeys at once
    sleep 0.5
    expect(PauseSpec.started.size).to eq(0)
    expect(states(tasks)).to eq("enqueued" => 20)

    out, code = cli("resume", "spec_pause")
    expect([out, code]).to match([/resumed spec_pause/, 0])
    expect(tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 30).status }.uniq).to eq(["complete"])
  end

  it "refuses a namespace that is not registered or not a namespace" do
    expect { TaskerCore.pause(namespace: "never_registered") }
      .to raise_error(TaskerCore::Errors::NotFoundError, /no namespace "never_registered" is registered/)
    expect { TaskerCore.pause(namespace: "Bad Name") }.to raise_error(TaskerCore::Errors::ValidationError)
    out, code = cli("pause")
    expect([out, code]).to match([/usage: tasker_core pause NAMESPACE/, 1])
  end
end
