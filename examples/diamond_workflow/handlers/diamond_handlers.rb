# frozen_string_literal: true

require_relative "../../square_of_parents"

module DiamondWorkflow
  module StepHandlers
    class DiamondStartHandler < TaskerExamples::SquareOfParents; end
    class DiamondBranchBHandler < TaskerExamples::SquareOfParents; end
    class DiamondBranchCHandler < TaskerExamples::SquareOfParents; end
    class DiamondEndHandler < TaskerExamples::SquareOfParents; end
  end
end
