# frozen_string_literal: true

require "json"

RSpec.describe "TaskerCore.health and TaskerCore::Web::Health" do
  let(:app) { TaskerCore::Web::Health.new }

  it "reports stopped (503) when the engine is not running" do
    expect(TaskerCore.health).to include("status" => "stopped", "running" => false)
    status, headers, body = app.call({})
    expect(status).to eq(503)
    expect(headers["content-type"]).to eq("application/json")
    expect(JSON.parse(body.join)["status"]).to eq("stopped")
  end

  it "reports the database, queue depths, breakers and handler threads of a running engine" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], concurrency: 3) do
      TaskerCore::CircuitBreaker.configure("health_spec_ok", failure_threshold: 3)
      report = TaskerCore.health
      expect(report).to include("running" => true, "pid" => Process.pid)
      expect(report["status"]).to eq("ok") # named breakers left open by other examples are closed after each
      expect(report["database"]).to include("reachable" => true, "error" => nil)
      expect(report["database"]["latency_ms"]).to be_a(Float)
      expect(report["queues"].keys).to eq(["linear_workflow"])
      expect(report["queues"]["linear_workflow"]["depth"]).to be_a(Integer)
      expect(report["handler_threads"]).to eq("total" => 3, "busy" => 0, "idle" => 3)
      expect(report["circuit_breakers"]["health_spec_ok"]).to include("state" => "closed")

      TaskerCore::CircuitBreaker.force_open("health_spec_open")
      status, _, body = app.call({})
      expect(status).to eq(200)
      expect(JSON.parse(body.join)).to include("status" => "degraded")
    ensure
      TaskerCore::CircuitBreaker.force_closed("health_spec_open")
    end
  end
end
