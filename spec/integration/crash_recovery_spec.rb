# frozen_string_literal: true

require "tmpdir"

RSpec.describe "crash recovery and scale-out with real processes" do
  def worker_code(namespaces, templates, concurrency: 2, poll_interval: 0.1)
    <<~RUBY
      TaskerCore.configure do |c|
        c.namespaces = #{namespaces.inspect}
        c.template_paths = [#{templates.dump}]
        c.concurrency = #{concurrency}
        c.claim_grace = 1
        c.poll_interval = #{poll_interval}
      end
      stop = Queue.new
      trap("TERM") { stop << :term }
      TaskerCore.start
      puts "READY"
      stop.pop
      TaskerCore.stop(timeout: 10)
      puts "STOPPED"
    RUBY
  end

  # Creates a task of `template`, lets a worker start its crash_step and kills it with SIGKILL,
  # then lets a second worker finish the task. Yields the finished task's crash_step and the
  # names of the steps this task completed (from the handlers' log), after checking what both
  # cases share: two attempts, the second by the survivor, reclaimed after the claim expired.
  def kill_mid_step_and_recover(template, doomed_poll_interval: 0.1)
    Dir.mktmpdir do |dir|
      log = File.join(dir, "completions")
      env = { "TASKER_SPEC_COMPLETIONS" => log }
      with_engine(template_paths: [fixture_templates]) do
        task = TaskerCore::Client.create_task(namespace: "spec_crash", name: template, version: "1.0.0", context: {})
        doomed = spawn_ruby(worker_code(["spec_crash"], fixture_templates, poll_interval: doomed_poll_interval),
                            env: env)
        eventually(timeout: 20) { doomed.read.include?("STARTED #{task.uuid}") }
        Process.kill(:KILL, doomed.pid)
        expect(wait_child(doomed).termsig).to eq(9)

        survivor = spawn_ruby(worker_code(["spec_crash"], fixture_templates), env: env)
        done = TaskerCore::Client.wait_for(task.uuid, timeout: 30)
        expect(done.status).to eq("complete"), survivor.read

        crash = done.step("crash_step")
        expect(crash.attempts).to eq(2)
        expect(crash.result).to include("attempt" => 2, "pid" => survivor.pid)
        states = crash.transitions.map { |t| [t.from_state, t.to_state] }
        expect(states).to eq([[nil, "pending"], %w[pending enqueued], %w[enqueued in_progress],
                              %w[in_progress in_progress], %w[in_progress complete]])
        expect(crash.transitions[3].metadata).to include("reclaimed" => true, "attempt" => 2)
        # Completions of this task only: the workers may also finish work other specs left.
        lines = File.readlines(log, chomp: true).select { |l| l.start_with?(task.uuid) }
        yield crash, lines.map { |l| l.split("/")[1] }.sort
      end
    end
  end

  it "redelivers the step of a worker killed with SIGKILL mid-step; it completes once" do
    kill_mid_step_and_recover("crash_recovery") do |_crash, completed|
      expect(completed).to eq(%w[after_crash crash_step])
    end
  end

  it "redelivers a step claimed in its parent's apply (fused) when its worker is killed; it completes once" do
    # The doomed worker's first read takes before_crash; a slow poll keeps its poller from
    # holding the free slots while before_crash's outcome is applied, so crash_step is claimed
    # in that apply.
    kill_mid_step_and_recover("crash_after_fused_claim", doomed_poll_interval: 5) do |crash, completed|
      expect(crash.transitions[2].metadata).to include("fused" => true, "attempt" => 1)
      expect(completed).to eq(%w[before_crash crash_step])
    end
  end

  it "completes 500 diamond tasks across two worker processes, every step exactly once" do
    Dir.mktmpdir do |dir|
      log = File.join(dir, "completions")
      logging = <<~RUBY
        TaskerExamples::SquareOfParents.prepend(Module.new do
          def call(task, sequence, step)
            super.tap { SpecHandlers::CompletionLog.record(task, step) }
          end
        end)
      RUBY
      code = logging + worker_code(["diamond_workflow"], examples_dir, concurrency: 4)
      workers = Array.new(2) { spawn_ruby(code, env: { "TASKER_SPEC_COMPLETIONS" => log }) }
      with_engine(template_paths: [examples_dir], pool_size: 10) do
        workers.each { |w| eventually(timeout: 30) { w.read.include?("READY") } }
        tasks = Array.new(500) do |i|
          TaskerCore::Client.create_task(namespace: "diamond_workflow", name: "parallel_computation",
                                         version: "1.0.0", context: { "even_number" => 2 * ((i % 5) + 1) })
        end
        finished = tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 120) }
        @uuids = tasks.map(&:uuid)
        expect(finished.map(&:status).tally).to eq("complete" => 500)
        finished.each_with_index do |t, i|
          expect(t.step("diamond_end").result).to eq((2 * ((i % 5) + 1))**16)
        end
      end
      workers.each do |w|
        Process.kill(:TERM, w.pid)
        expect(wait_child(w, timeout: 30).exitstatus).to eq(0), w.read
      end
      lines = File.readlines(log, chomp: true).select { |l| @uuids.include?(l.split("/").first) }
      per_step = lines.map { |l| l.split("/")[0, 2].join("/") }.tally
      expect(per_step.size).to eq(2000)
      expect(per_step.values.uniq).to eq([1])
      by_pid = lines.map { |l| l.split("/")[3] }.tally
      expect(by_pid.keys.size).to eq(2) # both processes did real work
    end
  end
end
