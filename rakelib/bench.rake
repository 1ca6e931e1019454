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
    sh({ "TASKER_CORE_NATIVE" => File.join(dhat_dir, "tasker_core_rb.so") },
       RbConfig.ruby, File.join(root, "benches/ruby/log_cost.rb"), "--calls", "20000", "--check")
  end

  desc "Cost of a TaskerCore::Logger call, disabled and enabled (Rust allocations counted with dhat)"
  task log: %i[dhat_build compile] do
    sh({ "TASKER_CORE_NATIVE" => File.join(dhat_dir, "tasker_core_rb.so") },
       RbConfig.ruby, File.join(root, "benches/ruby/log_cost.rb"))
  end
end

namespace :bench do
  root = File.expand_path("..", __dir__)

  # The release extension and bench binaries; the extension copied to tmp/bench/release for
  # TASKER_CORE_NATIVE. Returns [CARGO_TARGET_DIR, that directory].
  release_build = lambda do
    target = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
    sh "cargo", "build", "--quiet", "--locked", "--release", "-p", "tasker-core-rb", "-p", "tasker-core-benches",
       "--target-dir", target, verbose: false
    release = File.join(root, "tmp/bench/release")
    FileUtils.mkdir_p(release)
    FileUtils.cp(File.join(target, "release/libtasker_core_rb.so"), File.join(release, "tasker_core_rb.so"))
    [target, release]
  end

  desc "End-to-end latency (p50/p95/p99) and steps/s, Ruby and Rust-native handlers (release build; " \
       "DATABASE_URL or a private PostgreSQL). ITERATIONS=300 TASKS=5000"
  task :e2e do
    iterations = ENV.fetch("ITERATIONS", "300")
    tasks = ENV.fetch("TASKS", "5000")
    target, release = release_build.call
    script = <<~SH
      set -euo pipefail
      if [[ -z ${DATABASE_URL:-} ]]; then source bin/lib/pg_cluster.sh; pg_cluster_start tasker_bench; fi
      echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
      #{File.join(target, 'release/e2e')} #{iterations} #{tasks}
      # Let the second run start from the same settled state (no autovacuum catching up).
      psql "$DATABASE_URL" -Xq -c "VACUUM ANALYZE"
      TASKER_CORE_NATIVE=#{release}/tasker_core_rb.so ruby benches/ruby/e2e.rb #{iterations} #{tasks}
    SH
    Dir.chdir(root) { sh "bash", "-c", script, verbose: false }
  end

  desc "Cost of exporting metrics and traces: rake bench:e2e's Ruby runs, telemetry off and on " \
       "(to a local OTLP receiver), alternated ROUNDS=2 times. ITERATIONS=200 TASKS=2000"
  task :otel do
    iterations = ENV.fetch("ITERATIONS", "200")
    tasks = ENV.fetch("TASKS", "2000")
    rounds = Integer(ENV.fetch("ROUNDS", "2"))
    target, release = release_build.call
    sh "cargo", "build", "--quiet", "--locked", "--release", "-p", "tasker-otlp-receiver", "--target-dir", target,
       verbose: false
    runs = (["off", "on"] * rounds).map do |mode|
      <<~SH
        psql "$DATABASE_URL" -Xq -c "VACUUM ANALYZE"
        #{mode == "on" ? "OTLP_ENDPOINT=$endpoint " : ""}TASKER_CORE_NATIVE=#{release}/tasker_core_rb.so ruby benches/ruby/e2e.rb #{iterations} #{tasks}
      SH
    end
    script = <<~SH
      set -euo pipefail
      if [[ -z ${DATABASE_URL:-} ]]; then source bin/lib/pg_cluster.sh; pg_cluster_start tasker_otel; fi
      echo "machine: $(nproc) cores"
      exec 3> >(#{File.join(target, 'release/otlp-receiver')} /dev/null > tmp/bench/otlp-receiver.out)
      for _ in $(seq 50); do grep -q listening tmp/bench/otlp-receiver.out 2>/dev/null && break; sleep 0.1; done
      endpoint="http://$(grep -o '127.0.0.1:[0-9]*' tmp/bench/otlp-receiver.out)"
      #{runs.join}
    SH
    Dir.chdir(root) { sh "bash", "-c", script, verbose: false }
  end

  desc "Latency of the hot paths (release build; DATABASE_URL or a private PostgreSQL): SQL on a " \
       "5,000-task dataset (criterion, plans in target/criterion/sql-plans), the wake-up round trip, " \
       "task creation from Ruby"
  task :latency do
    target, release = release_build.call
    script = <<~SH
      set -euo pipefail
      if [[ -z ${DATABASE_URL:-} ]]; then source bin/lib/pg_cluster.sh; pg_cluster_start tasker_latency; fi
      echo "machine: $(nproc) cores; PostgreSQL fsync=$(psql "$DATABASE_URL" -XAtc 'SHOW fsync'), synchronous_commit=$(psql "$DATABASE_URL" -XAtc 'SHOW synchronous_commit')"
      exe/tasker_core migrate >/dev/null
      cargo bench --quiet --locked -p tasker-core-benches --bench sql_dataset --target-dir #{target} -- --warm-up-time 1
      #{File.join(target, 'release/notify')} 2000
      TASKER_CORE_NATIVE=#{release}/tasker_core_rb.so ruby benches/ruby/create_latency.rb 2000
    SH
    Dir.chdir(root) { sh "bash", "-c", script, verbose: false }
  end
end
