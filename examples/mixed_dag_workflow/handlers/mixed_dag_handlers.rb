# frozen_string_literal: true

require_relative "../../square_of_parents"

module MixedDagWorkflow
  module StepHandlers
    class DagInitHandler < TaskerExamples::SquareOfParents; end
    class DagProcessLeftHandler < TaskerExamples::SquareOfParents; end
    class DagProcessRightHandler < TaskerExamples::SquareOfParents; end
    class DagValidateHandler < TaskerExamples::SquareOfParents; end
    class DagTransformHandler < TaskerExamples::SquareOfParents; end
    class DagAnalyzeHandler < TaskerExamples::SquareOfParents; end
    class DagFinalizeHandler < TaskerExamples::SquareOfParents; end
  end
end
