# frozen_string_literal: true

require "tmpdir"

# Issue 11 case 9: the engine's database role gets no connections (as when other clients hold
# every slot: PostgreSQL answers "too many connections", SQLSTATE 53300), its open connections
# are cut, and it stays that way for 12 s. The engine must make that visible — a bounded
# create_task error, health naming the pool, one log line per interval with a count — and lose
# nothing once connections come back.
RSpec.describe "connection starvation" do
  let(:template) do
    <<~YAML
      name: starved
      namespace: spec_starve
      version: "1.0.0"
      steps:
        - name: only
          handler: { callable: SpecHandlers::EchoParent }
    YAML
  end

  around do |example|
    @cluster = PrivateCluster.new(dbname: "tasker_starve", max_connections: example.metadata.fetch(:max_connections, 100)).boot
    TaskerCore.migrate!(database_url: @cluster.url)
    # A role of the engine's own (not a superuser), so that its connections can be refused.
    sql("CREATE ROLE tasker_app LOGIN; GRANT postgres TO tasker_app")
    example.run
  ensure
    @cluster&.destroy
  end

  def sql(query) = psql(query, url: @cluster.url)

  def app_url = @cluster.url.sub("postgres@", "tasker_app@")

  def create(i)
    TaskerCore::Client.create_task(namespace: "spec_starve", name: "starved", version: "1.0.0", context: { "i" => i })
  end

  it "refuses work within a bounded time, says so in health and in few log lines, and loses nothing" do
    Dir.mktmpdir("starve") do |dir|
      log = File.join(dir, "engine.log")
      with_template_dir("starved.yaml" => template) do |templates|
        with_engine(database_url: app_url, namespaces: ["spec_starve"], template_paths: [templates],
                    log_output: log, log_format: :json) do
          before = Array.new(5) { |i| create(i).uuid }
          sql("ALTER ROLE tasker_app CONNECTION LIMIT 0")
          sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'tasker_app'")
          starved_at = Process.clock_gettime(Process::CLOCK_MONOTONIC)

          # A caller gets a DatabaseError after a bounded wait (the pool's 10 s), never a hang.
          errors = Array.new(2) do
            started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
            error = begin
              create(99)
              nil
            rescue TaskerCore::Errors::DatabaseError => e
              e
            end
            [error, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started]
          end
          errors.each do |error, seconds|
            expect(error).to be_a(TaskerCore::Errors::DatabaseError)
            expect(seconds).to be < 15
          end

          health = TaskerCore.health
          expect(health["status"]).not_to eq("ok")
          expect(health.dig("database", "pool", "recent_failures")).to be > 0
          expect(health.dig("database", "pool", "last_failure")).to match(/connection|pool timed out/)

          sleep [12 - (Process.clock_gettime(Process::CLOCK_MONOTONIC) - starved_at), 0].max
          reports = File.readlines(log).map { |l| JSON.parse(l) }
                        .select { |r| r["message"].to_s.start_with?("database connections unavailable") }
          # At most one line per 10 s for every loop of the engine together, each with its count
          # of failures since the previous line (every failure counted, none twice).
          expect(reports.size).to be_between(1, 3)
          expect(reports.map { |r| r["failures"].to_i }).to all(be >= 1)
          expect(TaskerCore.health.dig("database", "pool", "recent_failures"))
            .to be >= reports.sum { |r| r["failures"].to_i }

          sql("ALTER ROLE tasker_app CONNECTION LIMIT -1")
          after = eventually(timeout: 30, interval: 0.5) do
            create(100).uuid
          rescue TaskerCore::Errors::DatabaseError
            nil
          end
          (before + [after]).each do |uuid|
            expect(TaskerCore::Client.wait_for(uuid, timeout: 60).status).to eq("complete")
          end
          expect(sql("SELECT count(*) FROM tasker.tasks WHERE status <> 'complete'")).to eq("0")
        end
      end
    end
  end

  # PostgreSQL itself full: other clients hold every connection slot a non-superuser may take
  # ("sorry, too many clients already"), the engine's connections cut meanwhile.
  it "waits while max_connections is reached, says so, and loses nothing once slots free", max_connections: 20 do
    sql("CREATE ROLE hog LOGIN")
    hog_url = @cluster.url.sub("postgres@", "hog@")
    hogs = []
    with_template_dir("starved.yaml" => template) do |templates|
      with_engine(database_url: app_url, namespaces: ["spec_starve"], template_paths: [templates]) do
        before = Array.new(5) { |i| create(i).uuid }
        # Keep the engine out while the hogs take every slot, then let it try again.
        sql("ALTER ROLE tasker_app CONNECTION LIMIT 0")
        sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'tasker_app'")
        hogs = Array.new(20) do
          Process.spawn("psql", hog_url, "-Xqc", "SELECT pg_sleep(300)", out: File::NULL, err: File::NULL)
        end
        # 20 slots, 3 reserved for superusers (this spec's own psql): 17 hogs get in.
        eventually(timeout: 15) { sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'hog'").to_i == 17 }
        sql("ALTER ROLE tasker_app CONNECTION LIMIT -1")
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        expect { create(99) }.to raise_error(TaskerCore::Errors::DatabaseError)
        expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 15
        expect(TaskerCore.health.dig("database", "pool", "last_failure"))
          .to match(/too many clients|remaining connection slots|pool timed out/)
        expect(TaskerCore.health["status"]).not_to eq("ok")

        # The hogs' backends go (a server does not notice its client leaving during pg_sleep).
        sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'hog'")
        hogs.each { |pid| Process.wait(pid) }
        hogs = []
        after = eventually(timeout: 30, interval: 0.5) do
          create(100).uuid
        rescue TaskerCore::Errors::DatabaseError
          nil
        end
        (before + [after]).each { |uuid| expect(TaskerCore::Client.wait_for(uuid, timeout: 60).status).to eq("complete") }
        expect(sql("SELECT count(*) FROM tasker.tasks WHERE status <> 'complete'")).to eq("0")
      end
    end
  ensure
    hogs.each do |pid|
      Process.kill(:KILL, pid)
      Process.wait(pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end
  end
end
