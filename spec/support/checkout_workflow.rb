# frozen_string_literal: true

# The dashboard specs' workflow: load → charge → ship, whose charge fails permanently (with
# markup in its message) until a spec sets `fixed`; `charge_seconds` makes the fixed charge take
# that long (so a page can show it running).
module CheckoutWorkflow
  class << self
    attr_accessor :fixed, :charge_seconds

    def reset!
      self.fixed = false
      self.charge_seconds = 0
    end

    # The template, in `namespace`.
    def template(namespace)
      <<~YAML
        name: checkout
        namespace: #{namespace}
        version: "1.0.0"
        steps:
          - name: load
            handler: { callable: CheckoutWorkflow::Load }
          - name: charge
            handler: { callable: CheckoutWorkflow::Charge }
            dependencies: [load]
            retry: { max_attempts: 1 }
          - name: ship
            handler: { callable: CheckoutWorkflow::Ship }
            dependencies: [charge]
      YAML
    end
  end
  reset!

  # Loads the order; its result carries markup that must render as text.
  class Load < TaskerCore::StepHandler::Base
    def call(task, _sequence, _step) = { "order" => task.context["order_id"], "note" => "<script>alert('r')</script>" }
  end

  # Fails for good until fixed.
  class Charge < TaskerCore::StepHandler::Base
    def call(_task, sequence, _step)
      unless CheckoutWorkflow.fixed
        raise TaskerCore::PermanentError.new("card <b>declined</b> by the gateway", error_code: "declined")
      end

      sleep CheckoutWorkflow.charge_seconds
      { "charged" => sequence.get_results("load")["order"] }
    end
  end

  # Runs after the charge.
  class Ship < TaskerCore::StepHandler::Base
    def call(*) = { "shipped" => true }
  end
end
