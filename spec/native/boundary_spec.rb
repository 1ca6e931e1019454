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
      waiter = Thread.new { TaskerCore::Native.next_step(30) }
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
      expect { Timeout.timeout(0.2) { TaskerCore::Native.next_step(30) } }.to raise_error(Timeout::Error)
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
      expect { TaskerCore::Native.create_task(42) }.to raise_error(TypeError)
      expect { TaskerCore::Native.find_task("not-a-uuid") }
        .to raise_error(TaskerCore::Errors::ValidationError, /not a UUID/)
      expect do
        TaskerCore::Native.wait_for(nil, 1.0)
      end.to raise_error(TaskerCore::Errors::ValidationError, /task uuid must be a String/)
      expect do
        TaskerCore::Native.create_task("namespace" => "spec_boundary", "name" => "big_numbers", "version" => "1.0.0",
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
end
