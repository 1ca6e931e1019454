# frozen_string_literal: true

require "tasker_core"

module TaskerCore
  # Benchmark-only code (not part of the gem).
  module Bench
    # The handler of the benchmarks: returns a constant, allocates nothing.
    class NoopHandler < TaskerCore::StepHandler::Base
      RESULT = {}.freeze
      def call(_task, _sequence, _step) = RESULT
    end
  end
end
