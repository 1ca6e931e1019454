# frozen_string_literal: true

# Runs benches/ruby/memory.rb for both variants in separate processes and prints the
# comparison (rake bench:memory), or checks the optimized figures against
# benches/budgets.json (--check; bin/test).
#
#   ruby benches/ruby/memory_report.rb --dhat PATH_TO_DHAT_BUILD [--steps N] [--check]

require "json"
require "optparse"
require "rbconfig"

ROOT = File.expand_path("../..", __dir__)
options = { steps: 100_000, count_steps: 20_000, check: false }
OptionParser.new do |o|
  o.on("--dhat PATH", "the extension built with --features dhat-heap") { |v| options[:dhat] = v }
  o.on("--steps N", Integer, "steps for timing, GC and RSS (default 100000)") { |v| options[:steps] = v }
  o.on("--count-steps N", Integer, "steps for the allocation counts (default 20000)") { |v| options[:count_steps] = v }
  o.on("--check", "compare with benches/budgets.json and exit non-zero when over") { options[:check] = true }
end.parse!
abort "--dhat PATH is required" unless options[:dhat] && File.exist?(options[:dhat])

def run(variant, steps, native = nil)
  env = native ? { "TASKER_CORE_NATIVE" => native } : {}
  out = IO.popen(env, [RbConfig.ruby, File.join(__dir__, "memory.rb"), "--variant", variant, "--steps", steps.to_s,
                       "--json"], &:read)
  raise "memory.rb #{variant} failed" unless $?.success?

  JSON.parse(out)
end

counts = %w[optimized naive].to_h { |v| [v, run(v, options[:count_steps], options[:dhat])] }
opt = counts["optimized"]
naive = counts["naive"]
reduction = 1 - opt["rust_allocations_per_step"] / naive["rust_allocations_per_step"]

if options[:check]
  budgets = JSON.parse(File.read(File.join(ROOT, "benches/budgets.json")))
  failures = []
  %w[rust_allocations_per_step ruby_objects_per_step].each do |key|
    failures << "#{key}: #{opt[key]} > budget #{budgets[key]}" if opt[key] > budgets[key]
  end
  minimum = budgets["minimum_rust_allocation_reduction_vs_naive"]
  failures << "reduction vs naive #{(reduction * 100).round(1)} % < #{minimum * 100} %" if reduction < minimum
  puts format("boundary per step: %.2f Rust allocations (budget %s), %.2f Ruby objects (budget %s), " \
              "%.1f %% fewer Rust allocations than naive", opt["rust_allocations_per_step"],
              budgets["rust_allocations_per_step"], opt["ruby_objects_per_step"], budgets["ruby_objects_per_step"],
              reduction * 100)
  abort("allocation budget exceeded:\n  #{failures.join("\n  ")}") if failures.any?
  exit 0
end

timing = %w[optimized naive].to_h { |v| [v, run(v, options[:steps])] }
rows = [
  ["Rust heap allocations / step (dhat)", "rust_allocations_per_step", counts],
  ["Rust heap bytes / step (dhat)", "rust_bytes_per_step", counts],
  ["Ruby objects allocated / step", "ruby_objects_per_step", counts],
  ["time per boundary crossing (us)", "microseconds_per_step", timing],
  ["Ruby GC runs (#{options[:steps]} steps)", "gc_runs", timing],
  ["peak RSS (MB)", "peak_rss_kb", timing]
]
puts "tasker_core boundary, per dispatched step (no database; handler body excluded)"
puts "machine: #{`nproc`.strip} cores, Ruby #{RUBY_VERSION}; counts over #{options[:count_steps]} steps " \
     "(extension built with dhat-heap), timings over #{options[:steps]} steps " \
     "(#{File.basename(File.realpath(File.join(ROOT, 'lib/tasker_core/tasker_core_rb.so')))})"
puts format("%-38s %12s %12s %9s", "", "optimized", "naive", "change")
rows.each do |label, key, source|
  a = source["optimized"][key]
  b = source["naive"][key]
  a /= 1024.0 if key == "peak_rss_kb"
  b /= 1024.0 if key == "peak_rss_kb"
  change = b.zero? ? "" : format("%+.1f%%", (a - b) * 100.0 / b)
  puts format("%-38s %12.2f %12.2f %9s", label, a, b, change)
end
rss = timing["optimized"]["rss_kb_after"]
puts format("RSS after 10,000 steps %.1f MB, after %d steps %.1f MB (optimized)",
            rss["10000"].to_i / 1024.0, options[:steps], rss[options[:steps].to_s].to_i / 1024.0)
size, capacity, hits, misses, evictions = timing["optimized"]["string_cache"]
puts "string cache: #{size}/#{capacity} names, #{hits} hits, #{misses} misses, #{evictions} evictions"
