# frozen_string_literal: true

# Cost of a TaskerCore::Logger call: at a disabled level (must not allocate on the Rust side)
# and at an enabled one (written to /dev/null), per call. With the dhat-heap build
# (TASKER_CORE_NATIVE=tmp/bench/dhat/tasker_core_rb.so) Rust heap allocations are counted.
#
#   ruby benches/ruby/log_cost.rb [--calls N] [--check]     (rake bench:log, bin/test's budget)

require "optparse"
$LOAD_PATH.unshift File.expand_path("../../lib", __dir__)
require "tasker_core"

calls = 100_000
check = false
OptionParser.new do |o|
  o.on("--calls N", Integer) { |v| calls = v }
  o.on("--check", "exit non-zero when a disabled call allocates on the Rust side") { check = true }
end.parse!

Native = TaskerCore::Native
def measure(calls, &block)
  heap_before = Native::Bench.heap_stats
  objects_before = GC.stat(:total_allocated_objects)
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  calls.times(&block)
  seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  objects = GC.stat(:total_allocated_objects) - objects_before
  heap_after = Native::Bench.heap_stats
  blocks = heap_before && (heap_after[0] - heap_before[0])
  { ns: seconds * 1e9 / calls, objects: objects.fdiv(calls), rust: blocks&.fdiv(calls) }
end

TaskerCore::Logger.configure(level: "warn", output: File::NULL)
Native::Bench.heap_stats # start the profiler before counting
rows = {
  "disabled, message only" => measure(calls) { TaskerCore::Logger.debug("not written") },
  "disabled, with fields" => measure(calls) { TaskerCore::Logger.debug("not written", order_id: 1) },
  "disabled, block" => measure(calls) { TaskerCore::Logger.debug { "not #{calls} built" } },
  "enabled, with fields (to /dev/null)" => measure(calls / 10) { TaskerCore::Logger.warn("written", order_id: 1) }
}
counting = Native::Bench.heap_stats ? "dhat build" : "no dhat: Rust allocations not counted"
puts "TaskerCore::Logger per call (#{calls} calls; filter \"warn\"; #{counting})"
puts format("%-38s %10s %14s %16s", "", "ns/call", "Ruby objects", "Rust allocations")
rows.each do |label, r|
  puts format("%-38s %10.0f %14.2f %16s", label, r[:ns], r[:objects], r[:rust] ? format("%.2f", r[:rust]) : "n/a")
end
if check
  abort "log_cost: run with the dhat build (TASKER_CORE_NATIVE)" unless rows.values.first[:rust]
  over = rows.select { |label, r| label.start_with?("disabled") && r[:rust].positive? }
  abort "a disabled log call allocates on the Rust side: #{over.keys.join(", ")}" if over.any?
  puts "disabled log calls: 0 Rust allocations"
end
