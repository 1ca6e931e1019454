# frozen_string_literal: true

require_relative "../fixtures/faults/breaker_handlers"

# Issue 5 fault test 1: PostgreSQL stopped for 30 s in the middle of 200 running diamond tasks,
# then started. The process survives, every task completes, no step's result is applied twice,
# and the outage is the database's, not a queue's: the queue breaker never opens for it (a
# refused or lost connection is no verdict on a queue; health says "down" meanwhile).
RSpec.describe "PostgreSQL stopped for 30 seconds under load" do
  let(:template) do
    <<~YAML
      name: outage_diamond
      namespace: spec_outage
      version: "1.0.0"
      steps:
        - name: start
          handler: { callable: BreakerFaultHandlers::Counted }
        - name: left
          handler: { callable: BreakerFaultHandlers::Counted }
          dependencies: [start]
        - name: right
          handler: { callable: BreakerFaultHandlers::Counted }
          dependencies: [start]
        - name: join
          handler: { callable: BreakerFaultHandlers::Counted }
          dependencies: [left, right]
    YAML
  end
  let(:tasks) { 200 }
  let(:outage_seconds) { 30 }

  around do |example|
    @cluster = PrivateCluster.new.boot
    TaskerCore.migrate!(database_url: @cluster.url)
    example.run
  ensure
    @cluster&.destroy
  end

  def sql(query) = psql(query, url: @cluster.url)

  def finished = sql("SELECT count(*) FROM tasker.tasks WHERE status IN ('complete', 'error')").to_i

  it "survives, completes every task once, and does not hold the outage against the queue's breaker" do
    BreakerFaultHandlers::Counted.reset!
    with_template_dir("outage.yaml" => template) do |dir|
      with_engine(database_url: @cluster.url, namespaces: ["spec_outage"], template_paths: [dir], concurrency: 4,
                  poll_interval: 0.2,
                  circuit_breakers: { pgmq: { failure_threshold: 3, timeout: 2, success_threshold: 1 } }) do
        uuids = Array.new(tasks) do |i|
          TaskerCore::Client.create_task(namespace: "spec_outage", name: "outage_diamond", version: "1.0.0",
                                         context: { "n" => i }).uuid
        end
        # In the middle: some tasks done, most still to run.
        eventually(timeout: 60) { finished >= 20 }
        expect(finished).to be < tasks

        @cluster.stop
        eventually(timeout: 10) { TaskerCore.health["status"] == "down" }
        sleep outage_seconds
        @cluster.start

        # Steps whose claim was cut off come back after the read visibility timeout (30 s).
        eventually(timeout: 180, interval: 0.5) { finished == tasks }
        expect(TaskerCore.running?).to be(true)
        statuses = sql("SELECT status, count(*) FROM tasker.tasks GROUP BY status")
        expect(statuses).to eq("complete|#{tasks}")

        # Each step's result was applied exactly once (one transition into `complete`) ...
        applied = sql("SELECT count(*), count(DISTINCT step_uuid) FROM tasker.workflow_step_transitions " \
                      "WHERE to_state = 'complete'")
        expect(applied).to eq("#{tasks * 4}|#{tasks * 4}")
        # ... and each join ran only after both branches, with no step left behind.
        expect(sql("SELECT count(*) FROM tasker.workflow_steps WHERE state <> 'complete'")).to eq("0")
        runs = BreakerFaultHandlers::Counted.runs
        expect(runs.keys.map { |task, step, _| [task, step] }.uniq.size).to eq(tasks * 4)

        transitions = TaskerCore.health.dig("queue_breakers", "tasker_ns_spec_outage", "transitions")
        expect(transitions).to eq([])
        # Healthy again: the database reachable, the queue's breaker closed.
        eventually(timeout: 10) do
          health = TaskerCore.health
          health.dig("database", "reachable") && health.dig("queue_breakers", "tasker_ns_spec_outage", "state") == "closed"
        end
        # Every task created before the outage is among the completed ones.
        created = sql("SELECT count(*) FROM tasker.tasks WHERE status = 'complete' " \
                      "AND task_uuid = ANY ('{#{uuids.join(',')}}'::uuid[])")
        expect(created).to eq(tasks.to_s)
      end
    end
  end
end
