# frozen_string_literal: true

# `rake bench:pgbouncer`: what going through PgBouncer in transaction mode costs. The same
# backlog of no-op 1-step tasks is created (create_tasks, batches of 100) and drained by one
# process, directly, through PgBouncer with LISTEN on the direct URL, and through PgBouncer
# polling only, alternated ROUNDS times on one cluster. Prints `pgbouncer.<mode>.<name>=<value>`.
#
#   DIRECT_URL=... POOLED_URL=... ruby benches/ruby/pgbouncer.rb
#   env: TASKS=5000 ROUNDS=2 CONCURRENCY=10 POOL_SIZE=16

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require_relative "floor_handlers"

Floor = TaskerCore::Bench::Floor
tasks = Integer(ENV.fetch("TASKS", "5000"))
rounds = Integer(ENV.fetch("ROUNDS", "2"))
concurrency = Integer(ENV.fetch("CONCURRENCY", "10"))
pool_size = Integer(ENV.fetch("POOL_SIZE", "16"))
direct = ENV.fetch("DIRECT_URL")
pooled = ENV.fetch("POOLED_URL")
templates = File.expand_path("../templates", __dir__)
NOOP = { namespace: "bench_noop", name: "noop", version: "1.0.0", context: {} }.freeze

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

TaskerCore.migrate!(database_url: direct)
puts "# #{tasks} tasks, #{concurrency} handler threads, pool #{pool_size}, #{rounds} rounds; poll_interval 0.5 s"
modes = { "direct" => [direct, false, nil], "listen" => [pooled, true, direct], "polling" => [pooled, true, nil] }
results = Hash.new { |h, k| h[k] = { create: [], drain: [] } }
rounds.times do
  modes.each do |mode, (url, pooling, listen)|
    configure = lambda do |namespaces|
      TaskerCore.reset_configuration!
      TaskerCore.configure do |c|
        c.database_url = url
        c.transaction_pooling = pooling
        c.listen_database_url = listen
        c.namespaces = namespaces
        c.template_paths = [templates]
        c.concurrency = concurrency
        c.pool_size = pool_size
        c.retention = { interval: nil }
      end
    end
    configure.call([])
    TaskerCore.start
    started = now
    (tasks / 100).times { TaskerCore::Client.create_tasks(Array.new(100) { NOOP.dup }) }
    results[mode][:create] << (tasks / 100 * 100) / (now - started)
    TaskerCore.stop
    Floor.expect_noops(tasks / 100 * 100)
    configure.call(["bench_noop"])
    started = now
    TaskerCore.start
    Floor.wait_for_noops(600) or raise "#{mode}: the drain did not finish in 600 s"
    results[mode][:drain] << (tasks / 100 * 100) / (now - started)
    TaskerCore.stop
  end
end
median = ->(xs) { xs.sort[xs.size / 2] }
results.each do |mode, r|
  puts format("pgbouncer.%s.create_per_s=%.0f", mode, median.call(r[:create]))
  puts format("pgbouncer.%s.drain_per_s=%.0f", mode, median.call(r[:drain]))
end
%w[listen polling].each do |mode|
  puts format("pgbouncer.%s.drain_ratio=%.2f", mode, median.call(results[mode][:drain]) / median.call(results["direct"][:drain]))
  puts format("pgbouncer.%s.create_ratio=%.2f", mode,
              median.call(results[mode][:create]) / median.call(results["direct"][:create]))
end
