# frozen_string_literal: true

require "tasker_core"

module LinearWorkflow
  module StepHandlers
    # Squares the task's even number.
    class LinearStep1Handler < TaskerCore::StepHandler::Base
      def call(task, _sequence, _step)
        n = task.context["even_number"]
        unless n.is_a?(Integer) && n.even?
          raise TaskerCore::PermanentError.new("even_number must be an even Integer, got #{n.inspect}",
                                               error_code: "invalid_input")
        end

        TaskerCore::Types::StepHandlerCallResult.success(result: n * n, metadata: { "operation" => "square" })
      end
    end

    # Squares the result of the step named in its `parent` setting.
    class SquareParentHandler < TaskerCore::StepHandler::Base
      def call(_task, sequence, _step)
        parent = sequence.get_results(config.fetch("parent"))
        TaskerCore::Types::StepHandlerCallResult.success(result: parent * parent,
                                                         metadata: { "operation" => "square" })
      end
    end

    class LinearStep2Handler < SquareParentHandler; end
    class LinearStep3Handler < SquareParentHandler; end
    class LinearStep4Handler < SquareParentHandler; end
  end
end
