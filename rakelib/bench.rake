# frozen_string_literal: true

require "fileutils"

namespace :bench do
  root = File.expand_path("..", __dir__)
  dhat_dir = File.join(root, "tmp/bench/dhat")

  # The extension built with the dhat-heap feature (counts Rust allocations), kept apart from
  # lib/: the next `rake compile` rebuilds the normal one.
  task :dhat_build do
    target = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
    sh "cargo", "build", "--quiet", "--locked", "-p", "tasker-core-rb", "--features", "dhat-heap",
       "--target-dir", target, verbose: false
    FileUtils.mkdir_p(dhat_dir)
    FileUtils.cp(File.join(target, "debug/libtasker_core_rb.so"), File.join(dhat_dir, "tasker_core_rb.so"))
  end

  desc "Boundary cost per step, optimized vs naive: Rust allocations (dhat), Ruby objects, time, GC, RSS"
  task memory: %i[dhat_build compile] do
    ruby File.join(root, "benches/ruby/memory_report.rb"), "--dhat", File.join(dhat_dir, "tasker_core_rb.so")
  end

  desc "Fail when the boundary allocates more per step than benches/budgets.json allows"
  task budget: %i[dhat_build compile] do
    ruby File.join(root, "benches/ruby/memory_report.rb"), "--check", "--count-steps", "5000",
         "--dhat", File.join(dhat_dir, "tasker_core_rb.so")
  end
end
