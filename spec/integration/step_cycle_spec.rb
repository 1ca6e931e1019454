# frozen_string_literal: true

require "securerandom"
require "tmpdir"

# Issue 12: the step cycle batched and fused — tasks created many at a time in one
# transaction, roots claimed in the transaction that creates them, outcomes applied in batches
# that release joins exactly once, even with two processes applying to the same tasks.
RSpec.describe "the batched and fused step cycle" do
  let(:width) { 20 }
  let(:wide) do
    branches = (1..width).map do |i|
      "  - name: branch_#{i}\n    handler: { callable: SpecHandlers::EchoParent }\n    dependencies: [fan_out]\n"
    end
    <<~YAML
      name: wide_join
      namespace: spec_cycle
      version: "1.0.0"
      steps:
        - name: fan_out
          handler: { callable: SpecHandlers::EchoParent }
      #{branches.join}  - name: join
          handler: { callable: SpecHandlers::EchoParent }
          dependencies: [#{(1..width).map { |i| "branch_#{i}" }.join(', ')}]
    YAML
  end
  let(:single) do
    <<~YAML
      name: single
      namespace: spec_cycle
      version: "1.0.0"
      steps:
        - name: only
          handler: { callable: SpecHandlers::EchoParent }
    YAML
  end

  def task(name, context = {}, **options)
    { namespace: "spec_cycle", name: name, version: "1.0.0", context: context, **options }
  end

  def count_tasks = psql("SELECT count(*) FROM tasker.tasks WHERE namespace = 'spec_cycle'").to_i

  # Whether the root step was claimed by the transaction that created its task (or released
  # it): such claims are marked "fused" in the step's history.
  def claimed_at_creation?(task_uuid)
    psql("SELECT bool_or(metadata ? 'fused') FROM tasker.workflow_step_transitions " \
         "WHERE task_uuid = '#{task_uuid}' AND to_state = 'in_progress'") == "t"
  end

  it "creates many tasks in one call, honouring each idempotency key, all or nothing" do
    with_template_dir("single.yaml" => single) do |dir|
      with_engine(namespaces: ["spec_cycle"], template_paths: [dir], concurrency: 4) do
        run = SecureRandom.hex(4) # keys of this run only
        existing = TaskerCore::Client.create_task(**task("single", { "n" => -1 }, idempotency_key: "existing-#{run}"))
        before = count_tasks
        records = TaskerCore::Client.create_tasks(
          Array.new(50) { |i| task("single", { "n" => i }) } +
          [task("single", { "n" => 50 }, idempotency_key: "dup-#{run}"),
           task("single", { "n" => 51 }, idempotency_key: "dup-#{run}"),
           task("single", { "n" => 52 }, idempotency_key: "existing-#{run}")]
        )
        expect(records.size).to eq(53)
        expect(count_tasks - before).to eq(51) # 50 plain ones and one of the two "dup-" ones
        expect(records[50].uuid).to eq(records[51].uuid)
        expect([records[50].created?, records[51].created?]).to eq([true, false])
        expect(records[52].uuid).to eq(existing.uuid)
        expect(records[52].created?).to be(false)
        records.uniq(&:uuid).each do |r|
          expect(TaskerCore::Client.wait_for(r.uuid, timeout: 30).status).to eq("complete")
        end

        # One bad item: nothing at all is created.
        before = count_tasks
        expect do
          TaskerCore::Client.create_tasks([task("single"), task("single", { "bad" => "a\0b" }), task("single")])
        end.to raise_error(TaskerCore::Errors::ValidationError, /item 1: .*NUL byte/)
        expect { TaskerCore::Client.create_tasks([task("single"), task("missing")]) }
          .to raise_error(TaskerCore::Errors::TemplateNotFoundError)
        expect { TaskerCore::Client.create_tasks("no") }.to raise_error(TaskerCore::Errors::ValidationError)
        expect { TaskerCore::Client.create_tasks([task("single"), 42]) }
          .to raise_error(TaskerCore::Errors::ValidationError, /item 1 is not a Hash/)
        expect(count_tasks).to eq(before)
        expect(TaskerCore::Client.create_tasks([])).to eq([])
      end
    end
  end

  it "claims a root in the transaction that creates it when this process serves it and has a free slot" do
    with_template_dir("single.yaml" => single) do |dir|
      # A long poll interval: the poller, idle after its first look, holds no slot meanwhile.
      served = with_engine(namespaces: ["spec_cycle"], template_paths: [dir], concurrency: 2, poll_interval: 5) do
        sleep 0.5
        t = TaskerCore::Client.create_task(**task("single"))
        expect(TaskerCore::Client.wait_for(t.uuid, timeout: 15).status).to eq("complete")
        t
      end
      expect(claimed_at_creation?(served.uuid)).to be(true)
      steps = psql("SELECT attempts || ' ' || state FROM tasker.workflow_steps WHERE task_uuid = '#{served.uuid}'")
      expect(steps).to eq("1 complete")

      # A process that serves nothing leaves the root to the queue: claimed later, by a poller.
      queued = with_engine(template_paths: [dir]) { TaskerCore::Client.create_task(**task("single")) }
      with_engine(namespaces: ["spec_cycle"], template_paths: [dir]) do
        expect(TaskerCore::Client.wait_for(queued.uuid, timeout: 15).status).to eq("complete")
      end
      expect(claimed_at_creation?(queued.uuid)).to be(false)
    end
  end

  it "releases each join exactly once with two processes applying to the same tasks, without deadlocks" do
    deadlocks = -> { psql("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").to_i }
    before = deadlocks.call
    with_template_dir("wide.yaml" => wide) do |dir|
      worker = spawn_ruby(<<~RUBY)
        TaskerCore.configure do |c|
          c.namespaces = ["spec_cycle"]
          c.template_paths = [#{dir.dump}]
          c.concurrency = 8
          c.poll_interval = 0.05
        end
        stop = Queue.new
        trap("TERM") { stop << :term }
        TaskerCore.start
        puts "READY"
        stop.pop
        TaskerCore.stop(timeout: 20)
      RUBY
      with_engine(namespaces: ["spec_cycle"], template_paths: [dir], concurrency: 8, poll_interval: 0.05) do
        eventually(timeout: 20) { worker.read.include?("READY") }
        records = TaskerCore::Client.create_tasks(Array.new(50) { task("wide_join") })
        records.each { |r| expect(TaskerCore::Client.wait_for(r.uuid, timeout: 120).status).to eq("complete") }
        uuids = records.map { |r| "'#{r.uuid}'" }.join(",")
        # Every step ran once and completed once; each join was enqueued once, after all 20 parents.
        expect(psql("SELECT count(*), count(DISTINCT step_uuid) FROM tasker.workflow_step_transitions " \
                    "WHERE task_uuid IN (#{uuids}) AND to_state = 'complete'")).to eq("#{50 * (width + 2)}|#{50 * (width + 2)}")
        expect(psql("SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid IN (#{uuids}) AND attempts <> 1")).to eq("0")
        expect(psql("SELECT count(*) FROM tasker.workflow_step_transitions t JOIN tasker.workflow_steps s USING (step_uuid) " \
                    "WHERE s.task_uuid IN (#{uuids}) AND s.name = 'join' AND t.to_state = 'enqueued'")).to eq("50")
        # Both processes ran steps (claims recorded the worker).
        workers = psql("SELECT count(DISTINCT claimed_by) FROM tasker.workflow_steps WHERE task_uuid IN (#{uuids})").to_i
        expect(workers).to eq(2)
      end
      Process.kill(:TERM, worker.pid)
      expect(wait_child(worker, timeout: 30).success?).to be(true), worker.read
    end
    expect(deadlocks.call).to eq(before)
  ensure
    kill_children
  end
end
