# frozen_string_literal: true

require_relative "../fixtures/faults/breaker_handlers"

# Issue 5 fault test 2: one namespace's queue fails (its table locked, then dropped) while two
# other namespaces run 200 tasks. Those finish within a stated deadline; the failing namespace's
# breaker opens (recorded) and refuses new tasks at once; after the repair its tasks drain.
RSpec.describe "one namespace's queue locked, then dropped, beside two healthy namespaces" do
  def template(namespace, first: "Quick")
    <<~YAML
      name: pair
      namespace: #{namespace}
      version: "1.0.0"
      steps:
        - name: first
          handler: { callable: BreakerFaultHandlers::#{first} }
          timeout_seconds: 10
        - name: second
          handler: { callable: BreakerFaultHandlers::Quick }
          dependencies: [first]
    YAML
  end

  # 100 two-step tasks in each healthy namespace must finish this soon after creation starts
  # (about 3 s on an idle 2-core machine).
  let(:healthy_deadline) { 30 }

  def create(namespace, n) = TaskerCore::Client.create_task(namespace: namespace, name: "pair", version: "1.0.0",
                                                            context: { "n" => n })

  def bad_breaker = TaskerCore.health.dig("queue_breakers", "tasker_ns_spec_qf_bad")

  def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  it "keeps the healthy namespaces on time, opens the failing queue's breaker, and drains it after repair" do
    files = { "a.yaml" => template("spec_qf_a"), "b.yaml" => template("spec_qf_b"),
              "bad.yaml" => template("spec_qf_bad", first: "Slow") }
    with_template_dir(files) do |dir|
      with_engine(namespaces: %w[spec_qf_a spec_qf_b spec_qf_bad], template_paths: [dir], concurrency: 4,
                  queue_lock_timeout: 0.2, requeue_after: 1,
                  circuit_breakers: { pgmq: { failure_threshold: 2, timeout: 0.5, success_threshold: 1 } }) do
        bad = Array.new(20) { |i| create("spec_qf_bad", i).uuid }

        in_bad = "task_uuid IN (#{bad.map { |u| "'#{u}'" }.join(",")})"
        eventually(timeout: 10) do
          psql("SELECT count(*) FROM tasker.workflow_steps WHERE state = 'in_progress' AND #{in_bad}").to_i.positive?
        end

        # 1. The table locked for 5 s while first steps (1.5 s each) are running.
        locker = Process.spawn("psql", DatabaseSupport.url, "-Xq", "-c",
                               "BEGIN; LOCK TABLE pgmq.q_tasker_ns_spec_qf_bad IN ACCESS EXCLUSIVE MODE; " \
                               "SELECT pg_sleep(5); COMMIT;", out: File::NULL, err: File::NULL)
        begin
          eventually(timeout: 3) do
            psql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation " \
                 "WHERE c.relname = 'q_tasker_ns_spec_qf_bad' AND l.mode = 'AccessExclusiveLock' AND l.granted") == "1"
          end
          locked_since = psql("SELECT clock_timestamp()")
          # Outcomes still commit while their queue is locked: a first step completes and its
          # child waits, enqueued, for a message the locked queue cannot take yet.
          eventually(timeout: 3) do
            psql("SELECT count(*) FROM tasker.workflow_step_transitions tr JOIN tasker.workflow_steps s " \
                 "USING (step_uuid) WHERE s.name = 'second' AND tr.to_state = 'enqueued' " \
                 "AND tr.created_at > '#{locked_since}' AND s.#{in_bad}").to_i.positive?
          end
          expect(Process.waitpid(locker, Process::WNOHANG)).to be_nil # still locked meanwhile
          eventually(timeout: 5) { bad_breaker&.fetch("transitions")&.include?("closed->open (failure threshold reached)") }
          started = monotonic
          healthy = Array.new(100) { |i| [create("spec_qf_a", i).uuid, create("spec_qf_b", i).uuid] }.flatten
          healthy.each do |uuid|
            left = [healthy_deadline - (monotonic - started), 0.1].max
            expect(TaskerCore::Client.wait_for(uuid, timeout: left).status).to eq("complete")
          end
          expect(monotonic - started).to be < healthy_deadline
        ensure
          Process.wait(locker)
        end

        # 2. The table dropped: the breaker opens again and new tasks are refused at once.
        eventually(timeout: 10) { bad_breaker["state"] == "closed" }
        psql("SELECT pgmq.drop_queue('tasker_ns_spec_qf_bad')")
        opened = bad_breaker["transitions"].count("closed->open (failure threshold reached)")
        eventually(timeout: 10) do
          bad_breaker["transitions"].count("closed->open (failure threshold reached)") > opened
        end
        expect { eventually(timeout: 5) { bad_breaker["state"] == "open" && create("spec_qf_bad", 99) } }
          .to raise_error(TaskerCore::Errors::CircuitOpenError)
        # The healthy namespaces still run.
        expect(TaskerCore::Client.wait_for(create("spec_qf_a", 1000).uuid, timeout: 15).status).to eq("complete")

        # 3. Repaired: the breaker closes, lost messages are sent again, every task completes.
        psql("SELECT pgmq.create('tasker_ns_spec_qf_bad')")
        bad.each { |uuid| expect(TaskerCore::Client.wait_for(uuid, timeout: 60).status).to eq("complete") }
        expect(bad_breaker["transitions"]).to include("half_open->closed (trial calls succeeded)")
        steps = psql("SELECT count(*) FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid) " \
                     "WHERE t.task_uuid IN (#{bad.map { |u| "'#{u}'" }.join(",")}) AND s.state = 'complete'")
        expect(steps).to eq("40")
      end
    end
  end
end
