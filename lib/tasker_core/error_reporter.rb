# frozen_string_literal: true

module TaskerCore
  # Hands handler exceptions to the configured error handlers (`config.error_handlers`) on one
  # Ruby thread of its own, in order: a slow or failing error handler never delays a step, and
  # no error handler ever runs on an engine (Rust) thread.
  # @api private
  class ErrorReporter
    def initialize(handlers, logger)
      @handlers = handlers
      @logger = logger
      @queue = Thread::Queue.new
      @thread = nil
    end

    # @param error [Exception]
    # @param context [Hash{String => Object}] correlation_id, task_uuid, step_uuid, namespace,
    #   task_name, step_name, attempt, handler_class
    def report(error, context)
      return if @handlers.empty?

      start_thread
      @queue << [error, context]
    end

    # Deliver what is queued, then stop the thread (waiting at most `timeout` seconds).
    def stop(timeout: 5)
      return unless @thread

      @queue.close
      @thread.join(timeout)
      @thread = nil
    end

    private

    def start_thread
      return if @thread&.alive?

      @thread = Thread.new do
        while (item = @queue.pop)
          error, context = item
          @handlers.each do |handler|
            handler.call(error, context)
          rescue Exception => e # rubocop:disable Lint/RescueException
            # Whatever an error handler raises (or a handler's exception raises when asked for
            # its message) loses that one call, never the reporter thread.
            StepExecution.log(@logger, :error, "error handler #{StepExecution.contained { handler.inspect }} " \
                                               "raised #{StepExecution.describe(e)}")
          end
        end
      end
      @thread.name = "tasker-error-reporter"
    end
  end
end
