# frozen_string_literal: true

# End-to-end latency and throughput with Ruby handlers (the counterpart of the Rust-native
# benches/src/bin/e2e.rs): create → complete (until wait_for returns) for the 4-step linear and
# diamond example workflows, and steps/s with no-op handlers for 1-step tasks (timed until the
# database shows none of them unfinished: waiting for each task in turn would time thousands of
# `wait_for` reads instead). `rake bench:floor` measures the same cycle against raw pgmq.
#
#   DATABASE_URL=... ruby benches/ruby/e2e.rb [ITERATIONS] [TASKS]

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require "pg"
root = File.expand_path("../..", __dir__)
Dir[File.join(root, "examples/*/handlers/*.rb")].sort.each { |f| require f }

require_relative "noop_handler"

iterations = Integer(ARGV[0] || 300)
tasks = Integer(ARGV[1] || 5000)
concurrency = Integer(ENV.fetch("CONCURRENCY", "4"))
database_url = ENV.fetch("DATABASE_URL") { abort "e2e.rb: set DATABASE_URL (rake bench:e2e starts a private PostgreSQL)" }

def percentile(sorted, p)
  sorted[[(p / 100.0 * sorted.size).ceil, 1].max - 1]
end

def configure(url, namespaces, root, concurrency)
  TaskerCore.reset_configuration!
  TaskerCore.configure do |c|
    c.database_url = url
    c.namespaces = namespaces
    c.template_paths = [File.join(root, "examples"), File.join(root, "benches/templates")]
    c.concurrency = concurrency
    c.pool_size = 16
    # OTLP_ENDPOINT=http://127.0.0.1:PORT: metrics and traces exported (rake bench:otel)
    c.telemetry = { endpoint: ENV["OTLP_ENDPOINT"], export_interval: 10 } if ENV["OTLP_ENDPOINT"]
  end
end

def create(namespace, name)
  TaskerCore::Client.create_task(namespace: namespace, name: name, version: "1.0.0", context: { "even_number" => 2 })
end

# Polls until no no-op task is pending or in progress; returns that moment.
def wait_noops_finished(monitor, timeout)
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
  loop do
    left = monitor.exec("SELECT count(*) FROM tasker.tasks WHERE namespace = 'bench_noop' " \
                        "AND status IN ('pending', 'in_progress')").getvalue(0, 0).to_i
    now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    return now if left.zero?
    raise "#{left} no-op tasks unfinished after #{timeout}s" if now > deadline

    sleep 0.002
  end
end

TaskerCore.migrate!(database_url: database_url)
monitor = PG.connect(database_url)
settings = `psql "#{database_url}" -XAtc "select current_setting('fsync') || ',' || current_setting('synchronous_commit')"`.strip
fsync, sync = settings.split(",")
configure(database_url, %w[linear_workflow diamond_workflow bench_noop], root, concurrency)
TaskerCore.start
native = File.basename(ENV.fetch("TASKER_CORE_NATIVE", "lib/tasker_core/tasker_core_rb.so"))
puts "Ruby handlers; #{concurrency} handler threads; Ruby #{RUBY_VERSION}; extension #{native}; " \
     "PostgreSQL fsync=#{fsync}, synchronous_commit=#{sync}; " \
     "telemetry #{ENV["OTLP_ENDPOINT"] ? "exported to #{ENV["OTLP_ENDPOINT"]}" : "off"}"

[%w[linear_workflow mathematical_sequence], %w[diamond_workflow parallel_computation]].each do |namespace, name|
  20.times { TaskerCore::Client.wait_for(create(namespace, name).uuid, timeout: 30) }
  samples = Array.new(iterations) do
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    done = TaskerCore::Client.wait_for(create(namespace, name).uuid, timeout: 30)
    raise "#{done.uuid} is #{done.status}" unless done.complete?

    (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000
  end.sort
  puts format("%-18s 4 steps  create->complete  p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  (%d runs)",
              namespace, percentile(samples, 50), percentile(samples, 95), percentile(samples, 99), iterations)
end

started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
tasks.times { create("bench_noop", "noop") }
elapsed = wait_noops_finished(monitor, 120) - started
puts format("1-step no-op tasks, created while running: %d steps in %.2f s = %.0f steps/s", tasks, elapsed, tasks / elapsed)
TaskerCore.stop

# A backlog created by a client-only engine, then drained by a worker.
configure(database_url, [], root, concurrency)
TaskerCore.start
tasks.times { create("bench_noop", "noop") }
TaskerCore.stop
configure(database_url, %w[bench_noop], root, concurrency)
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
TaskerCore.start
elapsed = wait_noops_finished(monitor, 300) - started
puts format("1-step no-op tasks, draining a backlog:    %d steps in %.2f s = %.0f steps/s", tasks, elapsed, tasks / elapsed)
TaskerCore.stop
monitor.close
