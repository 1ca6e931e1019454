# frozen_string_literal: true

module TaskerCore
  # Base classes for step handlers.
  module StepHandler
    # Base class of step handlers. Subclass it, name the subclass in a template step's
    # `handler.callable`, and implement {#call}.
    #
    # @example
    #   class ChargeCard < TaskerCore::StepHandler::Base
    #     def call(task, sequence, step)
    #       order = sequence.get_results("validate_order")
    #       { "charged" => order["total"] }
    #     end
    #   end
    class Base
      # @return [Hash] the step's `handler.initialization` from the template (frozen)
      attr_reader :config

      def initialize(config: {})
        @config = config
      end

      # Run the step.
      # @param task [Types::Task]
      # @param sequence [Types::Sequence]
      # @param step [Types::Step]
      # @return [Hash, Types::StepHandlerCallResult] the step's result
      # @raise [RetryableError, PermanentError] to say how the step failed
      def call(task, sequence, step)
        raise NotImplementedError, "#{self.class} must implement #call(task, sequence, step)"
      end
    end
  end
end
