# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"

# The engine through PgBouncer in transaction mode (bin/test's pgbouncer stage: DATABASE_URL is
# the pooler's, DIRECT_DATABASE_URL the cluster's, TASKER_TRANSACTION_POOLING=1). Every other
# spec of that stage runs unchanged through the pooler; these check what only a pooler shows.
RSpec.describe "through PgBouncer in transaction mode" do
  include_context "with a clean tasker database"

  let(:lib_dir) { File.expand_path("../../lib", __dir__) }
  let(:linear) { { namespace: "linear_workflow", name: "mathematical_sequence", version: "1.0.0" } }
  let(:direct_url) { ENV.fetch("DIRECT_DATABASE_URL") }

  it "goes through the pooler: the server sees PgBouncer's connections, not the engine's" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], concurrency: 8) do
      done = Array.new(40) { |i| TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 * (i + 1) }) }
                  .map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 30) }
      expect(done.map(&:status).uniq).to eq(["complete"])
      expect(done.last.steps.last.result).to eq(80**16)
      # The pooler opens at most default_pool_size (20) server connections for the database,
      # whatever the engine's pool (8 + 4) and queue pool hold; the engine's LISTEN is its one
      # direct connection (application_name differs: PgBouncer's are unnamed).
      servers = psql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
                     "AND backend_type = 'client backend'", url: direct_url).to_i
      expect(servers).to be <= 20 + 2
      expect(TaskerCore.health["status"]).to eq("ok")
    end
  end

  it "refuses to migrate through the pooler with an error that says to use a direct connection" do
    expect { TaskerCore.migrate!(database_url: DatabaseSupport.url) }
      .to raise_error(TaskerCore::Errors::MigrationError, /transaction mode.*direct connection/m)
    expect { TaskerCore.migrate!(database_url: direct_url) }.not_to raise_error
  end

  it "without a listen_database_url, finds another process's work by polling" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], listen_database_url: nil) do
      script = <<~'RUBY'
        require "tasker_core"
        TaskerCore.configure do |c|
          c.database_url = ENV.fetch("DATABASE_URL")
          c.listen_database_url = nil
          c.mode = :client
        end
        TaskerCore.start
        task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                              version: "1.0.0", context: { "even_number" => 4 })
        puts JSON.generate("uuid" => task.uuid)
        TaskerCore.stop
      RUBY
      out, err, status = Open3.capture3({ "TASKER_LISTEN_DATABASE_URL" => nil }, RbConfig.ruby, "-I", lib_dir, "-e", script)
      expect(status).to be_success, err
      uuid = JSON.parse(out.lines.last).fetch("uuid")
      done = TaskerCore::Client.wait_for(uuid, timeout: 30)
      expect(done.status).to eq("complete")
      expect(done.steps.last.result).to eq(4**16)
    end
  end

  it "holds no named prepared statement on any server connection" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir]) do
      task = TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 })
      expect(TaskerCore::Client.wait_for(task.uuid, timeout: 30).status).to eq("complete")
      # Asked through the pooler many times, so the question reaches many server connections.
      named = Array.new(30) { psql("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'sqlx%'").to_i }
      expect(named.max).to eq(0)
    end
  end
end
