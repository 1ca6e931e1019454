# frozen_string_literal: true

module TaskerCore
  module Types
    # A transition in a task's or step's history.
    Transition = Struct.new(:from_state, :to_state, :metadata, :created_at, keyword_init: true)

    # A step as returned by {Client.find_task}.
    class StepRecord
      # @return [String]
      attr_reader :uuid, :name, :handler_class, :state
      # @return [Integer]
      attr_reader :attempts, :max_attempts
      # @return [Object, nil] the stored result
      attr_reader :result
      # @return [Hash, nil] metadata stored beside the result
      attr_reader :metadata
      # @return [Hash, nil] the last failure: error_class, message, backtrace, attempt, ...
      attr_reader :error
      # @return [String, nil] ISO-8601 time of the next attempt (waiting_for_retry)
      attr_reader :next_retry_at
      # @return [Array<String>] names of direct parents
      attr_reader :dependencies
      # @return [Array<Transition>]
      attr_reader :transitions

      def initialize(h)
        @uuid = h["uuid"]
        @name = h["name"]
        @handler_class = h["handler_class"]
        @state = h["state"]
        @attempts = h["attempts"]
        @max_attempts = h["max_attempts"]
        @result = h["result"]
        @metadata = h["metadata"]
        @error = h["error"]
        @next_retry_at = h["next_retry_at"]
        @dependencies = h["dependencies"] || []
        @transitions = Types.transitions(h["transitions"])
      end

      def complete? = state == "complete"
    end

    # A task as returned by {Client.create_task}, {Client.find_task} and {Client.wait_for}.
    class TaskRecord
      # The statuses of a finished task.
      TERMINAL = %w[complete error cancelled].freeze

      # @return [String]
      attr_reader :uuid, :status, :correlation_id
      # @return [String, nil]
      attr_reader :parent_correlation_id, :namespace, :name, :version, :idempotency_key
      # @return [Hash, nil] the input (nil on the record create_task returns)
      attr_reader :context
      # @return [Array<StepRecord>] in template order (empty on the record create_task returns)
      attr_reader :steps
      # @return [Array<Transition>]
      attr_reader :transitions

      def initialize(h)
        @uuid = h["uuid"]
        @status = h["status"]
        @correlation_id = h["correlation_id"]
        @parent_correlation_id = h["parent_correlation_id"]
        @namespace = h["namespace"]
        @name = h["name"]
        @version = h["version"]
        @idempotency_key = h["idempotency_key"]
        @context = h["context"]
        @created = h.fetch("created", false)
        @steps = (h["steps"] || []).map { |s| StepRecord.new(s) }
        @transitions = Types.transitions(h["transitions"])
      end

      # @return [StepRecord, nil]
      def step(name)
        steps.find { |s| s.name == name.to_s }
      end

      # @return [Boolean] true when create_task made a new task (false: same idempotency key)
      def created? = @created

      def complete? = status == "complete"

      def terminal? = TERMINAL.include?(status)
    end

    # Transitions from the hashes the extension returns.
    # @param list [Array<Hash>, nil]
    # @return [Array<Transition>]
    # @api private
    def self.transitions(list)
      (list || []).map do |t|
        Transition.new(from_state: t["from_state"], to_state: t["to_state"],
                       metadata: t["metadata"], created_at: t["created_at"])
      end
    end
  end
end
