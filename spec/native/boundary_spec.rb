# frozen_string_literal: true

require "timeout"

RSpec.describe "the native boundary" do
  it "loads the extension and requires an explicit start" do
    expect(TaskerCore::Native::LOADED).to be(true)
    expect(TaskerCore.running?).to be(false)
    expect { TaskerCore::Client.find_task("01a212e2-9b26-70b3-8e02-606669bd87ed") }
      .to raise_error(TaskerCore::Errors::NotStartedError, /TaskerCore.start/)
  end

  context "with a running engine" do
    around { |ex| with_engine(namespaces: ["spec_boundary"], template_paths: [fixture_templates]) { ex.run } }

    it "releases the GVL while waiting and lets Thread#kill interrupt next_step" do
      ticks = 0
      ticker = Thread.new do
        loop do
          ticks += 1
          sleep 0.01
        end
      end
      waiter = Thread.new { TaskerCore.engine.next_step(30) }
      sleep 0.3
      expect(ticks).to be > 10 # other Ruby threads kept running
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      waiter.kill
      expect(waiter.join(5)).to eq(waiter)
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 2
      expect(waiter.alive?).to be(false)
      # The interrupted call released everything it held: stop does not wait for it.
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect(TaskerCore.stop(timeout: 5)).to be(true)
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 2
    ensure
      ticker&.kill
    end

    it "lets Timeout interrupt a wait" do
      expect { Timeout.timeout(0.2) { TaskerCore.engine.next_step(30) } }.to raise_error(Timeout::Error)
    end

    it "round-trips integers of any size, nested values and metadata exactly" do
      task = TaskerCore::Client.create_task(namespace: "spec_boundary", name: "big_numbers", version: "1.0.0",
                                            context: { "n" => 2**100, sym: [:a, 1.25] })
      done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
      expect(done.status).to eq("complete")
      expect(done.context).to eq("n" => 2**100, "sym" => ["a", 1.25])
      produced = done.step("produce").result
      expect(produced["big"]).to eq(6**64)
      expect(produced["negative"]).to eq(-(7**50))
      expect(produced["nested"]).to eq("list" => [1, "two", nil, true], "sym" => "value")
      expect(produced["echo"]).to eq("n" => 2**100, "sym" => ["a", 1.25])
      consumed = done.step("consume")
      expect(consumed.result).to eq(6**64 + 1)
      expect(consumed.metadata).to eq("saw_classes" => %w[Integer String], "config_frozen" => true,
                                      "config" => { "mode" => "strict", "limits" => { "max" => 3 } })
    end

    it "raises clear errors for wrong types across the boundary" do
      expect { TaskerCore.engine.create_task(42) }.to raise_error(TypeError)
      expect { TaskerCore.engine.find_task("not-a-uuid") }
        .to raise_error(TaskerCore::Errors::ValidationError, /not a UUID/)
      expect do
        TaskerCore.engine.wait_for(nil, 1.0)
      end.to raise_error(TaskerCore::Errors::ValidationError, /task uuid must be a String/)
      expect do
        TaskerCore.engine.create_task("namespace" => "spec_boundary", "name" => "big_numbers", "version" => "1.0.0",
                                      "context" => [1, 2], "correlation_id" => nil, "parent_correlation_id" => nil,
                                      "idempotency_key" => nil, "priority" => 0)
      end.to raise_error(TaskerCore::Errors::ValidationError, /context must be a JSON object/)
      expect do
        TaskerCore::Client.create_task(namespace: "spec_boundary", name: "big_numbers", version: "1.0.0",
                                       context: { "when" => Time.now })
      end.to raise_error(TaskerCore::Errors::ValidationError, /context\["when"\]: a Time has no JSON form/)
      expect do
        TaskerCore::Client.create_task(namespace: "spec_boundary", name: "big_numbers", version: "1.0.0",
                                       context: { "x" => Float::NAN })
      end.to raise_error(TaskerCore::Errors::ValidationError, /NaN has no JSON representation/)
    end

    it "refuses a cyclic structure instead of overflowing the stack" do
      cyclic = {}
      cyclic["self"] = cyclic
      expect do
        TaskerCore::Client.create_task(namespace: "spec_boundary", name: "big_numbers", version: "1.0.0",
                                       context: cyclic)
      end.to raise_error(TaskerCore::Errors::ValidationError, /deeper than 100 levels/)
    end
  end

  it "lets an interrupt end a blocking operation (a connection to a server that never answers)" do
    require "socket"
    silent = TCPServer.new("127.0.0.1", 0) # accepts, never speaks
    url = "postgres://nobody@127.0.0.1:#{silent.addr[1]}/none"
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect { Timeout.timeout(0.3) { TaskerCore::Native.migrate(url) } }.to raise_error(Timeout::Error)
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 2
  ensure
    silent&.close
  end

  it "owns the engine as an object: a reference kept past stop is a stopped engine, not a crash" do
    engine = nil
    waiter = nil
    with_engine(namespaces: ["spec_boundary"], template_paths: [fixture_templates]) do
      engine = TaskerCore.engine
      expect(engine).to be_a(TaskerCore::Native::Engine)
      expect(engine.running?).to be(true)
      expect(engine.templates.map { |t| t["name"] }).to include("big_numbers")
      # A thread still inside a call while the engine stops does not hold the stop up.
      waiter = Thread.new { engine.next_step(30) }
      sleep 0.1
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect(TaskerCore.stop(timeout: 5)).to be(true)
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 3
    end
    expect(waiter.join(5)&.value).to be(false) # the wait ends: nothing more is claimed
    expect(engine.running?).to be(false)
    expect(engine.memory_stats).to be_nil
    expect(engine.next_step(0)).to be(false)
    expect(engine.shutdown(1)).to be(false)
    expect { engine.find_task("01a212e2-9b26-70b3-8e02-606669bd87ed") }
      .to raise_error(TaskerCore::Errors::NotStartedError, /not started/)
    expect { TaskerCore.engine }.to raise_error(TaskerCore::Errors::NotStartedError)
  end
end
