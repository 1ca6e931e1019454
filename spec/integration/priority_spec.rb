# frozen_string_literal: true

RSpec.describe "task priority" do
  def create(priority)
    TaskerCore::Client.create_task(namespace: "spec_priority", name: "ordered", version: "1.0.0",
                                   context: {}, priority: priority)
  end

  it "starts a high-priority task before the 20th of 200 normal tasks queued ahead of it" do
    normal = high = nil
    with_engine(template_paths: [fixture_templates]) do # a client process queues the work
      normal = Array.new(200) { create(:normal) }
      high = create(:high)
    end
    started = SpecHandlers::RecordOrder.started
    started.clear
    with_engine(namespaces: ["spec_priority"], template_paths: [fixture_templates], concurrency: 1) do
      [*normal, high].each { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 60) }
    end
    order = Array.new(started.size) { started.pop }
    expect(order.size).to eq(201)
    expect(order.index(high.uuid)).to be < 19
    expect(order.reject { |u| u == high.uuid }).to eq(normal.map(&:uuid)) # FIFO within a priority
  end
end
