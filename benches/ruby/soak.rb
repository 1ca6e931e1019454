# frozen_string_literal: true

# `rake bench:soak`: one process runs STEPS steps of mixed workflows (linear 4 steps, diamond 4,
# fan-out 10; benches/templates/soak) with 1 % retryable faults, retention set to minutes
# (RETENTION seconds, maintenance every 10 s), a producer keeping the backlog under BACKLOG
# tasks, and a 4-step probe chain created at high priority every 100 ms for latency. Every
# WINDOW steps it prints steps/s, probe p50/p99, RSS, connections and the size of each tasker
# and pgmq table (heap + indexes); at the end, whether the run passes:
#   throughput and p99 of the last window within 10 % of the first 100,000 steps',
#   RSS growth after the warm-up window at most 5 %,
#   total table size stops growing once retention applies (last window within 10 % of the first
#   window that starts after two retention periods).
#
#   DATABASE_URL=... ruby benches/ruby/soak.rb
#   env: STEPS=1000000 WINDOW=50000 RETENTION=120 BACKLOG=2000 CONCURRENCY=10

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require "pg"
require_relative "noop_handler"

module TaskerCore
  module Bench
    # The soak's handler: nothing, and a retryable failure on 1 % of first attempts.
    class SoakHandler < TaskerCore::StepHandler::Base
      @lock = Mutex.new
      @done = 0
      class << self
        attr_reader :lock

        def done = lock.synchronize { @done }
        def count = lock.synchronize { @done += 1 }
      end

      def call(_task, _sequence, step)
        raise TaskerCore::RetryableError, "soak fault" if step.attempts == 1 && rand < 0.01

        self.class.count
        NoopHandler::RESULT
      end
    end
  end
end

url = ENV.fetch("DATABASE_URL")
steps = Integer(ENV.fetch("STEPS", "1000000"))
window = Integer(ENV.fetch("WINDOW", "50000"))
retention = Float(ENV.fetch("RETENTION", "120"))
backlog = Integer(ENV.fetch("BACKLOG", "2000"))
concurrency = Integer(ENV.fetch("CONCURRENCY", "10"))
Soak = TaskerCore::Bench::SoakHandler

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
def rss_mb = File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1].to_i / 1024.0

def out(key, value)
  value = format("%.3f", value) if value.is_a?(Float)
  puts "soak.#{key}=#{value}"
  $stdout.flush
end

TaskerCore.migrate!(database_url: url)
TaskerCore.configure do |c|
  c.database_url = url
  c.namespaces = %w[bench_soak bench_soak_probe]
  c.template_paths = [File.expand_path("../templates/soak", __dir__)]
  c.concurrency = concurrency
  c.retention = { completed: retention, errored: retention, archive: retention, interval: 10 }
  c.logger = Logger.new(nil)
end
TaskerCore.start
monitor = PG.connect(url)
kinds = [["linear", 4], ["diamond", 4], ["fanout", 10]]
steps_per_task = kinds.sum { |_, n| n } / kinds.size.to_f
puts "# #{steps} steps, windows of #{window}, retention #{retention} s (maintenance every 10 s), backlog < #{backlog} " \
     "tasks, #{concurrency} handler threads, 1 % faults; Ruby #{RUBY_VERSION}, " \
     "PostgreSQL #{monitor.exec('SHOW server_version').getvalue(0, 0)}"

created = 0
stop = false
producer = Thread.new do
  made = 0
  until stop
    if made * steps_per_task - Soak.done > backlog * steps_per_task
      sleep 0.01
      next
    end
    batch = Array.new(50) do |i|
      name, = kinds[(made + i) % kinds.size]
      { namespace: "bench_soak", name: name, version: "1.0.0", context: { "n" => made + i } }
    end
    TaskerCore::Client.create_tasks(batch)
    made += batch.size
    created = made
  end
end
probes = Thread.new do
  until stop
    TaskerCore::Client.create_task(namespace: "bench_soak_probe", name: "probe", version: "1.0.0", context: {},
                                   priority: :high)
    sleep 0.1
  end
end

sizes_sql = <<~SQL
  SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND (n.nspname = 'tasker' OR (n.nspname = 'pgmq' AND c.relname LIKE '%tasker_ns_bench_soak%'))
  ORDER BY 1
SQL
windows = []
started = now
mark = now
mark_wall = monitor.exec("SELECT now()").getvalue(0, 0)
next_at = window
while Soak.done < steps
  sleep 0.2
  next if Soak.done < next_at

  t = now
  wall = monitor.exec("SELECT now()").getvalue(0, 0)
  latencies = monitor.exec_params("SELECT extract(epoch FROM completed_at - created_at) * 1000 FROM tasker.tasks " \
                                  "WHERE namespace = 'bench_soak_probe' AND status = 'complete' " \
                                  "AND completed_at > $1 AND completed_at <= $2 ORDER BY 1", [mark_wall, wall])
                     .values.flatten.map(&:to_f)
  tables = monitor.exec(sizes_sql).values.map { |name, heap, index| [name, heap.to_i, index.to_i] }
  connections = monitor.exec("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tasker_core #{Process.pid}'")
                       .getvalue(0, 0).to_i
  w = { steps: next_at, rate: window / (t - mark), p50: latencies[latencies.size / 2] || 0.0,
        p99: latencies[[(latencies.size * 0.99).ceil - 1, 0].max] || 0.0, rss: rss_mb, connections: connections,
        total_mb: tables.sum { |_, h, i| h + i } / 1_048_576.0, elapsed: t - started, tables: tables }
  windows << w
  out "w#{windows.size}", format("steps=%d steps_per_s=%.0f p50_ms=%.1f p99_ms=%.1f rss_mb=%.1f connections=%d " \
                                 "tables_mb=%.1f elapsed_s=%.0f", w[:steps], w[:rate], w[:p50], w[:p99], w[:rss],
                                 w[:connections], w[:total_mb], w[:elapsed])
  out "w#{windows.size}.tables", tables.map { |n, h, i| format("%s:%.1f+%.1f", n, h / 1_048_576.0, i / 1_048_576.0) }.join(",")
  mark = t
  mark_wall = wall
  next_at += window
end
stop = true
[producer, probes].each(&:join)
TaskerCore.stop(timeout: 60)

first = windows.first([100_000 / window, 1].max)
first_rate = first.sum { |win| win[:rate] } / first.size
first_p99 = first.map { |win| win[:p99] }.max
last = windows.last
warm = windows[[100_000 / window, windows.size - 1].min - 1] || windows.first
settled = windows.find { |win| win[:elapsed] - window / win[:rate] > 2 * retention + 10 } || last
checks = {
  "throughput" => last[:rate] >= 0.9 * first_rate,
  "p99" => last[:p99] <= 1.1 * first_p99,
  "rss" => last[:rss] <= 1.05 * warm[:rss],
  "tables" => last[:total_mb] <= 1.1 * settled[:total_mb]
}
out "tasks_created", created
out "first_100k.steps_per_s", first_rate
out "first_100k.p99_ms", first_p99
out "last.steps_per_s", last[:rate]
out "last.p99_ms", last[:p99]
out "rss.after_warmup_mb", warm[:rss]
out "rss.last_mb", last[:rss]
out "tables.settled_mb", settled[:total_mb]
out "tables.settled_at_steps", settled[:steps]
out "tables.last_mb", last[:total_mb]
checks.each { |name, ok| out "check.#{name}", ok ? "pass" : "FAIL" }
out "result", checks.values.all? ? "pass" : "FAIL"
