# frozen_string_literal: true

# One worker process of `rake bench:scale` (benches/ruby/scale.rb starts 1, 2 or 4 of them,
# each maybe in a network namespace of its own): serves the no-op and chain namespaces until
# SIGTERM, then drains and exits.
$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require_relative "floor_handlers"

TaskerCore.configure do |c|
  c.database_url = ENV.fetch("DATABASE_URL")
  c.namespaces = %w[bench_noop bench_chain]
  c.template_paths = [File.expand_path("../templates", __dir__)]
  c.concurrency = Integer(ENV.fetch("CONCURRENCY", "10"))
  c.pool_size = Integer(ENV.fetch("POOL_SIZE", "12"))
  c.retention = { interval: nil }
  c.logger = Logger.new(nil)
end
stop = Queue.new
%w[TERM INT].each { |signal| trap(signal) { stop << signal } }
TaskerCore.start
$stdout.puts "ready #{Process.pid}"
$stdout.flush
stop.pop
TaskerCore.stop(timeout: 30)
