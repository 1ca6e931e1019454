# frozen_string_literal: true

require "tasker_core"

module TaskerExamples
  # The arithmetic of the example DAGs: a root step squares the task's even number; every
  # other step squares the product of its direct parents' results.
  class SquareOfParents < TaskerCore::StepHandler::Base
    def call(task, sequence, _step)
      parents = sequence.parent_results
      base = parents.empty? ? even_number(task) : parents.reduce(:*)
      TaskerCore::Types::StepHandlerCallResult.success(result: base * base,
                                                       metadata: { "parents" => sequence.parent_names })
    end

    private

    def even_number(task)
      n = task.context["even_number"]
      return n if n.is_a?(Integer) && n.even?

      raise TaskerCore::PermanentError.new("even_number must be an even Integer, got #{n.inspect}",
                                           error_code: "invalid_input")
    end
  end
end
