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

  # Run a benchmark script on a private PostgreSQL (`pg_cluster_start DBNAME`; `setup` runs
  # after it, e.g. PgBouncer), after a `<prefix>.meta.*` line naming the run; `command` is the
  # script's command line (Ruby with the release extension), its WARN log lines dropped.
  on_private_cluster = lambda do |prefix, command, setup: ""|
    _, release = release_build.call
    script = <<~SH
      set -euo pipefail
      source bin/lib/pg_cluster.sh
      source bin/lib/pgbouncer.sh
      pg_cluster_start tasker_#{prefix}
      #{setup}
      echo "#{prefix}.meta.date=$(date -u +%Y-%m-%dT%H:%MZ) #{prefix}.meta.tree=$(git rev-parse --short HEAD) #{prefix}.meta.cores=$(nproc) #{prefix}.meta.load=$(cut -d' ' -f1-3 /proc/loadavg)"
      TASKER_CORE_NATIVE=#{release}/tasker_core_rb.so #{command} 2>&1 | grep --line-buffered -v ' WARN '
    SH
    Dir.chdir(root) { sh "bash", "-c", script, verbose: false }
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

  desc "The dashboard at scale (release build, a private PostgreSQL unless DATABASE_URL): seeds TASKS tasks " \
       "with 5 steps each (set-based SQL), renders every page RENDERS times, prints p50/p95 and queries per page. " \
       "TASKS=1000000 RENDERS=50"
  task :web do
    _, release = release_build.call
    script = <<~SH
      set -euo pipefail
      if [[ -z ${DATABASE_URL:-} ]]; then
        # pg_stat_statements counts the statements each page runs.
        export PG_CLUSTER_OPTIONS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"
        source bin/lib/pg_cluster.sh
        pg_cluster_start tasker_web
      fi
      echo "web.meta.date=$(date -u +%Y-%m-%dT%H:%MZ) web.meta.tree=$(git rev-parse --short HEAD) web.meta.cores=$(nproc)"
      TASKER_CORE_NATIVE=#{release}/tasker_core_rb.so ruby benches/ruby/web.rb
    SH
    Dir.chdir(root) { sh "bash", "-c", script, verbose: false }
  end

  desc "Soak: STEPS=1000000 steps of mixed workflows with 1 % faults in one process, retention in minutes " \
       "(RETENTION=120), a report every WINDOW=50000 steps and a pass/fail verdict (release build, a private " \
       "PostgreSQL)"
  task :soak do
    on_private_cluster.call("soak", "ruby benches/ruby/soak.rb")
  end

  desc "Scale-out: 1, 2 and 4 worker processes draining one backlog on one PostgreSQL, on loopback and " \
       "each in a network namespace of its own over a veth pair (root; release build, a private " \
       "PostgreSQL). TASKS=10000 PROCESSES=1,2,4 NETNS=1 CONCURRENCY=10"
  task :scale do
    on_private_cluster.call("scale", "PG_DATA=$PG_CLUSTER_DIR/data PG_BIN=$PG_BIN ruby benches/ruby/scale.rb")
  end

  desc "Cost of PgBouncer in transaction mode: a no-op backlog created and drained directly, through " \
       "PgBouncer with LISTEN on the direct URL, and polling only (release build, a private PostgreSQL " \
       "and PgBouncer). TASKS=5000 ROUNDS=2"
  task :pgbouncer do
    on_private_cluster.call("pgbouncer", "DIRECT_URL=$DATABASE_URL POOLED_URL=$PGBOUNCER_URL ruby benches/ruby/pgbouncer.rb",
                            setup: "pgbouncer_start")
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
    runs = (%w[off on] * rounds).map do |mode|
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
       "5,000-task dataset (criterion, plans in benches/target/criterion/sql-plans), the wake-up round trip, " \
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

  desc "The step cycle against the durability floor, in one run on one private PostgreSQL (release build): " \
       "durable INSERT + COMMIT, pgmq's send/read/delete cycle and throughput sweep, the 4-step chain and the " \
       "no-op drain with Ruby and Rust-native handlers; prints the ratios and writes them to docs/benchmarks.md " \
       "(FLOOR_DOCS=0: don't). CHAINS=1000 DRAIN_TASKS=20000 PRODUCERS=4 CONCURRENCY=10 SAMPLES=2000 " \
       "SWEEP=1x1,...,32x32 SWEEP_SECONDS=4"
  task :floor do
    load_before_build = File.read("/proc/loadavg").split.first(3).join(" ")
    target, release = release_build.call
    out = File.join(root, "tmp/bench/floor")
    FileUtils.mkdir_p(out)
    docs = ENV["FLOOR_DOCS"] == "0" ? "" : "--docs docs/benchmarks.md"
    script = <<~SH
      set -euo pipefail
      # Always a private cluster at default durability: every figure of the report on the same one.
      unset DATABASE_URL
      source bin/lib/pg_cluster.sh
      pg_cluster_start tasker_floor
      psql=("$PG_BIN/psql" "$DATABASE_URL" -XAt)
      tree="HEAD $(git rev-parse --short HEAD)"
      if [[ -n $(git status --porcelain -- core ext lib migrations) ]]; then tree+=" with uncommitted changes in core/ext/lib/migrations"; fi
      {
        echo "floor.meta.date=$(date -u +%Y-%m-%dT%H:%MZ)"
        echo "floor.meta.tree=$tree"
        echo "floor.meta.cores=$(nproc)"
        echo "floor.meta.postgresql=$("${psql[@]}" -c 'SHOW server_version' | cut -d' ' -f1)"
        echo "floor.meta.fsync=$("${psql[@]}" -c 'SHOW fsync')"
        echo "floor.meta.synchronous_commit=$("${psql[@]}" -c 'SHOW synchronous_commit')"
        echo "floor.meta.shared_buffers=$("${psql[@]}" -c 'SHOW shared_buffers')"
        echo "floor.meta.ruby=$(ruby -e 'print RUBY_VERSION')"
        echo "floor.meta.pgmq_crate=$(awk '/^name = "pgmq"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)"
        echo "floor.meta.load_before_build=#{load_before_build}"
        echo "floor.meta.load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
      } > #{out}/meta.out
      cat #{out}/meta.out
      #{File.join(target, 'release/floor')} | tee #{out}/rust.out
      # Outside the bundle (as `bundle exec rake` would confine it): part (i) loads Debian's Active Job.
      env -u RUBYOPT -u BUNDLE_GEMFILE -u BUNDLE_BIN_PATH -u BUNDLER_SETUP -u BUNDLER_VERSION \
        TASKER_CORE_NATIVE=#{release}/tasker_core_rb.so ruby benches/ruby/floor.rb | tee #{out}/ruby.out
      echo "floor.meta.load_end=$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a #{out}/meta.out
      ruby benches/ruby/floor_report.rb #{docs} #{out}/meta.out #{out}/rust.out #{out}/ruby.out
    SH
    Dir.chdir(root) { sh "bash", "-c", script, verbose: false }
  end
end
