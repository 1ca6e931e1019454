# frozen_string_literal: true

# Concurrency and rate limits per key, enforced in PostgreSQL across processes
# (docs/flow-control.md), and pausing one template.
RSpec.describe "flow limits" do
  def template(name, step_extra: "", top_extra: "", timeout: 30)
    <<~YAML
      name: #{name}
      namespace: spec_flow
      version: "1.0.0"
      #{top_extra}
      steps:
        - name: work
          handler: { callable: SpecHandlers::Timed }
          timeout_seconds: #{timeout}
          #{step_extra}
    YAML
  end

  let(:templates) do
    {
      "limited.yaml" => template("limited", top_extra: "concurrency: { key: context.account, limit: 2 }"),
      "hang.yaml" => template("hang", top_extra: "concurrency: { key: context.account, limit: 2 }", timeout: 2),
      "rated.yaml" => template("rated", step_extra: "rate_limit: { key: context.api, limit: 20, per: 1 }"),
      "plain.yaml" => template("plain")
    }
  end

  def worker_code(dir, concurrency: 8)
    <<~RUBY
      TaskerCore.configure do |c|
        c.namespaces = ["spec_flow"]
        c.template_paths = [#{dir.dump}]
        c.concurrency = #{concurrency}
        c.poll_interval = 0.1
        c.claim_grace = 1
        c.logger = ::Logger.new(nil)
      end
      TaskerCore.start
      puts "ready"
      trap("TERM") { Thread.new { TaskerCore.stop(timeout: 5); exit!(0) } }
      sleep
    RUBY
  end

  def start_worker(dir, env: {})
    child = spawn_ruby(worker_code(dir), env: env)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
    sleep 0.05 until child.read.include?("ready") || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    raise "worker did not start:\n#{child.read}" unless child.read.include?("ready")

    child
  end

  def create(name, contexts)
    TaskerCore::Client.create_tasks(contexts.map { |c| { namespace: "spec_flow", name: name, version: "1.0.0", context: c } })
  end

  def finish(tasks, timeout: 60)
    tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: timeout) }
  end

  # The most intervals of one group that are open at once.
  def max_overlap(intervals)
    intervals.flat_map { |s, f| [[s, 1], [f, -1]] }.sort_by { |t, d| [t, d] }
             .reduce([0, 0]) { |(now, most), (_, d)| [now + d, [most, now + d].max] }.last
  end

  around do |example|
    with_template_dir(templates) do |dir|
      @dir = dir
      with_engine(namespaces: ["spec_flow"], template_paths: [dir], concurrency: 8, claim_grace: 1) { example.run }
    end
  ensure
    psql("DELETE FROM tasker.paused_templates WHERE namespace = 'spec_flow'")
  end

  it "runs at most `limit` steps per key at once across two processes, each on its first attempt" do
    start_worker(@dir)
    contexts = Array.new(200) { |i| { "account" => "acct_#{i % 10}", "sleep" => 0.05 } }
    done = finish(create("limited", contexts))
    expect(done.map(&:status).tally).to eq("complete" => 200)
    expect(done.map { |t| t.step("work").attempts }.uniq).to eq([1])
    by_key = done.group_by { |t| t.context["account"] }
    overlaps = by_key.transform_values { |ts| max_overlap(ts.map { |t| t.step("work").result.values_at("started", "finished") }) }
    expect(overlaps.values.max).to eq(2) # the limit was reached, and never passed
    expect(done.map { |t| t.step("work").result["pid"] }.uniq.size).to eq(2) # both processes ran steps
    expect(psql("SELECT count(*) FROM tasker.concurrency_slots")).to eq("0")
    expect(psql("SELECT count(*) FROM tasker.flow_waiters")).to eq("0")
  end

  it "frees a killed process's slots when its claims expire" do
    TaskerCore.stop # only the child runs steps at first; this process creates tasks
    TaskerCore.configuration.mode = :client
    TaskerCore.start
    child = start_worker(@dir, env: { "FLOW_SPEC_HANG" => "1" })
    tasks = create("hang", Array.new(6) { { "account" => "acct_k" } })
    deadline = Time.now + 20
    sleep 0.05 until psql("SELECT count(*) FROM tasker.concurrency_slots WHERE key LIKE '%:acct_k'") == "2" || Time.now > deadline
    expect(psql("SELECT count(*) FROM tasker.concurrency_slots WHERE key LIKE '%:acct_k'")).to eq("2")
    sleep 0.3
    expect(psql("SELECT count(*) FROM tasker.workflow_steps WHERE state = 'in_progress' AND flow IS NOT NULL")).to eq("2")
    Process.kill(:KILL, child.pid)

    TaskerCore.stop # timeout 2 s + grace 1 s: the dead process's slots are free after 3 s
    TaskerCore.configuration.mode = :embedded
    TaskerCore.start
    done = finish(tasks, timeout: 30)
    expect(done.map(&:status).uniq).to eq(["complete"])
    expect(done.map { |t| t.step("work").attempts }.sort).to eq([1, 1, 1, 1, 2, 2])
  end

  it "starts no more than the rate limit in any window, across two processes" do
    start_worker(@dir)
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    done = finish(create("rated", Array.new(200) { { "api" => "key_1" } }), timeout: 60)
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
    expect(done.map(&:status).uniq).to eq(["complete"])
    expect(done.map { |t| t.step("work").attempts }.uniq).to eq([1])
    starts = psql(<<~SQL).split("\n").map(&:to_f).sort
      SELECT extract(epoch FROM t.created_at) FROM tasker.workflow_step_transitions t
        JOIN tasker.tasks k ON k.task_uuid = t.task_uuid
       WHERE k.task_uuid IN (#{done.map { |t| "'#{t.uuid}'" }.join(',')}) AND t.to_state = 'in_progress'
    SQL
    expect(starts.size).to eq(200)
    # Starts are recorded a moment after their admission: windows of 1 s less 50 ms of slack.
    most = starts.each_index.map { |i| starts[i..].take_while { |t| t - starts[i] < 0.95 }.size }.max
    expect(most).to be <= 20
    expect(took).to be_between(9.0, 20.0)
    expect(done.map { |t| t.step("work").result["pid"] }.uniq.size).to eq(2)
  end

  it "holds a paused template's steps (not the namespace's others) and starts them at once on resume" do
    expect(TaskerCore.pause(namespace: "spec_flow", template: "limited", reason: "vendor outage")).to be(true)
    held = create("limited", Array.new(10) { |i| { "account" => "a#{i}" } })
    free = create("plain", Array.new(5) { {} })
    expect(finish(free, timeout: 15).map(&:status).uniq).to eq(["complete"])
    sleep 0.5
    expect(held.map { |t| TaskerCore::Client.find_task(t.uuid).step("work").state }.uniq).to eq(["enqueued"])
    expect(TaskerCore.paused).to include(a_hash_including("namespace" => "spec_flow", "template" => "limited",
                                                          "reason" => "vendor outage"))
    expect(TaskerCore.health["paused"]).to include("spec_flow/limited")
    TaskerCore::Web.authorize { |_request| :read_only }
    _, _, body = TaskerCore::Web.call("REQUEST_METHOD" => "GET", "PATH_INFO" => "/queues", "HTTP_ACCEPT" => "application/json")
    expect(JSON.parse(body.join)["paused_templates"]).to include(a_hash_including("template" => "limited"))
    _, _, page = TaskerCore::Web.call("REQUEST_METHOD" => "GET", "PATH_INFO" => "/queues", "HTTP_ACCEPT" => "text/html")
    expect(page.join).to include("Paused templates", "vendor outage")
    TaskerCore::Web.reset!

    resumed = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect(TaskerCore.resume(namespace: "spec_flow", template: "limited")).to be(true)
    done = finish(held, timeout: 15)
    expect(done.map(&:status).uniq).to eq(["complete"])
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - resumed).to be < 5 # woken, not the minute's re-check
    expect(done.map { |t| t.step("work").attempts }.uniq).to eq([1])
    expect(TaskerCore.resume(namespace: "spec_flow", template: "limited")).to be(false)
    expect { TaskerCore.pause(namespace: "spec_flow", template: "nope") }
      .to raise_error(TaskerCore::Errors::NotFoundError, %r{no template spec_flow/nope})
  end

  it "refuses bad limits when a template loads, naming the template and the step" do
    [["concurrency: { key: context.account, limit: 0 }", %r{step 'work': template spec_flow/bad: concurrency.limit must be}],
     ["rate_limit: { key: \"context..api\", limit: 5, per: 1 }", /step 'work': .*rate_limit.key "context..api" is not a path/],
     ["rate_limit: { key: api, limit: 5, per: -1 }", /rate_limit.per must be a number of seconds/],
     ["rate_limit: { key: api, limit: 5 }", /missing field `per`/]].each do |extra, message|
      with_template_dir("bad.yaml" => template("bad", step_extra: extra)) do |dir|
        expect { TaskerCore::Native.validate_templates([dir]) }.to raise_error(TaskerCore::Errors::TemplateError, message)
      end
    end
  end

  it "counts a task whose context lacks the key under \"<missing>\"" do
    done = finish(create("limited", [{}, { "account" => nil }]))
    expect(done.map(&:status).uniq).to eq(["complete"])
    flows = psql("SELECT DISTINCT flow->'concurrency'->>'key' FROM tasker.workflow_steps s JOIN tasker.tasks t " \
                 "USING (task_uuid) WHERE t.task_uuid IN ('#{done[0].uuid}', '#{done[1].uuid}')")
    expect(flows).to eq("spec_flow/limited:<missing>")
  end
end

RSpec.describe TaskerCore::RateLimit do
  around do |example|
    with_engine { example.run }
  end

  it "takes starts within the limit and waits for the window to let more" do
    name = "spec_api_#{SecureRandom.hex(4)}"
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    12.times { described_class.acquire(name, key: "tok", limit: 5, per: 0.5) }
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
    expect(took).to be >= 1.0 # 12 starts at 5 per 0.5 s: two full windows waited
    5.times { described_class.acquire(name, key: "full", limit: 5, per: 30, timeout: 0) }
    expect { described_class.acquire(name, key: "full", limit: 5, per: 30, timeout: 0) }.to raise_error(
      TaskerCore::Errors::RateLimitedError, /allows no start/
    ) { |e| expect(e.retry_after).to be_between(29.0, 30.0) }
    expect(described_class.acquire(name, key: "other", limit: 5, per: 30, timeout: 0)).to be(true)
  end

  it "rejects bad names, limits and windows" do
    expect { described_class.acquire("bad name", limit: 1, per: 1) }.to raise_error(TaskerCore::Errors::ValidationError, /name/)
    expect { described_class.acquire(:ok, limit: 0, per: 1) }.to raise_error(TaskerCore::Errors::ValidationError, /limit/)
    expect { described_class.acquire(:ok, limit: 1, per: 0) }.to raise_error(TaskerCore::Errors::ValidationError, /per/)
  end
end
