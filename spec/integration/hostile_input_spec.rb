# frozen_string_literal: true

require "securerandom"
require_relative "../fixtures/handlers/hostile_handlers"

# Issue 11: input no caller should send, sent anyway. Every case ends in a gem error or a
# recorded permanent failure; nothing panics, hangs, retries forever or sticks in a queue.
RSpec.describe "hostile input" do
  BAD_NUMBERS = [Float::NAN, Float::INFINITY * -1, 1e300, -1, 10**30, nil, "soon", Object.new].freeze

  def create(context, **options)
    TaskerCore::Client.create_task(namespace: "spec_hostile", name: "hostile", version: "1.0.0",
                                   context: context, **options)
  end

  def run_to_end(make)
    TaskerCore::Client.wait_for(create({ "make" => make }).uuid, timeout: 15)
  end

  describe "numbers crossing into Rust" do
    around { |ex| with_engine(namespaces: ["spec_hostile"], template_paths: [fixture_templates]) { ex.run } }

    it "refuses each bad number with a gem error at every entry point that takes one" do
      task = create({ "make" => "deep_ok" })
      BAD_NUMBERS.each do |bad|
        expect { TaskerCore::Client.wait_for(task.uuid, timeout: bad) }
          .to raise_error(TaskerCore::Errors::ValidationError, /wait_for timeout/), "wait_for(timeout: #{bad.inspect})"
        expect { TaskerCore::Client.find_tasks(correlation_id: task.correlation_id, limit: bad) }
          .to raise_error(TaskerCore::Errors::ValidationError, /limit must be an Integer/), "find_tasks(limit: #{bad.inspect})"
        unless bad == -1 # a valid priority
          expect { create({}, priority: bad) }.to raise_error(TaskerCore::Errors::ValidationError), "priority: #{bad.inspect}"
        end
        expect { TaskerCore.engine.next_step(bad) }
          .to raise_error(TaskerCore::Errors::ValidationError, /next_step timeout/), "next_step(#{bad.inspect})"
        next if bad.nil? # nil: keep the current value

        expect { TaskerCore.configure_circuit_breaker(:hostile_spec, timeout: bad) }
          .to raise_error(TaskerCore::Errors::ConfigurationError), "breaker timeout: #{bad.inspect}"
        expect { TaskerCore.configure_circuit_breaker(namespace: "spec_hostile", failure_threshold: bad) }
          .to raise_error(TaskerCore::Errors::ConfigurationError), "breaker failure_threshold: #{bad.inspect}"
      end
      # The engine is untouched by all of it: the task completes, waited for without a limit.
      expect(TaskerCore::Client.wait_for(task.uuid, timeout: Float::INFINITY).status).to eq("complete")
      expect(TaskerCore.worker_threads).to eq(2)
    end
  end

  it "refuses a bad stop timeout without stopping, and stops with no limit for Float::INFINITY" do
    with_engine(namespaces: ["spec_hostile"], template_paths: [fixture_templates]) do
      BAD_NUMBERS.each do |bad|
        expect { TaskerCore.stop(timeout: bad) }
          .to raise_error(TaskerCore::Errors::ValidationError, /stop timeout/), "stop(timeout: #{bad.inspect})"
      end
      expect(TaskerCore.running?).to be(true)
      expect(TaskerCore::Client.wait_for(create({ "make" => "deep_ok" }).uuid, timeout: 15).status).to eq("complete")
      expect(TaskerCore.stop(timeout: Float::INFINITY)).to be(true)
      expect(TaskerCore.running?).to be(false)
    end
  end

  it "refuses each bad number for every setting in seconds, naming the setting" do
    %i[requeue_after queue_lock_timeout poll_interval shutdown_timeout timeout_grace].each do |setting|
      (BAD_NUMBERS + [Float::INFINITY, 0]).each do |bad|
        config = TaskerCore::Configuration.new
        config.database_url = DatabaseSupport.url
        config.public_send(:"#{setting}=", bad)
        expect { config.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, /#{setting}/),
                                       "#{setting} = #{bad.inspect}"
      end
    end
    expect do
      TaskerCore::Configuration.new.tap { |c| c.circuit_breakers = { pgmq: { timeout: 1e300 } } }.validate!
    end.to raise_error(TaskerCore::Errors::ConfigurationError, /timeout/)
  end

  describe "values PostgreSQL cannot store" do
    around { |ex| with_engine(namespaces: ["spec_hostile"], template_paths: [fixture_templates]) { ex.run } }

    it "refuses them in a context, a key or an argument with a ValidationError naming the place" do
      cases = {
        -> { create({ "k" => "a\0b" }) } => /context\["k"\]: string contains a NUL byte/,
        -> { create({ "a\0b" => 1 }) } => /a hash key contains a NUL byte/,
        -> { create({ "k" => [:"a\0b"] }) } => /symbol contains a NUL byte/,
        -> { create({ "n" => 10**140_000 }) } => /140001 digits is beyond what PostgreSQL can store/,
        -> { create({ "bad \xff".b => 1 }) } => /a hash key is not valid UTF-8/,
        -> { create({ "k" => "bad \xff".b }) } => /string is not valid UTF-8/,
        -> { create({}, idempotency_key: "a\0b") } => /idempotency_key contains a NUL byte/,
        -> { create({}, idempotency_key: "bad \xff".b) } => /idempotency_key is not valid UTF-8/,
        -> { create({}, correlation_id: "\0") } => /correlation_id contains a NUL byte/,
        -> { TaskerCore::Client.create_task(namespace: "spec\0hostile", name: "hostile", version: "1.0.0", context: {}) } =>
          /namespace contains a NUL byte/,
        -> { TaskerCore::Client.find_task("bad \xff".b) } => /task uuid is not valid UTF-8/,
        -> { create({ "deep" => HostileHandlers.nested(100) }) } => /nested deeper than 100 levels/
      }
      cases.each do |call, message|
        expect(&call).to raise_error(TaskerCore::Errors::ValidationError, message)
      end
      expect(TaskerCore::Client.find_tasks(correlation_id: SecureRandom.uuid, limit: 10)).to eq([])
    end

    it "fails a step whose result or metadata cannot be stored, permanently, on its first attempt" do
      {
        "nul_result" => /result\["text"\]: string contains a NUL byte/,
        "nul_key" => /result: a hash key contains a NUL byte/,
        "nul_metadata" => /metadata\["m"\]: string contains a NUL byte/,
        "huge_integer" => /140001 digits/,
        "invalid_utf8" => /not valid UTF-8/,
        "too_deep" => /nested deeper than 100 levels/
      }.each do |make, message|
        done = run_to_end(make)
        step = done.step("make")
        expect([done.status, step.state, step.attempts]).to eq(["error", "error", 1]), make
        expect(step.error).to include("error_class" => "TaskerCore::Errors::InvalidResultError", "retryable" => false)
        expect(step.error["message"]).to match(message)
      end
      expect(TaskerCore.worker_threads).to eq(2)
    end

    it "accepts exactly the depth it can read back, in a context and in a result" do
      deep_context = { "make" => "context_depth", "deep" => HostileHandlers.nested(99) }
      done = TaskerCore::Client.wait_for(create(deep_context).uuid, timeout: 15)
      expect(done.status).to eq("complete")
      expect(done.step("make").result).to eq("depth" => 100)
      expect(done.context).to eq(deep_context)

      result = run_to_end("deep_ok")
      expect(result.status).to eq("complete")
      expect(result.step("make").result).to eq("deep" => HostileHandlers.nested(99))
    end
  end

  describe "poison rows in a queue" do
    let(:valid) { 5 }

    def insert_row(queue, message_sql)
      psql("INSERT INTO pgmq.q_#{queue} (vt, message) VALUES (now(), #{message_sql}) RETURNING msg_id").to_i
    end

    def archived_reason(queue, msg_id)
      eventually(timeout: 15) do
        psql("SELECT headers->>'tasker_archive_reason' FROM pgmq.a_#{queue} WHERE msg_id = #{msg_id}")
          .then { |r| r.empty? ? nil : r }
      end
    end

    let(:deep_json) { "(repeat('[', 200) || '1' || repeat(']', 200))::jsonb" }

    it "archives a NULL and a 200-deep row one by one; the valid messages read with them run" do
      with_engine(namespaces: ["spec_hostile"], template_paths: [fixture_templates]) { nil } # the queue exists
      tasks = nil
      ids = nil
      with_engine(namespaces: [], template_paths: [fixture_templates]) do
        ids = [insert_row("tasker_ns_spec_hostile", "NULL"), insert_row("tasker_ns_spec_hostile", deep_json)]
        tasks = Array.new(valid) { create({ "make" => "deep_ok" }) }
        TaskerCore::Client.request_task(namespace: "spec_hostile", name: "hostile", version: "1.0.0",
                                        context: { "make" => "deep_ok" }, idempotency_key: "poison-neighbour")
        ids += [insert_row("tasker_task_requests", "NULL"), insert_row("tasker_task_requests", deep_json)]
      end
      with_engine(namespaces: ["spec_hostile"], template_paths: [fixture_templates], concurrency: 8) do
        tasks.each { |t| expect(TaskerCore::Client.wait_for(t.uuid, timeout: 15).status).to eq("complete") }
        expect(archived_reason("tasker_ns_spec_hostile", ids[0])).to match(/not a step message: the message is NULL/)
        expect(archived_reason("tasker_ns_spec_hostile", ids[1])).to match(/not a step message: the message is array/)
        expect(archived_reason("tasker_task_requests", ids[2])).to match(/malformed task request: the message is NULL/)
        expect(archived_reason("tasker_task_requests", ids[3])).to match(/nested too deeply/)
        requested = eventually(timeout: 15) do
          psql("SELECT task_uuid FROM tasker.tasks WHERE idempotency_key = 'poison-neighbour'").then { |r| r.empty? ? nil : r }
        end
        expect(TaskerCore::Client.wait_for(requested, timeout: 15).status).to eq("complete")
        expect(psql("SELECT count(*) FROM pgmq.q_tasker_ns_spec_hostile").to_i).to eq(0)
      end
    end
  end
end
