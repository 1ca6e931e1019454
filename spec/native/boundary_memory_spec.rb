# frozen_string_literal: true

require File.expand_path("../../benches/ruby/memory", __dir__)

RSpec.describe "the boundary's memory work" do
  let(:bench) { TaskerCore::Native::Bench }
  let(:registry) { TaskerCore::Registry.new([{ "handlers" => ["TaskerCore::Bench::NoopHandler"] }]) }
  let(:logger) { Logger.new(File::NULL) }

  it "hands names to Ruby as one frozen, interned string per name" do
    bench.prepare(2)
    a = bench.next_event(false)
    b = bench.next_event(false)
    %i[namespace task_name task_version step_name handler_class].each do |name|
      expect(a.public_send(name)).to be_frozen
      expect(a.public_send(name)).to equal(b.public_send(name)) # the same object, not a copy
    end
    expect(a.parent_names.first).to equal(b.parent_names.first)
    expect(a.step_name).to eq("charge_order")
    expect(a.task_uuid).not_to eq(b.task_uuid)
  end

  it "survives GC.stress through events, lazy values and result conversion" do
    bench.prepare(5)
    GC.stress = true
    results = Array.new(5) do
      event = bench.next_event(false)
      context = event.context
      price = event.dependency_result("price_order")
      done = event.complete_success({ "charged" => price["total"], "big" => 6**40, "items" => context["items"] },
                                    { "k" => [1, "two", :three] })
      [context["order_id"], price["currency"], event.completed?, done, event.outcome]
    end
    GC.stress = false
    kept = { "status" => "complete", "metadata" => { "k" => [1, "two", "three"] },
             "result" => { "charged" => 121.5, "big" => 6**40,
                           "items" => [{ "sku" => "A1", "quantity" => 2 }, { "sku" => "B7", "quantity" => 1 }] } }
    # true: a detached event keeps the outcome, converted as the engine would store it
    expect(results.uniq).to eq([[4242, "EUR", true, true, kept]])
  ensure
    GC.stress = false
  end

  it "dispatches through the worker's code under GC.stress" do
    bench.prepare(3)
    GC.stress = true
    3.times do
      event = bench.next_event(false)
      outcome = TaskerCore::StepExecution.run_handler(event, registry)
      TaskerCore::StepExecution.deliver(event, outcome, logger)
      raise "not completed" unless event.completed?
    end
  ensure
    GC.stress = false
  end

  it "reads names and values from many threads at once" do
    bench.prepare(400)
    events = Array.new(400) { bench.next_event(false) }
    seen = Queue.new
    threads = Array.new(8) do |t|
      Thread.new do
        events.each_with_index do |e, i|
          next unless i % 8 == t

          seen << [e.step_name.object_id, e.namespace.object_id, e.context["order_id"],
                   e.dependency_result("fetch_order")["lines"]]
        end
      end
    end
    threads.each(&:join)
    rows = Array.new(seen.size) { seen.pop }
    expect(rows.size).to eq(400)
    expect(rows.uniq.size).to eq(1)
  end

  it "keeps the engine's string cache within its bound, evicted names still working" do
    with_engine(namespaces: ["tree_workflow"], template_paths: [examples_dir], string_cache_capacity: 2) do
      tasks = Array.new(3) do
        TaskerCore::Client.create_task(namespace: "tree_workflow", name: "hierarchical_tree", version: "1.0.0",
                                       context: { "even_number" => 2 })
      end
      tasks.each do |t|
        expect(TaskerCore::Client.wait_for(t.uuid, timeout: 20).step("tree_final_convergence").result).to eq(2**64)
      end
      stats = TaskerCore.memory_stats
      expect(stats["string_cache"]).to include("capacity" => 2)
      expect(stats["string_cache"]["size"]).to be <= 2
      expect(stats["string_cache"]["evictions"]).to be > 0
      expect(stats).to include("dispatch_queue_depth" => 0, "handler_threads" => 2)
      expect(stats["templates"]).to be >= 5
    end
    expect(TaskerCore.memory_stats).to be_nil
  end
end
