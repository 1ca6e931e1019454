# frozen_string_literal: true

module TaskerCore
  # The Ruby handler threads. Each thread waits in the native `next_step` with the GVL
  # released, runs the step's handler, and hands the outcome back without waiting for the
  # database. Handler errors are recorded on the step, never raised out of the thread.
  class Worker
    WAIT_SECONDS = 0.5

    # @param registry [Registry]
    # @param concurrency [Integer]
    # @param logger [Logger]
    def initialize(registry:, concurrency:, logger:)
      @registry = registry
      @concurrency = concurrency
      @logger = logger
      @threads = []
    end

    # Start the handler threads.
    def start
      @threads = Array.new(@concurrency) do |i|
        Thread.new { run }.tap do |t|
          t.name = "tasker-worker-#{i}"
          t.report_on_exception = false
        end
      end
      self
    end

    # Wait for the threads to finish their current step and exit (the engine must be shutting
    # down); threads still busy at the deadline are killed and their steps are redelivered
    # after their claims expire.
    # @return [Integer] threads that had to be killed
    def join(deadline)
      killed = 0
      @threads.each do |t|
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        next if t.join([left, 0].max)

        t.kill
        t.join(1)
        killed += 1
      end
      @threads = []
      killed
    end

    # @return [Integer] live handler threads
    def alive_count
      @threads.count(&:alive?)
    end

    # Run one step event: resolve its handler, call it, hand back the outcome.
    # @api private
    def self.execute(event, registry, logger)
      outcome = run_handler(event, registry)
      deliver(event, outcome, logger)
    end

    def self.run_handler(event, registry)
      klass = registry.resolve(event.handler_class)
      handler = klass.new(config: Types.deep_freeze(event.handler_config))
      returned = handler.call(Types::Task.new(event), Types::Sequence.new(event), Types::Step.new(event))
      Types::StepHandlerCallResult.from_handler_return(returned, klass)
    rescue Errors::PermanentError => e
      failure(e, "permanent", error_code: e.error_code)
    rescue Errors::RetryableError => e
      failure(e, "retryable", retry_after: e.retry_after)
    rescue Errors::HandlerNotFoundError, Errors::InvalidResultError, NotImplementedError => e
      failure(e, "permanent")
    rescue StandardError, ScriptError => e
      failure(e, "retryable")
    end

    def self.failure(error, kind, retry_after: nil, error_code: nil)
      {
        "kind" => kind,
        "error_class" => error.class.name || error.class.inspect,
        "message" => error.message.to_s,
        "backtrace" => Array(error.backtrace).first(50),
        "retry_after" => retry_after&.to_f,
        "error_code" => error_code&.to_s
      }
    end

    def self.deliver(event, outcome, logger)
      case outcome
      when Hash
        event.complete_failure(outcome)
      when Types::StepHandlerCallResult
        if outcome.success?
          begin
            event.complete_success(outcome.result, outcome.metadata)
          rescue Errors::ValidationError => e
            event.complete_failure(failure(Errors::InvalidResultError.new("step result cannot be stored: #{e.message}"), "permanent"))
          end
        else
          err = outcome.error
          event.complete_failure(
            "kind" => err[:retryable] ? "retryable" : "permanent",
            "error_class" => err[:error_type].to_s, "message" => err[:message].to_s, "backtrace" => [],
            "retry_after" => err[:retry_after]&.to_f, "error_code" => err[:error_code]&.to_s
          )
        end
      end
    rescue Errors::Error => e
      logger.error("could not hand back step #{event.step_uuid}: #{e.class}: #{e.message}")
    end
    private_class_method :run_handler, :failure, :deliver

    private

    def run
      loop do
        event = Native.next_step(WAIT_SECONDS)
        break if event == false
        next if event.nil?

        self.class.execute(event, @registry, @logger)
      end
    rescue Exception => e # rubocop:disable Lint/RescueException
      @logger.error("tasker worker thread stopped: #{e.class}: #{e.message}") unless e.is_a?(Interrupt)
      raise
    end
  end

  module Types
    # Deep-freeze a JSON-like structure (handler configuration).
    # @api private
    def self.deep_freeze(value)
      case value
      when Hash then value.each_value { |v| deep_freeze(v) }
      when Array then value.each { |v| deep_freeze(v) }
      end
      value.freeze
    end
  end
end
