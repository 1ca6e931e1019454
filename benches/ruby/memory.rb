# frozen_string_literal: true

# The boundary's cost per dispatched step, without a database: rows as the claim query returns
# them are turned into step events, run through the worker's dispatch code with a no-op handler
# (its body allocates nothing) and handed back. Counts Ruby objects (GC.stat) and, when the
# extension was built with the `dhat-heap` feature, Rust heap allocations (dhat).
#
#   ruby benches/ruby/memory.rb --variant optimized|naive --steps N [--json]
#
# `rake bench:memory` runs both variants in separate processes and prints the comparison;
# `benches/ruby/budget_check.rb` (bin/test) compares the optimized figures with the budgets.

require "json"
require "logger"
require "optparse"
$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"

require_relative "noop_handler"

module TaskerCore
  module Bench
    # The harness (see the top of this file).
    class Memory
      CHUNK = 10_000

      def initialize(variant:, steps:)
        @naive = variant == "naive"
        @steps = steps
        @registry = Registry.new([{ "handlers" => ["TaskerCore::Bench::NoopHandler"] }])
        @logger = ::Logger.new($stderr)
      end

      def run
        prepare_and_run(1_000) # warm up: method caches, interned names, config cache
        GC.start
        totals = Hash.new(0)
        rss_at = {}
        gc_before = GC.count
        done = 0
        while done < @steps
          n = [CHUNK, @steps - done].min
          chunk = prepare_and_run(n)
          chunk.each { |k, v| totals[k] += v }
          done += n
          rss_at[done] = rss_kb if [10_000, @steps].include?(done)
        end
        {
          "variant" => @naive ? "naive" : "optimized", "steps" => @steps,
          "ruby_objects_per_step" => totals[:objects].fdiv(@steps).round(2),
          "rust_allocations_per_step" => totals[:blocks]&.fdiv(@steps)&.round(2),
          "rust_bytes_per_step" => totals[:bytes]&.fdiv(@steps)&.round(1),
          "microseconds_per_step" => (totals[:seconds] * 1e6 / @steps).round(2),
          "gc_runs" => GC.count - gc_before,
          "rss_kb_after" => rss_at, "peak_rss_kb" => peak_rss_kb,
          "string_cache" => Native::Bench.cache_stats
        }
      end

      private

      def prepare_and_run(count)
        Native::Bench.prepare(count)
        heap_before = Native::Bench.heap_stats
        objects_before = GC.stat(:total_allocated_objects)
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        count.times { step }
        seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
        objects = GC.stat(:total_allocated_objects) - objects_before
        heap_after = Native::Bench.heap_stats
        result = { objects: objects, seconds: seconds }
        if heap_before
          result[:blocks] = heap_after[0] - heap_before[0]
          result[:bytes] = heap_after[1] - heap_before[1]
        end
        result
      end

      # One dispatched step, as the worker runs it.
      def step
        event = Native::Bench.next_event(@naive)
        eager(event) if @naive
        outcome = StepExecution.run_handler(event, @registry)
        StepExecution.deliver(event, outcome, @logger)
      end

      # The naive baseline builds the whole event as Ruby objects up front, the way an eager
      # boundary (a Hash per step) would.
      def eager(event)
        {
          "task" => { "uuid" => event.task_uuid, "namespace" => event.namespace, "name" => event.task_name,
                      "version" => event.task_version, "correlation_id" => event.correlation_id,
                      "context" => event.context },
          "step" => { "uuid" => event.step_uuid, "name" => event.step_name, "handler" => event.handler_class,
                      "attempts" => event.attempts, "config" => event.handler_config },
          "sequence" => event.dependency_names.to_h { |n| [n, event.dependency_result(n)] }
        }
      end

      def rss_kb = File.read("/proc/self/status")[/^VmRSS:\s+(\d+)/, 1].to_i

      def peak_rss_kb = File.read("/proc/self/status")[/^VmHWM:\s+(\d+)/, 1].to_i
    end
  end
end

if $PROGRAM_NAME == __FILE__
  options = { variant: "optimized", steps: 100_000, json: false }
  OptionParser.new do |o|
    o.on("--variant NAME", %w[optimized naive]) { |v| options[:variant] = v }
    o.on("--steps N", Integer) { |v| options[:steps] = v }
    o.on("--json") { options[:json] = true }
  end.parse!
  result = TaskerCore::Bench::Memory.new(variant: options[:variant], steps: options[:steps]).run
  puts options[:json] ? JSON.generate(result) : JSON.pretty_generate(result)
end
