# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"
require "tempfile"
require "tmpdir"

# Active Job on tasker_core in a real Rails 6.1 application (Debian's; spec/rails_aj_app): the
# app's own process enqueues and runs the jobs (its engine serves the queues "default" and
# "mailers"), as a Rails app with the adapter does.
RSpec.describe "Active Job adapter" do
  let(:app_dir) { File.expand_path("../rails_aj_app", __dir__) }
  let(:lib_dir) { File.expand_path("../../lib", __dir__) }

  # Run Ruby in the application (outside this suite's bundle); the JSON its last line prints.
  def in_app(code, log, env: {}, killed: false)
    run = lambda do
      Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url, "AJ_SPEC_LOG" => log, "RAILS_ENV" => "development" }.merge(env),
                     RbConfig.ruby, "-I", lib_dir, "-e", code, chdir: app_dir)
    end
    out, err, status = defined?(Bundler) ? Bundler.with_unbundled_env(&run) : run.call
    ok = killed ? status.termsig == 9 : status.success?
    raise "app process failed (#{status.inspect}):\n#{out}\n#{err}" unless ok

    JSON.parse(out.lines.last)
  end

  def runs(log) = File.exist?(log) ? File.readlines(log).map { |l| JSON.parse(l) } : []

  around do |example|
    Dir.mktmpdir("aj-spec") do |dir|
      @log = File.join(dir, "runs.jsonl")
      example.run
    end
  end

  it "runs jobs of every argument kind, retries, discards, waits, mails, and leaves :async jobs alone" do
    result = in_app(<<~'RUBY', @log)
      require "./config/environment"
      require "bigdecimal"
      ActiveRecord::Base.connection.execute("CREATE TABLE IF NOT EXISTS widgets (id bigserial PRIMARY KEY, name text)")
      widget = Widget.create!(name: "gadget")
      def wait_for(log, timeout: 30)
        deadline = Time.now + timeout
        sleep 0.05 until (File.exist?(log) && yield(File.readlines(log).map { |l| JSON.parse(l) })) || Time.now > deadline
      end
      args = [nil, true, 42, 1.5, "text", :sym, BigDecimal("1.25"), Time.utc(2026, 1, 2, 3, 4, 5), Date.new(2026, 1, 2),
              3.days, { a: 1, "b" => [1, { c: :d }] }, ActiveSupport::HashWithIndifferentAccess.new(x: 1), [1, "two"], widget]
      job = RecordJob.perform_later(*args)
      flaky = FlakyJob.perform_later
      DiscardJob.perform_later
      boom = BoomJob.perform_later
      later_at = Time.now.to_f
      later = RecordJob.set(wait: 2).perform_later("later")
      NotifierMailer.hello("someone@example.com").deliver_later
      AsyncJob.perform_later
      %w[a b a b a b].each { |account| LimitedJob.perform_later(account) }
      bad = begin
        RecordJob.perform_later(Object.new)
        "nothing raised"
      rescue => e
        e.class.name
      end
      wait_for(ENV["AJ_SPEC_LOG"]) { |r| r.count { |x| x["job"] == "FlakyJob" } >= 3 && r.any? { |x| x["args"] == ["\"later\""] } }
      wait_for(ENV["AJ_SPEC_LOG"], timeout: 10) { ActionMailer::Base.deliveries.any? }
      wait_for(ENV["AJ_SPEC_LOG"]) { |r| r.count { |x| x["job"] == "LimitedJob" } >= 6 }
      boom_task = TaskerCore::Client.wait_for(boom.provider_job_id, timeout: 20)
      sleep 1 # FlakyJob's third failure escapes Active Job: its task fails
      bulk = Array.new(1000) { |i| NoopJob.new(i) }
      enqueued = TaskerCore::ActiveJob.enqueue_all(bulk)
      wait_for(ENV["AJ_SPEC_LOG"], timeout: 60) { |r| r.count { |x| x["job"] == "NoopJob" } >= 1000 }
      puts JSON.generate(
        "provider_job_id" => job.provider_job_id, "later_at" => later_at, "later_id" => later.job_id,
        "bad" => bad, "mails" => ActionMailer::Base.deliveries.map(&:subject),
        "boom" => { "status" => boom_task.status, "error" => boom_task.steps.first.error },
        "enqueued" => enqueued, "bulk_ids" => bulk.map(&:provider_job_id).compact.size,
        "flaky_id" => flaky.job_id, "namespaces" => TaskerCore.configuration.served_namespaces
      )
      TaskerCore.stop
    RUBY
    log = runs(@log)
    record = log.find { |r| r["job"] == "RecordJob" && r["args"].size == 14 }
    expect(record["args"]).to match(
      # A BigDecimal comes back as its String on Rails 6.1, as through every JSON queue (Rails 7.1
      # serializes it); everything else as it was given.
      ["nil", "true", "42", "1.5", "\"text\"", ":sym", "\"1.25\"", "2026-01-02 03:04:05 UTC", "Fri, 02 Jan 2026",
       "3 days", "{:a=>1, \"b\"=>[1, {:c=>:d}]}", "{\"x\"=>1}", "[1, \"two\"]", a_string_matching(/\AWidget#\d+:gadget\z/)]
    )
    expect(record["queue"]).to eq("default")
    expect(result["provider_job_id"]).to match(/\A\h{8}-\h{4}-\h{4}-\h{4}-\h{12}\z/)
    expect(log.select { |r| r["job"] == "FlakyJob" }.map { |r| r["executions"] }).to eq([1, 2, 3])
    expect(log.count { |r| r["job"] == "DiscardJob" }).to eq(1)
    later = log.find { |r| r["args"] == ["\"later\""] }
    expect(later["at"] - result["later_at"]).to be_between(1.9, 4.5)
    expect(result["mails"]).to eq(["hello from a job"])
    expect(log.find { |r| r["job"] == "AsyncJob" }).to include("adapter" => "ActiveJob::QueueAdapters::AsyncAdapter")
    expect(result["bad"]).to eq("ActiveJob::SerializationError")
    expect(result["boom"]["status"]).to eq("error")
    expect(result["boom"]["error"]).to include("error_class" => "TaskerCore::Errors::PermanentError",
                                               "message" => a_string_including("BoomJob", "ArgumentError: boom"),
                                               "retryable" => false)
    expect(result["boom"]["error"]["backtrace"].join).to include("boom_job.rb")
    expect(log.count { |r| r["job"] == "BoomJob" }).to eq(1) # no engine retry of an exception
    expect([result["enqueued"], result["bulk_ids"]]).to eq([1000, 1000])
    expect(log.select { |r| r["job"] == "NoopJob" }.map { |r| r["index"] }.sort).to eq((0...1000).to_a)
    expect(result["namespaces"]).to eq(%w[aj_default aj_mailers])
    # tasker_core_options concurrency: one run per account at a time, the two accounts side by side.
    limited = log.select { |r| r["job"] == "LimitedJob" }
    expect(limited.size).to eq(6)
    overlap = lambda do |runs|
      runs.flat_map { |r| [[r["started"], 1], [r["finished"], -1]] }.sort_by { |t, d| [t, d] }
          .reduce([0, 0]) { |(now, most), (_, d)| [now + d, [most, now + d].max] }.last
    end
    expect(limited.group_by { |r| r["account"] }.transform_values(&overlap)).to eq("a" => 1, "b" => 1)
    expect(overlap.call(limited)).to eq(2)
  end

  it "enqueues in the application's transaction: a rollback leaves no job, a commit runs it, a crash after commit loses none" do
    env = { "AJ_SPEC_TRANSACTION" => "1" }
    result = in_app(<<~'RUBY', @log, env: env)
      require "./config/environment"
      ActiveRecord::Base.connection.execute("CREATE TABLE IF NOT EXISTS widgets (id bigserial PRIMARY KEY, name text)")
      rolled = nil
      ActiveRecord::Base.transaction do
        Widget.create!(name: "rolled back")
        rolled = RecordJob.perform_later("rolled back")
        raise ActiveRecord::Rollback
      end
      committed = nil
      ActiveRecord::Base.transaction do
        Widget.create!(name: "kept")
        committed = RecordJob.perform_later("committed")
      end
      done = TaskerCore::Client.wait_for(committed.provider_job_id, timeout: 20)
      puts JSON.generate("rolled" => TaskerCore::Client.find_task(rolled.provider_job_id)&.status,
                         "committed" => done.status)
      TaskerCore.stop
    RUBY
    expect(result).to eq("rolled" => nil, "committed" => "complete")
    expect(runs(@log).map { |r| r["args"] }).to eq([["\"committed\""]])

    # A process that enqueues, commits and dies at once (it runs no worker): another runs the job.
    crashed = in_app(<<~'RUBY', @log, env: env.merge("AJ_SPEC_NO_START" => "1"), killed: true)
      require "./config/environment"
      TaskerCore.configure { |c| c.mode = :client }
      TaskerCore.start
      job = nil
      ActiveRecord::Base.transaction { job = RecordJob.perform_later("after a crash") }
      puts JSON.generate("id" => job.provider_job_id)
      $stdout.flush
      Process.kill(:KILL, Process.pid)
    RUBY
    worker = in_app(<<~RUBY, @log, env: env)
      require "./config/environment"
      puts JSON.generate("status" => TaskerCore::Client.wait_for(#{crashed['id'].dump}, timeout: 20).status)
      TaskerCore.stop
    RUBY
    expect(worker).to eq("status" => "complete")
    expect(runs(@log).map { |r| r["args"] }).to include(["\"after a crash\""])
  end

  it "runs jobs inline under TaskerCore::Testing.inline: scheduled ones and retries in time order, without sleeping" do
    result = in_app(<<~'RUBY', @log, env: { "AJ_SPEC_NO_START" => "1" })
      require "./config/environment"
      require "tasker_core/testing"
      TaskerCore.configure { |c| c.mode = :inline }
      TaskerCore.start
      held = nil
      started = Time.now
      tasks = TaskerCore::Testing.inline do
        RecordJob.set(wait: 5).perform_later("in 5 s")
        held = RecordJob.set(wait: 1).perform_later("in 1 s")
        RecordJob.perform_later("now")
        FlakyJob.perform_later # retry_on wait: 1, attempts: 3: runs at 0, +1 and +2 s
        NotifierMailer.hello("someone@example.com").deliver_later
        RecordJob.set(wait_until: Time.now + 5).perform_later("also in 5 s")
      end
      puts JSON.generate("seconds" => Time.now - started, "statuses" => tasks.map(&:status),
                         "held_id" => held.provider_job_id, "mails" => ActionMailer::Base.deliveries.size,
                         "threads" => TaskerCore.worker_threads)
      TaskerCore.stop
    RUBY
    order = runs(@log).map { |r| r["job"] == "RecordJob" ? r["args"].first : "#{r['job']} #{r['executions']}" }
    # Each task runs to its end before the next is created: the retry due at +1 s follows the
    # job due at +1 s (enqueued earlier), and the jobs due at +5 s come last, in their order.
    expect(order).to eq(["\"now\"", "FlakyJob 1", "\"in 1 s\"", "FlakyJob 2", "FlakyJob 3", "\"in 5 s\"",
                         "\"also in 5 s\""])
    expect(result["seconds"]).to be < 4 # no wait of 5 s
    # In the order created: the block's three, then the agenda's (FlakyJob's third run fails).
    expect(result["statuses"]).to eq(%w[complete complete complete complete complete error complete complete])
    expect(result["held_id"]).to match(/\A\h{8}-/)
    expect([result["mails"], result["threads"]]).to eq([1, 0])
  end

  it "leaves Rails' ActiveJob::TestHelper conventions working (a Minitest file in the application)" do
    run = lambda do
      Open3.capture2e({ "DATABASE_URL" => DatabaseSupport.url, "AJ_SPEC_LOG" => @log, "RAILS_ENV" => "test" },
                      RbConfig.ruby, "-I", lib_dir, "test/jobs_test.rb", chdir: app_dir)
    end
    out, status = defined?(Bundler) ? Bundler.with_unbundled_env(&run) : run.call
    expect(status).to be_success, out
    expect(out).to match(/4 runs, \d+ assertions, 0 failures, 0 errors, 0 skips/)
    expect(runs(@log).map { |r| r["job"] }.tally).to eq("RecordJob" => 2, "LimitedJob" => 1, "FlakyJob" => 1)
  end

  it "runs a job enqueued by a process that only enqueues in a `tasker_core worker --rails --queues` process" do
    exe = File.expand_path("../../exe/tasker_core", __dir__)
    output = Tempfile.new("aj-worker")
    env = { "DATABASE_URL" => DatabaseSupport.url, "AJ_SPEC_LOG" => @log, "RAILS_ENV" => "development",
            "AJ_SPEC_NO_START" => "1" }
    spawn = lambda do
      Process.spawn(env, RbConfig.ruby, "-I", lib_dir, exe, "worker", "--rails", "--queues", "default",
                    chdir: app_dir, out: output.path, err: %i[child out])
    end
    pid = defined?(Bundler) ? Bundler.with_unbundled_env(&spawn) : spawn.call
    deadline = Time.now + 60
    sleep 0.1 until File.read(output.path).include?("tasker_core worker") || Time.now > deadline
    expect(File.read(output.path)).to include("namespaces aj_default")
    result = in_app(<<~'RUBY', @log, env: { "AJ_SPEC_NO_START" => "1" })
      require "./config/environment"
      TaskerCore.configure { |c| c.mode = :client }
      TaskerCore.start
      job = RecordJob.perform_later("from a web process")
      puts JSON.generate("status" => TaskerCore::Client.wait_for(job.provider_job_id, timeout: 30).status)
      TaskerCore.stop
    RUBY
    expect(result).to eq("status" => "complete")
    expect(runs(@log).find { |r| r["args"] == ["\"from a web process\""] }).to include("pid" => pid)
  ensure
    if pid
      Process.kill(:TERM, pid)
      Process.wait(pid)
    end
  end
end
