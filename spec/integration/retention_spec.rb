# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"

# Retention: finished tasks and archived messages older than their windows are deleted in
# batches — on demand (TaskerCore.run_maintenance, the CLI) and by worker processes, one at a
# time under the maintenance lease — and nothing unfinished is ever a candidate.
RSpec.describe "retention" do
  include_context "with a clean tasker database"

  let(:exe) { File.expand_path("../../exe/tasker_core", __dir__) }
  let(:lib_dir) { File.expand_path("../../lib", __dir__) }
  let(:linear) { { namespace: "linear_workflow", name: "mathematical_sequence", version: "1.0.0" } }

  def count(sql) = psql(sql).to_i

  # Rows a task has (task, steps, histories).
  def rows_of(uuid)
    [count("SELECT count(*) FROM tasker.tasks WHERE task_uuid = '#{uuid}'"),
     count("SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = '#{uuid}'"),
     count("SELECT (SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = '#{uuid}') + " \
           "(SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = '#{uuid}')")]
  end

  def age(uuids, days, column: "completed_at")
    list = uuids.map { |u| "'#{u}'" }.join(",")
    psql("UPDATE tasker.tasks SET #{column} = now() - interval '#{days} days' WHERE task_uuid IN (#{list})")
  end

  # Linear tasks run to completion by this process.
  def completed_tasks(n)
    tasks = Array.new(n) { |i| TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 * (i + 1) }) }
    done = tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 30) }
    expect(done.map(&:status).uniq).to eq(["complete"])
    done
  end

  it "deletes exactly the finished tasks past their window, with their steps and histories, and archived messages" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], retention: { interval: nil }) do
      old, young, old_error, young_error = completed_tasks(4).map(&:uuid)
      psql("UPDATE tasker.tasks SET status = 'error' WHERE task_uuid IN ('#{old_error}', '#{young_error}')")
      age([old], 8)
      age([young], 6)
      age([old_error], 31)
      age([young_error], 29)
      # Created 90 days ago and not finished (it starts in an hour): never a candidate.
      stuck = TaskerCore::Client.create_task(**linear, context: { "even_number" => 4 }, run_at: Time.now + 3600)
      age([stuck.uuid], 90, column: "created_at")
      # Archived messages: 3 more in a tasker queue, 2 of them old.
      3.times { psql("SELECT pgmq.archive('tasker_ns_linear_workflow', pgmq.send('tasker_ns_linear_workflow', '{}'::jsonb))") }
      psql("UPDATE pgmq.a_tasker_ns_linear_workflow SET archived_at = now() - interval '8 days' " \
           "WHERE msg_id IN (SELECT msg_id FROM pgmq.a_tasker_ns_linear_workflow ORDER BY msg_id LIMIT 2)")
      history = rows_of(old)[2]
      archived = count("SELECT count(*) FROM pgmq.a_tasker_ns_linear_workflow")

      report = TaskerCore.run_maintenance
      expect(report).to include("tasks" => 2, "steps" => 8, "transitions" => 2 * history, "archived" => 2)
      expect(rows_of(old)).to eq([0, 0, 0])
      expect(rows_of(old_error)).to eq([0, 0, 0])
      [young, young_error, stuck.uuid].each { |kept| expect(rows_of(kept)[0, 2]).to eq([1, 4]) }
      expect(count("SELECT count(*) FROM tasker.workflow_step_edges")).to eq(3 * 3) # 3 linear tasks left
      expect(count("SELECT count(*) FROM pgmq.a_tasker_ns_linear_workflow")).to eq(archived - 2)
      # Nothing more is due.
      expect(TaskerCore.run_maintenance).to include("tasks" => 0, "archived" => 0)
    end
  end

  it "keeps a kind forever when its window is nil, and rejects bad settings" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir],
                retention: { completed: nil, interval: nil }) do
      done = completed_tasks(1).first.uuid
      age([done], 400)
      expect(TaskerCore.run_maintenance).to include("tasks" => 0)
      expect(rows_of(done)[0]).to eq(1)
    end
    [[{ forever: 1 }, /unknown keys forever/], [{ completed: -1 }, /completed must be a positive number/],
     [{ errored: "7d" }, /errored must be a positive/], [{ batch_size: 0 }, /batch_size must be an Integer from 1 to 10000/],
     [[], /must be a Hash/]].each do |setting, message|
      TaskerCore.reset_configuration!
      configure = lambda do
        TaskerCore.configure do |c|
          c.database_url = DatabaseSupport.url
          c.retention = setting
        end
      end
      expect(&configure).to raise_error(TaskerCore::Errors::ConfigurationError, message)
    end
  ensure
    TaskerCore.reset_configuration!
  end

  it "lets two processes purge at once: each row is deleted once, and the step cycle keeps running meanwhile" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], retention: { interval: nil }) do
      # 1,000 finished tasks to purge (created, then finished and aged by SQL: the purge only
      # reads status and completed_at).
      later = Time.now + 3600
      created = TaskerCore::Client.create_tasks(Array.new(1000) { { **linear, context: { "even_number" => 2 }, run_at: later } })
      psql("UPDATE tasker.tasks SET status = 'complete', completed_at = now() - interval '8 days' " \
           "WHERE task_uuid IN (#{created.map { |t| "'#{t.uuid}'" }.join(',')})")
      script = <<~'RUBY'
        require "tasker_core"
        TaskerCore.configure do |c|
          c.database_url = ENV.fetch("DATABASE_URL")
          c.retention = { batch_size: 25, interval: nil }
        end
        TaskerCore.start
        $stdout.puts JSON.generate(TaskerCore.run_maintenance)
        TaskerCore.stop
      RUBY
      env = { "DATABASE_URL" => DatabaseSupport.url }
      purges = Array.new(2) { Thread.new { Open3.capture3(env, RbConfig.ruby, "-I", lib_dir, "-e", script) } }
      # The hot path meanwhile: tasks created and run to completion by this process.
      live = completed_tasks(10)
      results = purges.map(&:value)
      results.each { |_, err, status| expect(status).to be_success, err }
      reports = results.map { |out, _, _| JSON.parse(out.lines.last) }
      expect(reports.sum { |r| r["tasks"] }).to eq(1000)
      expect(reports.sum { |r| r["steps"] }).to eq(4000)
      expect(count("SELECT count(*) FROM tasker.tasks WHERE completed_at < now() - interval '7 days'")).to eq(0)
      expect(live.map { |t| rows_of(t.uuid)[0] }).to all(eq(1))
      # Each purge statement gives up on a lock after 2 s rather than wait behind the step cycle.
      config = psql("SELECT string_agg(DISTINCT array_to_string(proconfig, ','), ';') FROM pg_proc " \
                    "WHERE proname IN ('purge_tasks', 'purge_archive')")
      expect(config).to eq("lock_timeout=2s")
    end
  end

  it "runs in worker processes by itself, one process holding the lease" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir],
                retention: { completed: 1, interval: 0.2 }) do
      done = completed_tasks(3).map(&:uuid)
      eventually(timeout: 15) { done.all? { |u| rows_of(u)[0].zero? } }
      expect(psql("SELECT holder FROM tasker.leases WHERE name = 'maintenance' AND expires_at > now()")).to match(/\A\h{32}\z/)
    end
    # A process that stops gives the lease back.
    expect(count("SELECT count(*) FROM tasker.leases WHERE name = 'maintenance'")).to eq(0)
  end

  it "runs from the command line with the windows it is given" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], retention: { interval: nil }) do
      a, b = completed_tasks(2).map(&:uuid)
      age([a], 3)
      age([b], 1)
    end
    out, status = Open3.capture2e({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, "maintenance", "run",
                                  "--completed", "2d", "--errored", "forever")
    expect(status).to be_success, out
    expect(out).to include("retention: completed 2d, errored forever, archive 7d")
    expect(out).to match(/deleted 1 tasks \(4 steps, \d+ transitions\), 0 archived messages/)
    out, status = Open3.capture2e({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, "maintenance", "run",
                                  "--completed", "soon")
    expect(status.exitstatus).to eq(1)
    expect(out).to include("--completed soon: give seconds, 30m, 12h, 7d or forever")
  end
end
