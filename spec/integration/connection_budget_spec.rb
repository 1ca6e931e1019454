# frozen_string_literal: true

# A process's connections are bounded by its pool settings, not by its handler threads: a
# handler thread holds no connection (its outcome goes to the applier), so 64 threads run on a
# pool of 8.
RSpec.describe "connection budget" do
  include_context "with a clean tasker database"

  let(:template) do
    <<~YAML
      name: budget
      namespace: spec_budget
      version: "1.0.0"
      steps:
        - name: work
          handler: { callable: SpecHandlers::Timed }
    YAML
  end

  def connections
    # This process's engine names its connections "tasker_core <pid>".
    psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tasker_core #{Process.pid}'").to_i
  end

  it "runs 64 handler threads on a pool of 8, never opening more than pool + claim pool + LISTEN" do
    with_template_dir("budget.yaml" => template) do |dir|
      with_engine(namespaces: ["spec_budget"], template_paths: [dir], concurrency: 64, pool_size: 8) do
        expect(TaskerCore.worker_threads).to eq(64)
        tasks = TaskerCore::Client.create_tasks(Array.new(640) do
          { namespace: "spec_budget", name: "budget", version: "1.0.0", context: { "sleep" => 0.2 } }
        end)
        most = 0
        sampler = Thread.new do
          loop do
            most = [most, connections].max
            sleep 0.05
          end
        end
        done = tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 120) }
        sampler.kill
        expect(done.map(&:status).uniq).to eq(["complete"])
        runs = done.map { |t| t.steps.first.result }
        overlap = runs.flat_map { |r| [[r["started"], 1], [r["finished"], -1]] }.sort
                      .reduce([0, 0]) { |(now, peak), (_, d)| [now + d, [peak, now + d].max] }.last
        # Far more handlers at once than connections...
        expect(overlap).to be > 32
        # ...on at most 8 (main pool) + 2 (claim pool: one namespace + 1) + 1 (LISTEN).
        expect(most).to be_between(1, 11)
        expect(TaskerCore.health.dig("database", "pool", "max")).to eq(8)
      end
    end
  end
end
