# frozen_string_literal: true

require_relative "../../square_of_parents"

module TreeWorkflow
  module StepHandlers
    class TreeRootHandler < TaskerExamples::SquareOfParents; end
    class TreeBranchLeftHandler < TaskerExamples::SquareOfParents; end
    class TreeBranchRightHandler < TaskerExamples::SquareOfParents; end
    class TreeLeafHandler < TaskerExamples::SquareOfParents; end
    class TreeFinalConvergenceHandler < TaskerExamples::SquareOfParents; end
  end
end
