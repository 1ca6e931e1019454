# frozen_string_literal: true

# Task creation latency from Ruby, in process: TaskerCore::Client.create_task of a one-step
# task with the engine running (no handler threads: nothing competes), p50/p95/p99.
#
#   DATABASE_URL=... ruby benches/ruby/create_latency.rb [N]      (rake bench:create)

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require_relative "noop_handler"

n = Integer(ARGV[0] || 2000)
url = ENV.fetch("DATABASE_URL") { abort "create_latency.rb: set DATABASE_URL" }
root = File.expand_path("../..", __dir__)
TaskerCore.migrate!(database_url: url)
TaskerCore.configure do |c|
  c.database_url = url
  c.namespaces = []
  c.template_paths = [File.join(root, "benches/templates")]
end
TaskerCore.start
create = -> { TaskerCore::Client.create_task(namespace: "bench_noop", name: "noop", version: "1.0.0", context: { "n" => 1 }) }
100.times { create.call } # warm up
samples = Array.new(n) do
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  create.call
  (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000.0
end.sort
TaskerCore.stop
pct = ->(p) { samples[[(p / 100.0 * samples.size).ceil, 1].max - 1] }
build = ENV["TASKER_CORE_NATIVE"] ? File.basename(File.dirname(ENV["TASKER_CORE_NATIVE"])) : "lib/ build"
puts format("create_task from Ruby over %d tasks: p50 %.3f ms, p95 %.3f ms, p99 %.3f ms (%s build)",
            n, pct.call(50), pct.call(95), pct.call(99), build)
