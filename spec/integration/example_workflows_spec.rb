# frozen_string_literal: true

require "time"

RSpec.describe "the example workflows" do
  around do |ex|
    with_engine(namespaces: %w[linear_workflow diamond_workflow tree_workflow mixed_dag_workflow order_fulfillment],
                template_paths: [examples_dir], concurrency: 4) { ex.run }
  end

  def run_task(namespace, name, context)
    task = TaskerCore::Client.create_task(namespace: namespace, name: name, version: "1.0.0", context: context)
    TaskerCore::Client.wait_for(task.uuid, timeout: 30)
  end

  {
    %w[linear_workflow mathematical_sequence linear_step_4] => 16,
    %w[diamond_workflow parallel_computation diamond_end] => 16,
    %w[tree_workflow hierarchical_tree tree_final_convergence] => 64,
    %w[mixed_dag_workflow complex_dag dag_finalize] => 64
  }.each do |(namespace, name, last), power|
    it "#{namespace} computes n**#{power}" do
      [2, 6].each do |n|
        done = run_task(namespace, name, { "even_number" => n })
        expect(done.status).to eq("complete")
        expect(done.step(last).result).to eq(n**power)
        expect(done.steps.map(&:state).uniq).to eq(["complete"])
        expect(done.steps.map(&:attempts).uniq).to eq([1])
      end
    end
  end

  it "computes every intermediate value of the mixed DAG" do
    done = run_task("mixed_dag_workflow", "complex_dag", { "even_number" => 2 })
    results = done.steps.to_h { |s| [s.name, s.result] }
    expect(results).to eq("dag_init" => 2**2, "dag_process_left" => 2**4, "dag_process_right" => 2**4,
                          "dag_validate" => 2**16, "dag_transform" => 2**8, "dag_analyze" => 2**8,
                          "dag_finalize" => 2**64)
    expect(done.step("dag_finalize").metadata).to eq("parents" => %w[dag_validate dag_transform dag_analyze])
  end

  it "fails a root step permanently on bad input, leaving its descendants pending" do
    done = run_task("diamond_workflow", "parallel_computation", { "even_number" => 3 })
    expect(done.status).to eq("error")
    expect(done.step("diamond_start").state).to eq("error")
    expect(done.step("diamond_start").error).to include("error_code" => "invalid_input", "retryable" => false)
    expect(done.steps.drop(1).map(&:state).uniq).to eq(["pending"])
  end

  describe "order fulfillment" do
    let(:order) do
      { "customer_id" => "c-42", "items" => [{ "sku" => "A1", "quantity" => 2, "price" => 10.5 },
                                             { "sku" => "B7", "quantity" => 1, "price" => 100 }],
        "payment" => { "method" => "card", "token" => "tok_visa" } }
    end

    def fulfill(context)
      run_task("order_fulfillment", "process_order", context)
    end

    it "ships a valid order" do
      done = fulfill(order)
      expect(done.status).to eq("complete")
      expect(done.step("validate_order").result).to include("order_total" => 121.0, "item_count" => 3)
      expect(done.step("process_payment").result).to include("amount_charged" => 121.0)
      expect(done.step("ship_order").result["tracking_number"]).to start_with("TRK-")
      expect(done.step("ship_order").result["shipped"]).to eq([{ "sku" => "A1", "quantity" => 2 },
                                                               { "sku" => "B7", "quantity" => 1 }])
    end

    it "refuses an order over 50,000 permanently, on the first attempt" do
      done = fulfill(order.merge("items" => [{ "sku" => "GOLD", "quantity" => 1, "price" => 50_000.01 }]))
      expect(done.status).to eq("error")
      step = done.step("validate_order")
      expect([step.state, step.attempts]).to eq(["error", 1])
      expect(step.error).to include("error_class" => "TaskerCore::Errors::PermanentError",
                                    "error_code" => "order_total_exceeded", "retryable" => false)
      expect(done.steps.drop(1).map(&:state).uniq).to eq(["pending"])
    end

    it "waits exactly retry_after when inventory is out of stock, then completes" do
      done = fulfill(order.merge("simulate" => { "out_of_stock_attempts" => 1, "restock_after" => 0.3 }))
      expect(done.status).to eq("complete")
      reserve = done.step("reserve_inventory")
      expect(reserve.attempts).to eq(2)
      waiting = reserve.transitions.find { |t| t.to_state == "waiting_for_retry" }
      expect(waiting.metadata).to include("retry_in_ms" => 300, "error_class" => "TaskerCore::Errors::RetryableError")
      retried = reserve.transitions.find { |t| t.to_state == "enqueued" && t.from_state == "waiting_for_retry" }
      # Transition times are taken when each row is written, a moment after the backoff starts.
      expect(Time.parse(retried.created_at) - Time.parse(waiting.created_at)).to be > 0.25
    end

    it "stops at a declined payment without retrying" do
      done = fulfill(order.merge("simulate" => { "payment" => "declined" }))
      expect(done.status).to eq("error")
      payment = done.step("process_payment")
      expect([payment.state, payment.attempts]).to eq(["error", 1])
      expect(payment.error).to include("error_code" => "card_declined")
      expect(done.step("ship_order").state).to eq("pending")
      expect(done.step("reserve_inventory").state).to eq("complete")
    end

    it "retries a rate-limited payment once, then completes" do
      done = fulfill(order.merge("simulate" => { "payment" => "rate_limited", "rate_limited_attempts" => 1 }))
      expect(done.status).to eq("complete")
      expect(done.step("process_payment").attempts).to eq(2)
      expect(done.step("process_payment").metadata).to include("attempt" => 2)
    end

    it "gives up on a payment that stays rate limited after max_attempts (2)" do
      done = fulfill(order.merge("simulate" => { "payment" => "rate_limited" }))
      expect(done.status).to eq("error")
      payment = done.step("process_payment")
      expect([payment.state, payment.attempts, payment.max_attempts]).to eq(["error", 2, 2])
      expect(payment.error).to include("retryable" => true, "message" => "payment gateway rate limit (429)")
      expect(payment.transitions.map(&:to_state))
        .to eq(%w[pending enqueued in_progress waiting_for_retry enqueued in_progress error])
    end
  end
end
