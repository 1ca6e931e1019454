# frozen_string_literal: true

module ScheduledSpec
  LOCK = Mutex.new
  class << self
    # [task uuid, Time] of every run, in order.
    def ran = LOCK.synchronize { (@ran ||= []).dup }
    def record(uuid) = LOCK.synchronize { (@ran ||= []) << [uuid, Time.now] }
    def reset! = LOCK.synchronize { @ran = [] }
  end

  # Records when it ran.
  class Stamp < TaskerCore::StepHandler::Base
    def call(task, _sequence, _step)
      ScheduledSpec.record(task.uuid)
      { "at" => Time.now.utc.iso8601(3) }
    end
  end
end

RSpec.describe "scheduled tasks (run_at:, wait:)" do
  let(:template) do
    <<~YAML
      name: stamp
      namespace: spec_scheduled
      version: "1.0.0"
      steps:
        - name: stamp
          handler: { callable: ScheduledSpec::Stamp }
    YAML
  end

  around do |example|
    ScheduledSpec.reset!
    with_template_dir("stamp.yaml" => template) do |dir|
      with_engine(namespaces: ["spec_scheduled"], template_paths: [dir]) { example.run }
    end
  end

  def create(**options)
    TaskerCore::Client.create_task(namespace: "spec_scheduled", name: "stamp", version: "1.0.0", context: {}, **options)
  end

  it "creates the task at once and starts its root no earlier than run_at, and within a second after" do
    run_at = Time.now + 2
    task = create(run_at: run_at)
    found = TaskerCore::Client.find_task(task.uuid)
    step = found.step("stamp")
    expect([found.status, step.state, step.attempts]).to eq(["in_progress", "waiting_for_retry", 0])
    expect(Time.parse(step.next_retry_at)).to be_within(0.01).of(run_at)
    uuid, ran_at = eventually(timeout: 10) { ScheduledSpec.ran.find { |(u, _)| u == task.uuid } }
    expect(uuid).to eq(task.uuid)
    expect(ran_at).to be >= run_at
    expect(ran_at - run_at).to be < 1.0
    done = TaskerCore::Client.wait_for(task.uuid, timeout: 10)
    expect([done.status, done.step("stamp").attempts]).to eq(["complete", 1])
  end

  it "takes wait: seconds from now, in create_tasks too, and a time passed as at once" do
    started = Time.now
    later = create(wait: 1)
    batch = TaskerCore::Client.create_tasks([{ namespace: "spec_scheduled", name: "stamp", version: "1.0.0",
                                               context: {}, run_at: Time.now - 60 }])
    mine = [later.uuid, batch.first.uuid]
    # (Runs of other tasks may appear: scheduled tasks an earlier, interrupted run left behind.)
    first, second = eventually(timeout: 10) { (r = ScheduledSpec.ran.select { |(u, _)| mine.include?(u) }).size >= 2 && r }
    expect(first[0]).to eq(batch.first.uuid) # the past run_at ran at once, before the waiting one
    expect(second[0]).to eq(later.uuid)
    expect(second[1] - started).to be >= 1.0
  end

  it "can be cancelled before it runs, and then never runs" do
    task = create(wait: 1.5)
    cancelled = TaskerCore::Client.cancel_task(task.uuid, reason: "not needed after all")
    expect([cancelled.status, cancelled.step("stamp").state]).to eq(%w[cancelled cancelled])
    sleep 2.5 # past its time, and the retry loop's longest sleep
    expect(ScheduledSpec.ran.map(&:first)).not_to include(task.uuid)
  end

  it "refuses what is not a time" do
    expect { create(run_at: Time.now, wait: 1) }.to raise_error(TaskerCore::Errors::ValidationError, /not both/)
    expect { create(run_at: "tomorrow") }.to raise_error(TaskerCore::Errors::ValidationError, /run_at must be a Time/)
    expect { create(wait: -1) }.to raise_error(TaskerCore::Errors::ValidationError, /wait/)
    expect { create(wait: Float::NAN) }.to raise_error(TaskerCore::Errors::ValidationError, /wait/)
    expect { create(run_at: Time.now + (400 * 86_400)) }.to raise_error(TaskerCore::Errors::ValidationError, /at most 365/)
  end
end
