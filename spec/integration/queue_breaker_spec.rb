# frozen_string_literal: true

RSpec.describe "a namespace whose queue fails" do
  let(:template) do
    <<~YAML
      name: fragile
      namespace: spec_qfault
      version: "1.0.0"
      steps:
        - name: only
          handler: { callable: SpecHandlers::CompletionLogger }
    YAML
  end

  def breaker_state
    TaskerCore.health.dig("queue_breakers", "tasker_ns_spec_qfault")
  end

  def create_fragile
    TaskerCore::Client.create_task(namespace: "spec_qfault", name: "fragile", version: "1.0.0", context: {})
  end

  it "opens its breaker, refuses new tasks at once, leaves other namespaces running, and heals" do
    with_template_dir("fragile.yaml" => template) do |dir|
      with_engine(namespaces: %w[spec_qfault linear_workflow], template_paths: [dir, linear_template_dir],
                  circuit_breakers: { pgmq: { failure_threshold: 2, timeout: 0.3, success_threshold: 1 } }) do
        expect(TaskerCore::Client.wait_for(create_fragile.uuid, timeout: 15).status).to eq("complete")

        psql("SELECT pgmq.drop_queue('tasker_ns_spec_qfault')")
        eventually(timeout: 15) { breaker_state&.dig("transitions")&.include?("closed->open (failure threshold reached)") }
        expect { eventually(timeout: 5) { breaker_state["state"] == "open" && create_fragile } }
          .to raise_error(TaskerCore::Errors::CircuitOpenError) { |e| expect(e.retry_after).to be <= 0.3 }
        expect(TaskerCore.health["status"]).to eq("degraded")

        # The other namespace keeps processing meanwhile.
        other = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                               version: "1.0.0", context: { "even_number" => 2 })
        expect(TaskerCore::Client.wait_for(other.uuid, timeout: 15).status).to eq("complete")

        psql("SELECT pgmq.create('tasker_ns_spec_qfault')")
        eventually(timeout: 15) { breaker_state["state"] == "closed" }
        expect(breaker_state["transitions"]).to include("open->half_open (open timeout elapsed)",
                                                        "half_open->closed (trial calls succeeded)")
        expect(TaskerCore::Client.wait_for(create_fragile.uuid, timeout: 15).status).to eq("complete")
      end
    end
  end
end

RSpec.describe "a namespace whose queue table is locked" do
  it "fails fast instead of waiting, opens that queue's breaker, and recovers when the lock goes" do
    template = <<~YAML
      name: fragile
      namespace: spec_qlock
      version: "1.0.0"
      steps:
        - name: only
          handler: { callable: SpecHandlers::CompletionLogger }
    YAML
    breaker = -> { TaskerCore.health.dig("queue_breakers", "tasker_ns_spec_qlock") }
    with_template_dir("locked.yaml" => template) do |dir|
      with_engine(namespaces: %w[spec_qlock linear_workflow], template_paths: [dir, linear_template_dir],
                  queue_lock_timeout: 0.1,
                  circuit_breakers: { pgmq: { failure_threshold: 2, timeout: 0.3, success_threshold: 1 } }) do
        locker = Process.spawn("psql", DatabaseSupport.url, "-Xq", "-c",
                               "BEGIN; LOCK TABLE pgmq.q_tasker_ns_spec_qlock IN ACCESS EXCLUSIVE MODE; " \
                               "SELECT pg_sleep(3); COMMIT;", out: File::NULL, err: File::NULL)
        begin
          eventually(timeout: 10) do
            breaker.call&.fetch("transitions")&.include?("closed->open (failure threshold reached)")
          end
          started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
          other = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                                 version: "1.0.0", context: { "even_number" => 2 })
          expect(TaskerCore::Client.wait_for(other.uuid, timeout: 10).status).to eq("complete")
          expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 5
        ensure
          Process.wait(locker)
        end
        eventually(timeout: 15) { breaker.call["state"] == "closed" }
        task = TaskerCore::Client.create_task(namespace: "spec_qlock", name: "fragile", version: "1.0.0", context: {})
        expect(TaskerCore::Client.wait_for(task.uuid, timeout: 15).status).to eq("complete")
      end
    end
  end
end

RSpec.describe "steps whose queue messages were lost" do
  it "are sent again after requeue_after and complete" do
    template = <<~YAML
      name: fragile
      namespace: spec_qlost
      version: "1.0.0"
      steps:
        - name: only
          handler: { callable: SpecHandlers::CompletionLogger }
    YAML
    with_template_dir("lost.yaml" => template) do |dir|
      uuid = nil
      with_engine(template_paths: [dir]) do # a client process: the step waits in the queue
        uuid = TaskerCore::Client.create_task(namespace: "spec_qlost", name: "fragile", version: "1.0.0",
                                              context: {}).uuid
      end
      psql("SELECT pgmq.drop_queue('tasker_ns_spec_qlost')")
      psql("SELECT pgmq.create('tasker_ns_spec_qlost')")
      with_engine(namespaces: ["spec_qlost"], template_paths: [dir], requeue_after: 0.5) do
        done = TaskerCore::Client.wait_for(uuid, timeout: 15)
        expect(done.status).to eq("complete")
        expect(done.step("only").attempts).to eq(1)
      end
    end
  end
end
