# frozen_string_literal: true

module TaskerCore
  # Starts the engine for a process that must not fail because the database is not there yet
  # (a Rails server, `tasker_core worker --rails`): when PostgreSQL does not answer, the
  # database does not exist or the tasker schema is not migrated, one line per failed attempt
  # goes to the logger and a background thread tries again, 1 s after the first failure,
  # doubling up to every 30 s, until the engine starts or {TaskerCore.stop} ends it; a process
  # that started the engine this way runs {TaskerCore.stop} at exit. Configuration and
  # template errors still raise at once: no retry can fix them.
  #
  # Each line names the process ("not started (attempt 2, pid 4242)", "started (embedded,
  # pid 4242)"): the processes of one app often share a log (every development process writes
  # log/development.log; Puma's workers, a server and `worker --rails` share stdout or a file),
  # and the attempt numbers are each process's own.
  module BootRetry
    # Failures that a later attempt may not meet: PostgreSQL down or missing the database
    # ({Errors::DatabaseError}), the schema not migrated yet ({Errors::MigrationError}).
    RETRYABLE = [Errors::DatabaseError, Errors::MigrationError].freeze
    # Seconds before the second attempt; doubled after each failure.
    FIRST_DELAY = 1.0
    # The longest wait between two attempts, in seconds.
    MAX_DELAY = 30.0
    # Seconds {start} waits for the first attempt, so that the engine normally runs when the
    # application has booted. An unreachable server makes an attempt last about 10 s (the
    # connection pool's timeout): boot goes on after this wait and the attempt in the background.
    BOOT_WAIT = 5.0

    @lock = Mutex.new
    @changed = ConditionVariable.new

    class << self
      # Start the engine now, or in the background as soon as the database lets it.
      # @param logger [::Logger] where the failed attempts and the eventual start are logged
      # @param wait [Numeric] seconds to wait for the first attempt
      # @return [Boolean] whether the engine runs when this returns
      # @raise [Errors::ConfigurationError, Errors::TemplateError] invalid settings or templates
      def start(logger: TaskerCore.configuration.logger, wait: BOOT_WAIT)
        return true if TaskerCore.running?

        configuration = TaskerCore.configuration.validate!
        Native.validate_templates(configuration.template_paths.map(&:to_s)) if configuration.template_paths.any?
        deadline = now + wait
        @lock.synchronize do
          unless @thread&.alive?
            @stopping = false
            @attempted = false
            @thread = Thread.new { attempts(logger) }
            @thread.name = "tasker_core-boot"
            @thread.report_on_exception = false
            register_at_exit
          end
          wait_until(deadline) { @attempted }
        end
        TaskerCore.running?
      end

      # @return [Boolean] whether a background thread is still trying to start the engine
      def retrying?
        @thread&.alive? || false
      end

      # End the retries (what {TaskerCore.stop} does first). An attempt in flight is waited for
      # (up to about 10 s when the server does not answer); if it started the engine, it runs
      # until the {TaskerCore.stop} that follows.
      # @return [void]
      def stop
        thread = @lock.synchronize do
          @stopping = true
          @changed.broadcast
          @thread
        end
        thread.join if thread && thread != Thread.current
        nil
      end

      private

      def attempts(logger)
        delay = FIRST_DELAY
        attempt = 0
        loop do
          attempt += 1
          break if attempt(logger, attempt, delay)
          break unless pause(delay)

          delay = [delay * 2, MAX_DELAY].min
        end
      end

      # One try; true when there is nothing left to do (started, stopped or a lasting failure).
      def attempt(logger, attempt, delay)
        return true if @lock.synchronize { @stopping }

        TaskerCore.start
        logger.info("tasker_core #{VERSION} started (#{TaskerCore.configuration.mode}, pid #{Process.pid})" \
                    "#{" at attempt #{attempt}" if attempt > 1}")
        true
      rescue *RETRYABLE => e
        logger.warn("tasker_core #{VERSION} not started (attempt #{attempt}, pid #{Process.pid}): " \
                    "#{e.message}#{hint(e)}; retrying in #{delay.round}s, the application runs meanwhile")
        false
      rescue StandardError => e
        logger.error("tasker_core #{VERSION} not started (pid #{Process.pid}): #{e.class}: #{e.message} (not retried)")
        true
      ensure
        @lock.synchronize do
          @attempted = true
          @changed.broadcast
        end
      end

      # Sleep `delay` seconds unless stopped first; false when stopped.
      def pause(delay)
        deadline = now + delay
        @lock.synchronize do
          wait_until(deadline) { @stopping }
          !@stopping
        end
      end

      def hint(error)
        error.is_a?(Errors::MigrationError) && defined?(::Rails) ? " (in a Rails app: bin/rails db:migrate)" : ""
      end

      # The process that started the engine this way stops it when it exits: the retries end,
      # running handlers finish (see TaskerCore.stop) and the connections close.
      def register_at_exit
        return if @at_exit

        @at_exit = true
        at_exit do
          stop
          TaskerCore.stop
        end
      end

      # Under @lock: until the block is true or the deadline has passed.
      def wait_until(deadline)
        until yield
          left = deadline - now
          break if left <= 0

          @changed.wait(@lock, left)
        end
      end

      def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
