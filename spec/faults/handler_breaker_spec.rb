# frozen_string_literal: true

require_relative "../fixtures/faults/breaker_handlers"

# Issue 5 fault test 4: a handler class that always times out opens its own circuit breaker;
# while it is open that handler's steps are not claimed (their attempts do not grow) and the
# other handlers keep running.
RSpec.describe "a handler class that always times out" do
  let(:template) do
    <<~YAML
      name: stuck
      namespace: spec_hbreak
      version: "1.0.0"
      steps:
        - name: hang
          handler: { callable: BreakerFaultHandlers::AlwaysHangs }
          timeout_seconds: 1
          retry: { max_attempts: 50, backoff_base_ms: 10, max_backoff_ms: 20 }
    YAML
  end
  let(:healthy) do
    <<~YAML
      name: healthy
      namespace: spec_hbreak
      version: "1.0.0"
      steps:
        - name: quick
          handler: { callable: BreakerFaultHandlers::Quick }
    YAML
  end

  def hang_breaker
    TaskerCore.health.dig("handler_breakers", "BreakerFaultHandlers::AlwaysHangs")
  end

  def stuck_steps(what, condition = "true")
    psql("SELECT #{what} FROM tasker.workflow_steps WHERE #{condition} AND " \
         "task_uuid IN (#{@stuck.map { |u| "'#{u}'" }.join(",")})")
  end

  def hang_attempts = stuck_steps("coalesce(sum(attempts), 0)").to_i

  it "opens its breaker, leaves its steps unclaimed while open, and the other handlers keep running" do
    with_template_dir("stuck.yaml" => template, "healthy.yaml" => healthy) do |dir|
      with_engine(namespaces: ["spec_hbreak"], template_paths: [dir], concurrency: 4, timeout_grace: 0.5,
                  circuit_breakers: { handler_classes: { "BreakerFaultHandlers::AlwaysHangs" =>
                                                           { failure_threshold: 3, timeout: 60, success_threshold: 1 } } }) do
        @stuck = Array.new(3) do
          TaskerCore::Client.create_task(namespace: "spec_hbreak", name: "stuck", version: "1.0.0", context: {}).uuid
        end
        # Deadline: 3 timeouts of 1 s (+ 0.5 s grace) run side by side; generous for a busy machine.
        eventually(timeout: 20) do
          hang_breaker&.fetch("transitions")&.include?("closed->open (failure threshold reached)")
        end
        # An attempt admitted just before the breaker opened finishes (times out) first.
        eventually(timeout: 10) do
          stuck_steps("count(*)", "state = 'in_progress'") == "0"
        end
        opened_at = hang_attempts

        # The other handler runs while the breaker is open (it stays open for a minute).
        quick = Array.new(20) do |i|
          TaskerCore::Client.create_task(namespace: "spec_hbreak", name: "healthy", version: "1.0.0", context: { "n" => i })
        end
        quick.each { |t| expect(TaskerCore::Client.wait_for(t.uuid, timeout: 15).status).to eq("complete") }
        expect(hang_breaker["state"]).to eq("open")
        expect(hang_attempts).to eq(opened_at)
        expect(hang_breaker["rejections"]).to be >= 1
        expect(TaskerCore.health["status"]).to eq("degraded")

        # At runtime, without a restart: a short open period.
        TaskerCore.configure_circuit_breaker(handler: "BreakerFaultHandlers::AlwaysHangs", timeout: 0.5)
        # Half-open lets one trial step through; it times out too, and the breaker opens again.
        eventually(timeout: 20) do
          hang_breaker["transitions"].include?("half_open->open (trial call failed)")
        end
        breaker = hang_breaker
        # Every attempt was admitted by the breaker: attempts never ran past it.
        expect(hang_attempts).to be <= breaker["calls"]
        expect(hang_attempts).to be < 3 * 50
        steps = @stuck.map { |u| TaskerCore::Client.find_task(u).step("hang") }
        expect(steps.map(&:state)).to all(satisfy { |s| %w[enqueued in_progress waiting_for_retry].include?(s) })
      end
    end
  end
end
