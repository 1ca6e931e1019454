# frozen_string_literal: true

require "time"
require "tempfile"
require "timeout"
require File.join(EngineHelpers::FIXTURES, "isolation/handlers")

# Issue 11: a handler can do nothing that stops its worker. Each example makes a real handler
# misbehave on a real engine and PostgreSQL, then checks that the step's failure is recorded
# with the real error class and a clean message, that the very thread that ran the handler is
# still alive, that the pool is full, that another task completes within 2 s and that the
# engine stops.
RSpec.describe "handler isolation" do
  let(:templates) { File.join(EngineHelpers::FIXTURES, "isolation/templates") }

  around do |ex|
    IsolationHandlers.reset!
    with_engine(namespaces: ["spec_isolation"], template_paths: [templates], concurrency: 2, timeout_grace: 0.5) do
      ex.run
    ensure
      IsolationHandlers::Killable.released = true # before the engine stops
    end
  end

  def create(name, context = {})
    TaskerCore::Client.create_task(namespace: "spec_isolation", name: name, version: "1.0.0", context: context)
  end

  def run_step(name, context = {}, timeout: 10)
    TaskerCore::Client.wait_for(create(name, context).uuid, timeout: timeout).step("run")
  end

  # The step of task `uuid` once it is in `state`.
  def step_in(uuid, state, timeout: 10)
    eventually(timeout: timeout) do
      step = TaskerCore::Client.find_task(uuid).step("run")
      step if step.state == state
    end
  end

  def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # Health reasons about the handler threads (named breakers are process-wide: other specs in
  # the same process may leave one open, so the overall status is not checked).
  def thread_reasons(health = TaskerCore.health)
    health["reasons"].grep(/handler threads/)
  end

  def clean?(text)
    text.is_a?(String) && text.encoding == Encoding::UTF_8 && text.valid_encoding? && !text.include?("\0")
  end

  def expect_recorded(step, error_class:, message:, attempts: 1, retryable: true, state: "error")
    expect(step.state).to eq(state)
    expect(step.attempts).to eq(attempts)
    expect(step.error).to include("error_class" => error_class, "retryable" => retryable)
    expect(step.error["message"]).to(message.is_a?(Regexp) ? match(message) : eq(message))
    expect(step.error["backtrace"]).to be_an(Array)
    expect(step.error["backtrace"].size).to be <= 50
    expect([step.error["message"], step.error["error_class"], *step.error["backtrace"]]).to all(satisfy { |s| clean?(s) })
    expect(step.transitions.last.metadata).to include("error_class" => error_class)
  end

  # The threads that ran the handler are alive and serving (none died and was replaced), the
  # pool is full and healthy, the next task completes within 2 s, and the engine stops cleanly.
  def expect_worker_unharmed
    ran_on = []
    ran_on << IsolationHandlers.ran_on.pop until IsolationHandlers.ran_on.empty?
    expect(ran_on).not_to be_empty
    expect(ran_on).to all(satisfy { |t| t.alive? && t.status != "aborting" })
    expect(TaskerCore.worker_threads).to eq(2)
    expect(thread_reasons).to be_empty

    started = monotonic
    expect(run_step("plain", timeout: 2).result).to eq("ok" => true)
    expect(monotonic - started).to be < 2

    expect(TaskerCore.stop(timeout: 5)).to be(true)
    expect(TaskerCore.running?).to be(false)
    expect(TaskerCore.stop).to be(false)
  end

  it "records a binary (invalid UTF-8) message with its invalid byte replaced" do
    step = run_step("binary_message")
    expect_recorded(step, error_class: "RuntimeError", message: "bad \uFFFD")
    expect(step.error["backtrace"].first).to match(%r{isolation/handlers\.rb:\d+})
    expect_worker_unharmed
  end

  it "records a message with a NUL byte, the NUL replaced" do
    step = run_step("nul_message")
    expect_recorded(step, error_class: "ArgumentError", message: "before\uFFFDafter")
    expect_worker_unharmed
  end

  it "records an exception whose #message (and class name) raise under its real class name" do
    step = run_step("raising_message")
    expect_recorded(step, error_class: "IsolationHandlers::RaisingMessage::Unprintable",
                          message: "(message unavailable: IsolationHandlers::RaisingMessage::Unprintable#message " \
                                   "raised NoMethodError)")
    expect_worker_unharmed
  end

  it "records a garbage backtrace as at most 50 bounded, clean lines" do
    step = run_step("garbage_backtrace")
    expect_recorded(step, error_class: "IsolationHandlers::GarbageBacktrace::Garbled", message: "garbled backtrace")
    backtrace = step.error["backtrace"]
    expect(backtrace.size).to eq(50)
    expect(backtrace.first(6)).to eq(["", "42", "fine.rb:1:in `call'", "bin \uFFFD\uFFFD", "nul \uFFFD here",
                                      backtrace[5]])
    expect(backtrace[5]).to match(/\A#<Object:0x\h+>\z/)
    expect(backtrace[6].bytesize).to be <= 1024
    expect(backtrace[6]).to end_with("[truncated: 100000 bytes]")
    expect(backtrace.last).to eq("filler.rb:42")
    expect_worker_unharmed
  end

  it "treats StepHandlerCallResult.error(retry_after: Object.new) as no retry_after (the computed backoff)" do
    started = monotonic
    step = run_step("retry_after_object")
    expect(monotonic - started).to be < 5 # backoff_base_ms 10, not an hour
    expect_recorded(step, error_class: "TaskerCore::Errors::RetryableError", message: "try later", attempts: 2)
    expect(step.error).not_to have_key("retry_after_seconds")
    expect(step.transitions.map(&:to_state))
      .to eq(%w[pending enqueued in_progress waiting_for_retry enqueued in_progress error])
    expect_worker_unharmed
  end

  it "clamps RetryableError retry_after: 1e300 to the engine's ceiling of one hour" do
    task = create("retry_after_huge")
    step = step_in(task.uuid, "waiting_for_retry")
    expect_recorded(step, error_class: "TaskerCore::Errors::RetryableError", message: "much later",
                          state: "waiting_for_retry")
    expect(step.error["retry_after_seconds"]).to eq(3600.0)
    expect(Time.parse(step.next_retry_at) - Time.now).to be_within(120).of(3600)
    expect_worker_unharmed
  end

  it "uses the computed backoff for a String, NaN or negative retry_after, and clamps Infinity" do
    tasks = %w[string nan negative infinity].to_h { |value| [value, create("retry_after_value", "value" => value)] }
    %w[string nan negative].each do |value|
      step = TaskerCore::Client.wait_for(tasks[value].uuid, timeout: 10).step("run")
      expect_recorded(step, error_class: "TaskerCore::Errors::RetryableError", message: "retry_after #{value}",
                            attempts: 2)
      expect(step.error).not_to have_key("retry_after_seconds")
    end
    infinite = step_in(tasks["infinity"].uuid, "waiting_for_retry")
    expect(infinite.error["retry_after_seconds"]).to eq(3600.0)
    expect_worker_unharmed
  end

  it "records a SystemStackError from runaway recursion as a retryable fault, not a timeout" do
    step = run_step("stack_overflow")
    expect_recorded(step, error_class: "SystemStackError", message: "stack level too deep")
    expect(step.error["backtrace"].size).to eq(50)
    expect(step.error["backtrace"]).to all(match(%r{isolation/handlers\.rb:\d+:in `f'}))
    expect_worker_unharmed
  end

  it "records a raised NoMemoryError" do
    expect_recorded(run_step("no_memory"), error_class: "NoMemoryError", message: "NoMemoryError")
    expect_worker_unharmed
  end

  it "records a bare Exception" do
    expect_recorded(run_step("bare_exception"), error_class: "Exception", message: "x")
    expect_worker_unharmed
  end

  it "records an Interrupt raised in a handler (signals reach the main thread, not handlers)" do
    expect_recorded(run_step("interrupt"), error_class: "Interrupt", message: "Interrupt")
    expect_worker_unharmed
  end

  it "records `exit` in a handler as the step's failure; the process keeps running" do
    expect_recorded(run_step("calls_exit"), error_class: "SystemExit", message: "exit")
    expect(Process.pid).to eq(TaskerCore.health["pid"])
    expect_worker_unharmed
  end

  it "replaces a handler thread killed from outside at once, reports its step failed, degraded until then" do
    task = create("killable")
    victim = Timeout.timeout(5) { IsolationHandlers::Killable.started.pop }
    expect(thread_reasons).to be_empty

    victim.kill
    # The killed handler's `ensure` still runs: the pool is one thread short.
    degraded = eventually(timeout: 2) { (h = TaskerCore.health)["handler_threads"]["total"] == 1 && h }
    expect(degraded["status"]).to eq("degraded")
    expect(thread_reasons(degraded)).to eq(["handler threads 1 of 2 alive"])
    expect(TaskerCore.worker_threads).to eq(1)

    released = monotonic
    IsolationHandlers::Killable.released = true
    eventually(timeout: 2) { !victim.alive? && TaskerCore.worker_threads == 2 }
    expect(monotonic - released).to be < 0.5

    step = step_in(task.uuid, "error", timeout: 2) # reported, not left for its claim to expire
    expect(step.error).to include("error_class" => "TaskerCore::Worker::ThreadDied", "retryable" => true)
    expect(step.error["message"]).to match(/\Ahandler thread tasker-worker-\d+ was killed while running step run\z/)
    expect(thread_reasons).to be_empty

    started = monotonic
    expect(run_step("plain", timeout: 2).result).to eq("ok" => true)
    expect(monotonic - started).to be < 2
    expect(TaskerCore.stop(timeout: 5)).to be(true)
    expect(TaskerCore.running?).to be(false)
  end

  it "replaces an idle handler thread that dies of an exception raised into it" do
    pool = Thread.list.select { |t| t.name&.start_with?("tasker-worker-") && !t[:tasker_retired] }
    expect(pool.size).to eq(2)
    victim = pool.first
    victim.raise(Exception, "from outside")
    eventually(timeout: 1) { !victim.alive? && TaskerCore.worker_threads == 2 }
    expect(thread_reasons).to be_empty

    started = monotonic
    expect(run_step("plain", timeout: 2).result).to eq("ok" => true)
    expect(monotonic - started).to be < 2
    expect(TaskerCore.stop(timeout: 5)).to be(true)
  end
end

RSpec.describe "exe/tasker_core worker with misbehaving handlers" do
  let(:exe) { File.expand_path("../../exe/tasker_core", __dir__) }
  let(:templates) { File.join(EngineHelpers::FIXTURES, "isolation/templates") }

  it "keeps serving, stays healthy, and still drains and exits 0 on SIGTERM" do
    out = Tempfile.new("worker")
    pid = Process.spawn({ "DATABASE_URL" => DatabaseSupport.url, "RUBYLIB" => File.expand_path("../../lib", __dir__) },
                        RbConfig.ruby, exe, "worker", "--namespaces", "spec_isolation", "--concurrency", "2",
                        "--templates", templates, "-r", File.join(EngineHelpers::FIXTURES, "isolation/handlers.rb"),
                        out: out.path, err: %i[child out])
    eventually(timeout: 20) { File.read(out.path).include?("namespaces spec_isolation, 2 threads") }
    with_engine(template_paths: [templates]) do
      create = lambda do |name|
        TaskerCore::Client.create_task(namespace: "spec_isolation", name: name, version: "1.0.0", context: {})
      end
      # Twice as many killers as threads, all at once: each would have killed a thread.
      tasks = %w[binary_message raising_message stack_overflow bare_exception calls_exit interrupt].map(&create)
      tasks.each { |t| expect(TaskerCore::Client.wait_for(t.uuid, timeout: 20).status).to eq("error") }
      huge = create.call("retry_after_huge")
      eventually(timeout: 10) { TaskerCore::Client.find_task(huge.uuid).step("run").state == "waiting_for_retry" }
      expect(TaskerCore::Client.wait_for(create.call("plain").uuid, timeout: 2).status).to eq("complete")
    end
    Process.kill(:TERM, pid)
    _, status = Process.wait2(pid)
    pid = nil
    expect(status.exitstatus).to eq(0)
    expect(File.read(out.path)).to include("TERM received, draining")
    expect(File.read(out.path)).not_to match(/worker thread stopped|replaces it/)
  ensure
    begin
      Process.kill(:KILL, pid) if pid
    rescue Errno::ESRCH
      nil
    end
  end
end
