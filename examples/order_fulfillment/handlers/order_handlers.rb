# frozen_string_literal: true

require "tasker_core"

# An order pipeline with real business rules. The external systems (inventory, payment
# gateway, carrier) are simulated; `context["simulate"]` makes each failure path reproducible:
#   "out_of_stock_attempts" => k   reserve_inventory finds no stock on its first k attempts
#   "restock_after" => seconds     the retry_after it reports meanwhile (default 1)
#   "payment" => "declined"        the gateway declines the card (permanent)
#   "payment" => "rate_limited"    the gateway answers 429 on every attempt (retryable)
#   "rate_limited_attempts" => k   ... or only on the first k attempts
module OrderFulfillment
  module StepHandlers
    # Checks the order and computes its total.
    class ValidateOrderHandler < TaskerCore::StepHandler::Base
      def call(task, _sequence, _step)
        ctx = task.context
        items = ctx["items"]
        if !ctx["customer_id"].is_a?(String) || !items.is_a?(Array) || items.empty?
          raise TaskerCore::PermanentError.new("an order needs a customer_id and at least one item",
                                               error_code: "invalid_order")
        end
        total = items.sum { |i| i.fetch("quantity") * i.fetch("price") }
        limit = config.fetch("max_order_total")
        if total > limit
          raise TaskerCore::PermanentError.new("order total #{total} exceeds the limit of #{limit}",
                                               error_code: "order_total_exceeded")
        end

        TaskerCore::Logger.info("order validated", customer_id: ctx["customer_id"], order_total: total)
        { "customer_id" => ctx["customer_id"], "order_total" => total,
          "item_count" => items.sum { |i| i["quantity"] } }
      end
    end

    # Reserves stock for every item.
    class ReserveInventoryHandler < TaskerCore::StepHandler::Base
      def call(task, _sequence, step)
        sim = task.context.fetch("simulate", {})
        if step.attempts <= sim.fetch("out_of_stock_attempts", 0)
          raise TaskerCore::RetryableError.new("items are out of stock; restock expected",
                                               retry_after: sim.fetch("restock_after", 1))
        end

        { "reservation_id" => "RES-#{task.uuid[-12..]}",
          "reserved" => task.context["items"].map { |i| { "sku" => i["sku"], "quantity" => i["quantity"] } } }
      end
    end

    # Charges the order total through the (simulated) payment gateway.
    class ProcessPaymentHandler < TaskerCore::StepHandler::Base
      def call(task, sequence, step)
        sim = task.context.fetch("simulate", {})
        case sim["payment"]
        when "declined"
          raise TaskerCore::PermanentError.new("payment declined by the issuer", error_code: "card_declined")
        when "rate_limited"
          if step.attempts <= sim.fetch("rate_limited_attempts", step.max_attempts)
            raise TaskerCore::RetryableError.new("payment gateway rate limit (429)", retry_after: 0.2)
          end
        end

        order = sequence.get_results("validate_order")
        TaskerCore::Types::StepHandlerCallResult.success(
          result: { "payment_id" => "PAY-#{task.uuid[-12..]}", "amount_charged" => order["order_total"] },
          metadata: { "gateway" => "simulated", "attempt" => step.attempts }
        )
      end
    end

    # Hands the reserved items to the carrier.
    class ShipOrderHandler < TaskerCore::StepHandler::Base
      def call(task, sequence, _step)
        reservation = sequence.get_results("reserve_inventory")
        payment = sequence.get_results("process_payment")
        { "tracking_number" => "TRK-#{task.uuid[-12..]}", "payment_id" => payment["payment_id"],
          "shipped" => reservation["reserved"] }
      end
    end
  end
end
