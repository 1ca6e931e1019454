# frozen_string_literal: true

# `rake bench:web`: the dashboard at scale. Seeds TASKS tasks of a 5-step chain (STEPS_PER_TASK
# steps each, their edges, one history row per step and per task, spread over 30 days) with
# set-based SQL, then renders every page RENDERS times through the Rack app in this process
# (server-side time: TaskerCore::Web.call until the body is built) and prints p50 / p95 and the
# statements each page runs (pg_stat_statements calls per render, the heartbeat's excluded; NaN
# when the extension is not preloaded).
#
#   DATABASE_URL=... ruby benches/ruby/web.rb        env: TASKS=1000000 RENDERS=50

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require "pg"
require "tmpdir"
require "stringio"

database_url = ENV.fetch("DATABASE_URL") { abort "web.rb: set DATABASE_URL (rake bench:web starts a private PostgreSQL)" }
tasks = Integer(ENV.fetch("TASKS", "1000000"))
renders = Integer(ENV.fetch("RENDERS", "50"))
steps_per_task = 5

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def percentile(sorted, p) = sorted[[(p / 100.0 * sorted.size).ceil, 1].max - 1]

# Statements the engine's connections ran (pg_stat_statements; this script's own excluded).
def statements(db)
  db.exec("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements " \
          "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) " \
          "AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%INSERT INTO tasker.processes%'").getvalue(0, 0).to_i
end

def say(line)
  puts line
  $stdout.flush
end

chain = (1..5).map do |i|
  "  - name: step_#{i}\n    handler: { callable: Bench::Noop }\n" + (i > 1 ? "    dependencies: [step_#{i - 1}]\n" : "")
end
template = "name: checkout\nnamespace: bench_web\nversion: \"1.0.0\"\nsteps:\n#{chain.join}"

TaskerCore.migrate!(database_url: database_url)
dir = Dir.mktmpdir("bench-web")
File.write(File.join(dir, "checkout.yaml"), template)
TaskerCore.configure do |c|
  c.database_url = database_url
  c.namespaces = []
  c.template_paths = [dir]
  c.log_level = "warn"
end
TaskerCore.start
db = PG.connect(database_url)
named = db.exec("SELECT named_task_id FROM tasker.named_tasks WHERE namespace = 'bench_web'").getvalue(0, 0).to_i

have = db.exec("SELECT count(*) FROM tasker.tasks WHERE namespace = 'bench_web'").getvalue(0, 0).to_i
if have < tasks
  started = now
  say "# seeding #{tasks} tasks, #{tasks * steps_per_task} steps (set-based SQL)..."
  db.exec(<<~SQL)
    INSERT INTO tasker.tasks (task_uuid, named_task_id, namespace, status, context, correlation_id, idempotency_key,
                              priority, created_at, updated_at, completed_at)
    SELECT gen_random_uuid(), #{named}, 'bench_web',
           CASE WHEN i % 50 = 0 THEN 'error' WHEN i % 97 = 0 THEN 'in_progress' ELSE 'complete' END,
           jsonb_build_object('order_id', i, 'customer', jsonb_build_object('id', 'c-' || (i % 5000))),
           gen_random_uuid(), 'order-' || i, 0, t, t, CASE WHEN i % 97 = 0 THEN NULL ELSE t + interval '2 seconds' END
    FROM generate_series(#{have + 1}, #{tasks}) AS i,
         LATERAL (SELECT now() - (#{tasks} - i) * (interval '30 days' / #{tasks})) AS at(t)
  SQL
  db.exec(<<~SQL)
    INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, position, handler_class, state, attempts,
                                       max_attempts, retryable, backoff_base_ms, max_backoff_ms, timeout_seconds,
                                       pending_parents, ancestors, results, last_error, created_at, updated_at)
    SELECT gen_random_uuid(), t.task_uuid, 'step_' || k, k - 1, 'Bench::Noop',
           CASE WHEN t.status = 'complete' OR k < 3 THEN 'complete'
                WHEN t.status = 'error' AND k = 3 THEN 'error'
                WHEN t.status = 'in_progress' AND k = 3 THEN 'in_progress' ELSE 'pending' END,
           1, 3, true, 100, 1000, 30, CASE WHEN k = 1 THEN 0 ELSE 1 END,
           (ARRAY['{}', '{step_1}', '{step_1,step_2}', '{step_1,step_2,step_3}',
                  '{step_1,step_2,step_3,step_4}'])[k]::text[],
           CASE WHEN t.status = 'complete' OR k < 3 THEN jsonb_build_object('ok', true, 'k', k) END,
           CASE WHEN t.status = 'error' AND k = 3 THEN
             '{"error_class": "Bench::Declined", "message": "declined", "backtrace": [], "retryable": false, "attempt": 1}'::jsonb END,
           t.created_at, t.created_at
    FROM tasker.tasks t, generate_series(1, #{steps_per_task}) AS k
    WHERE t.namespace = 'bench_web' AND NOT EXISTS (SELECT 1 FROM tasker.workflow_steps s WHERE s.task_uuid = t.task_uuid)
  SQL
  db.exec(<<~SQL)
    INSERT INTO tasker.workflow_step_edges (from_step_uuid, to_step_uuid)
    SELECT p.step_uuid, c.step_uuid FROM tasker.workflow_steps c
    JOIN tasker.workflow_steps p ON p.task_uuid = c.task_uuid AND p.position = c.position - 1
    ON CONFLICT DO NOTHING
  SQL
  db.exec(<<~SQL)
    INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, metadata, created_at)
    SELECT step_uuid, task_uuid, 'in_progress', state, '{}', updated_at + position * interval '300 milliseconds'
    FROM tasker.workflow_steps WHERE state IN ('complete', 'error')
  SQL
  db.exec(<<~SQL)
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, metadata, created_at)
    SELECT task_uuid, NULL, 'pending', '{}', created_at FROM tasker.tasks WHERE namespace = 'bench_web'
  SQL
  # What autovacuum does to a table that grew this way: statistics, the visibility map, and the
  # block ranges of the history's BRIN index summarized.
  db.exec("VACUUM ANALYZE")
  say format("# seeded in %.1f s", now - started)
end
begin
  db.exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
  statements(db)
  counting = true
rescue PG::Error
  counting = false # not preloaded (DATABASE_URL given): no query counts
  db.exec("ROLLBACK") if db.transaction_status != PG::PQTRANS_IDLE
end
counts = db.exec(<<~SQL).first
  SELECT (SELECT count(*) FROM tasker.tasks) AS tasks, (SELECT count(*) FROM tasker.workflow_steps) AS steps,
         (SELECT count(*) FROM tasker.workflow_step_transitions) AS step_history
SQL

TaskerCore::Web.authorize { |_request| :admin }
sample = db.exec("SELECT task_uuid FROM tasker.tasks WHERE namespace = 'bench_web' AND status = 'error' " \
                 "ORDER BY created_at DESC LIMIT 1 OFFSET #{tasks / 200}").getvalue(0, 0)
middle = db.exec("SELECT order_id FROM (SELECT (context->>'order_id') AS order_id FROM tasker.tasks " \
                 "WHERE namespace = 'bench_web' ORDER BY created_at LIMIT 1 OFFSET #{tasks / 2}) s").getvalue(0, 0)
first_page = TaskerCore.engine.list_tasks({ "namespace" => "bench_web" }, nil, 50)
pages = {
  "overview" => "/",
  "tasks" => "/tasks",
  "tasks_page2" => "/tasks?cursor=#{first_page['next']}",
  "tasks_status" => "/tasks?status=error",
  "tasks_template" => "/tasks?namespace=bench_web&name=checkout&version=1.0.0",
  "tasks_context" => "/tasks?context.order_id=#{middle}",
  "tasks_idempotency_key" => "/tasks?idempotency_key=order-#{middle}",
  "tasks_created_day" => "/tasks?created_from=#{(Time.now.utc - (15 * 86_400)).iso8601}&" \
                         "created_to=#{(Time.now.utc - (14 * 86_400)).iso8601}",
  "task" => "/tasks/#{sample}",
  "queues" => "/queues",
  "breakers" => "/breakers",
  "processes" => "/processes",
  "dead" => "/dead"
}

def env_for(target)
  path, query = target.split("?", 2)
  { "REQUEST_METHOD" => "GET", "PATH_INFO" => path, "QUERY_STRING" => query.to_s, "SCRIPT_NAME" => "",
    "SERVER_NAME" => "localhost", "SERVER_PORT" => "80", "rack.input" => StringIO.new, "HTTP_HOST" => "localhost" }
end

say "web.meta.tasks=#{counts['tasks']}"
say "web.meta.steps=#{counts['steps']}"
say "web.meta.step_history=#{counts['step_history']}"
say "web.meta.renders=#{renders}"
say "web.meta.postgresql=#{db.exec('SHOW server_version').getvalue(0, 0)}"
say format("%-22s %-58s %8s %8s %8s %8s", "page", "path", "p50 ms", "p95 ms", "max ms", "queries")
pages.each do |key, target|
  status, = TaskerCore::Web.call(env_for(target)) # warm: plans, views
  abort "web.rb: #{target} answered #{status}" unless status == 200

  before = counting ? statements(db) : 0
  times = Array.new(renders) do
    t = now
    _, _, body = TaskerCore::Web.call(env_for(target))
    body.sum(&:bytesize)
    (now - t) * 1000
  end
  queries = counting ? ((statements(db) - before) / renders.to_f).round(1) : Float::NAN
  sorted = times.sort
  say format("%-22s %-58s %8.1f %8.1f %8.1f %8.1f", key, target[0, 58], percentile(sorted, 50), percentile(sorted, 95),
             sorted.last, queries)
end
TaskerCore.stop
