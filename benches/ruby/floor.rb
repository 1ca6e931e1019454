# frozen_string_literal: true

# `rake bench:floor`, Ruby handlers: (c) the 4-step chain create → last handler done and
# create → wait_for returns; (d) a backlog of no-op 1-step tasks drained by one process; (e) the
# same tasks created while running by producer threads (create_task, and create_tasks in
# batches when the client has it); (g) the process's RSS over a long run of no-op steps (created
# in batches while running, the backlog held under 5,000). Prints `floor.<section>.<name>=<value>` lines (the Rust
# half, benches/src/bin/floor.rs, prints the same form; benches/ruby/floor_report.rb reads both).
#
#   DATABASE_URL=... ruby benches/ruby/floor.rb
#   env: CHAINS=1000 WARMUP=50 DRAIN_TASKS=20000 PRODUCE_TASKS=DRAIN_TASKS PRODUCERS=4
#        BATCH=100 CONCURRENCY=10 POOL_SIZE=16 RSS_STEPS=300000 (0: skip (g))

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require "pg"
require_relative "floor_handlers"

ROOT = File.expand_path("../..", __dir__)
database_url = ENV.fetch("DATABASE_URL") { abort "floor.rb: set DATABASE_URL (rake bench:floor starts a private PostgreSQL)" }
chains = Integer(ENV.fetch("CHAINS", "1000"))
warmup = Integer(ENV.fetch("WARMUP", "50"))
drain_tasks = Integer(ENV.fetch("DRAIN_TASKS", "20000"))
produce_tasks = Integer(ENV.fetch("PRODUCE_TASKS", drain_tasks.to_s))
producers = Integer(ENV.fetch("PRODUCERS", "4"))
batch = Integer(ENV.fetch("BATCH", "100"))
concurrency = Integer(ENV.fetch("CONCURRENCY", "10"))
pool_size = Integer(ENV.fetch("POOL_SIZE", "16"))
rss_steps = Integer(ENV.fetch("RSS_STEPS", "300000"))

Floor = TaskerCore::Bench::Floor

def out(key, value)
  value = format("%.3f", value) if value.is_a?(Float)
  puts "floor.#{key}=#{value}"
  $stdout.flush
end

def note(text)
  puts "# #{text}"
  $stdout.flush
end

def percentile(sorted, p)
  sorted[[(p / 100.0 * sorted.size).ceil, 1].max - 1]
end

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def configure(url, namespaces, concurrency, pool_size)
  TaskerCore.reset_configuration!
  TaskerCore.configure do |c|
    c.database_url = url
    c.namespaces = namespaces
    c.template_paths = [File.join(ROOT, "benches/templates")]
    c.concurrency = concurrency
    c.pool_size = pool_size
  end
end

def create(namespace, name)
  TaskerCore::Client.create_task(namespace: namespace, name: name, version: "1.0.0", context: { "even_number" => 2 })
end

NOOP = { namespace: "bench_noop", name: "noop", version: "1.0.0", context: {} }.freeze

# Waits for `count` no-op handler returns, then until the database has no unfinished no-op task
# (every earlier phase's tasks are finished by then): the moment of the last completion.
def wait_drained(monitor, count, timeout, namespace: "bench_noop")
  Floor.wait_for_noops(timeout) or raise "only some of #{count} no-op handlers returned in #{timeout}s"
  deadline = now + 60
  loop do
    left = monitor.exec_params("SELECT count(*) FROM tasker.tasks WHERE namespace = $1 " \
                               "AND status IN ('pending', 'in_progress')", [namespace]).getvalue(0, 0).to_i
    return now if left.zero?
    raise "#{left} no-op tasks still unfinished 60 s after their handlers returned" if now > deadline

    sleep 0.002
  end
end

def not_complete(monitor)
  monitor.exec("SELECT count(*) FROM tasker.tasks WHERE namespace = 'bench_noop' AND status <> 'complete'")
         .getvalue(0, 0).to_i
end

# The same starting state for each timed part (no dead rows to walk, no checkpoint due), and
# the 1-minute load average as it starts (a shared machine).
def settle(monitor, part)
  monitor.exec("VACUUM ANALYZE")
  monitor.exec("CHECKPOINT")
  out "load.#{part}", File.read("/proc/loadavg").split.first
end

# Splits `total` into `parts` near-equal counts.
def shares(total, parts)
  Array.new(parts) { |i| (total / parts) + (i < total % parts ? 1 : 0) }
end

TaskerCore.migrate!(database_url: database_url)
monitor = PG.connect(database_url)
native = File.basename(ENV.fetch("TASKER_CORE_NATIVE", "lib/tasker_core/tasker_core_rb.so"))
note "Ruby #{RUBY_VERSION}; extension #{native}; #{concurrency} handler threads; pool #{pool_size}"
out "ruby.version", RUBY_VERSION
out "ruby.concurrency", concurrency

# (c) The 4-step chain, one at a time.
settle(monitor, "c")
configure(database_url, %w[bench_chain], concurrency, pool_size)
TaskerCore.start
chain_ms = []
wait_ms = []
(warmup + chains).times do |i|
  started = now
  task = create("bench_chain", "chain")
  done = TaskerCore::Client.wait_for(task.uuid, timeout: 60)
  returned = now
  raise "chain #{task.uuid} is #{done.status}" unless done.complete?

  last = Floor.take_chain_done(task.uuid) or raise "chain #{task.uuid}: its last handler did not record"
  next if i < warmup

  chain_ms << ((last - started) * 1000)
  wait_ms << ((returned - started) * 1000)
end
TaskerCore.stop
chain_ms.sort!
wait_ms.sort!
out "c.chains", chains
out "c.warmup", warmup
out "c.chain_p50_ms", percentile(chain_ms, 50)
out "c.chain_p95_ms", percentile(chain_ms, 95)
out "c.chain_p99_ms", percentile(chain_ms, 99)
out "c.wait_p50_ms", percentile(wait_ms, 50)
out "c.wait_p95_ms", percentile(wait_ms, 95)

# (d) A backlog created by a client-only engine (PRODUCERS threads, not timed), then drained by a
# worker started on it.
configure(database_url, [], concurrency, pool_size)
TaskerCore.start
started = now
shares(drain_tasks, producers).map { |n| Thread.new { n.times { TaskerCore::Client.create_task(**NOOP) } } }.each(&:join)
created_in = now - started
TaskerCore.stop
settle(monitor, "d")
Floor.expect_noops(drain_tasks)
configure(database_url, %w[bench_noop], concurrency, pool_size)
started = now
TaskerCore.start
finished = wait_drained(monitor, drain_tasks, 600)
TaskerCore.stop
out "d.tasks", drain_tasks
out "d.backlog_threads", producers
out "d.backlog_create_per_s", drain_tasks / created_in
out "d.seconds", finished - started
out "d.steps_per_s", drain_tasks / (finished - started)
out "d.not_complete", not_complete(monitor)

# (h) The same drain with flow limits: a concurrency limit of 2 per key over 10 keys, and a rate
# limit far above the rate (one key). Each is created and drained as (d).
def limited_drain(label, monitor, settings, name)
  url, concurrency, pool_size, tasks, producers = settings.values_at(:url, :concurrency, :pool_size, :tasks, :producers)
  configure(url, [], concurrency, pool_size)
  TaskerCore.start
  shares(tasks, producers).each_with_index.map do |n, p|
    Thread.new { n.times { |i| TaskerCore::Client.create_task(**NOOP, name: name, context: { "k" => (i + p) % 10 }) } }
  end.each(&:join)
  TaskerCore.stop
  settle(monitor, label)
  Floor.expect_noops(tasks)
  configure(url, %w[bench_noop], concurrency, pool_size)
  started = now
  TaskerCore.start
  finished = wait_drained(monitor, tasks, 600)
  TaskerCore.stop
  out "#{label}.tasks", tasks
  out "#{label}.seconds", finished - started
  out "#{label}.steps_per_s", tasks / (finished - started)
  out "#{label}.not_complete", not_complete(monitor)
end

drain = { url: database_url, concurrency: concurrency, pool_size: pool_size, tasks: drain_tasks, producers: producers }
limited_drain("h_concurrency", monitor, drain, "noop_limited")
limited_drain("h_rate", monitor, drain, "noop_rated")

# (i) The (d) drain as Active Job no-op jobs through the adapter (TaskerCore::ActiveJob): a
# backlog enqueued beforehand with enqueue_all, drained by a worker running the queue.
begin
  require "active_job"
  require "active_job/queue_adapters/tasker_core_adapter"
rescue LoadError
  nil
end

# An Active Job that does nothing (counted as the no-op handler's returns are).
class FloorNoopJob < (defined?(ActiveJob::Base) ? ActiveJob::Base : Object)
  def perform(_index) = TaskerCore::Bench::Floor.noop_done
end

def active_job_drain(monitor, settings)
  url, concurrency, pool_size, tasks = settings.values_at(:url, :concurrency, :pool_size, :tasks)
  ActiveJob::Base.queue_adapter = :tasker_core
  ActiveJob::Base.logger = Logger.new(nil)
  configure(url, [], concurrency, pool_size)
  TaskerCore.start
  shares(tasks, 1000).each { |n| TaskerCore::ActiveJob.enqueue_all(Array.new(n) { |i| FloorNoopJob.new(i) }) }
  TaskerCore.stop
  settle(monitor, "i")
  Floor.expect_noops(tasks)
  configure(url, [], concurrency, pool_size)
  TaskerCore.configuration.active_job_queues = ["default"]
  started = now
  TaskerCore.start
  finished = wait_drained(monitor, tasks, 600, namespace: "aj_default")
  TaskerCore.stop
  out "i.tasks", tasks
  out "i.seconds", finished - started
  out "i.steps_per_s", tasks / (finished - started)
  out "i.not_complete", monitor.exec("SELECT count(*) FROM tasker.tasks WHERE namespace = 'aj_default' " \
                                     "AND status <> 'complete'").getvalue(0, 0).to_i
end

if defined?(ActiveJob::Base)
  active_job_drain(monitor, drain)
else
  out "i.steps_per_s", "n/a (Active Job is not installed)"
end

# (e) The same tasks created while the worker runs, by producer threads each running `work`
# with its share of the tasks.
def produced(label, monitor, settings, &work)
  url, concurrency, pool_size, tasks, producers = settings.values_at(:url, :concurrency, :pool_size, :tasks, :producers)
  settle(monitor, label)
  configure(url, %w[bench_noop], concurrency, pool_size)
  TaskerCore.start
  Floor.expect_noops(tasks)
  started = now
  threads = shares(tasks, producers).map { |n| Thread.new(n, &work) }
  threads.each(&:join)
  created = now
  finished = wait_drained(monitor, tasks, 600)
  TaskerCore.stop
  out "#{label}.seconds", finished - started
  out "#{label}.create_per_s", tasks / (created - started)
  out "#{label}.steps_per_s", tasks / (finished - started)
  out "#{label}.not_complete", not_complete(monitor)
end

settings = { url: database_url, concurrency: concurrency, pool_size: pool_size, tasks: produce_tasks,
             producers: producers }
out "e.tasks", produce_tasks
out "e.producers", producers
produced("e", monitor, settings) { |n| n.times { TaskerCore::Client.create_task(**NOOP) } }
if TaskerCore::Client.respond_to?(:create_tasks)
  out "e_batch.batch", batch
  produced("e_batch", monitor, settings) do |n|
    shares(n, (n + batch - 1) / batch).each { |size| TaskerCore::Client.create_tasks(Array.new(size) { NOOP.dup }) }
  end
else
  out "e_batch.steps_per_s", "n/a (create_tasks not implemented)"
end

# (g) RSS over a long run: one producer keeps a backlog of at most 5,000 no-op tasks (created
# with create_tasks in batches); RSS is read at every 10 % of the steps.
def rss_mb = File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1].to_i / 1024.0

if rss_steps.positive?
  settle(monitor, "g")
  configure(database_url, %w[bench_noop], concurrency, pool_size)
  TaskerCore.start
  Floor.expect_noops(rss_steps)
  out "g.steps", rss_steps
  out "g.rss_start_mb", rss_mb
  producer = Thread.new do
    made = 0
    while made < rss_steps
      if made - Floor.noops > 5_000
        sleep 0.01
        next
      end
      size = [batch, rss_steps - made].min
      TaskerCore::Client.create_tasks(Array.new(size) { NOOP.dup })
      made += size
    end
  end
  samples = []
  step = [rss_steps / 10, 1].max
  started = now
  (1..10).each do |tenth|
    target = [tenth * step, rss_steps].min
    sleep 0.05 while Floor.noops < target && producer.alive?
    samples << [Floor.noops, rss_mb]
  end
  producer.join
  finished = wait_drained(monitor, rss_steps, 600)
  TaskerCore.stop
  out "g.seconds", finished - started
  out "g.rss_mb", samples.map { |n, mb| format("%d:%.1f", n, mb) }.join(",")
  first = samples.first[1]
  out "g.rss_growth_after_first_tenth_mb", samples.last[1] - first
  out "g.not_complete", not_complete(monitor)
end
monitor.close
