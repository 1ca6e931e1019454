# frozen_string_literal: true

module TaskerCore
  # The Ruby handler threads. Each thread waits in the native `next_step` with the GVL
  # released, runs the step's handler under the step's timeout, and hands the outcome back
  # without waiting for the database. Handler errors are recorded on the step, never raised
  # out of the thread. The pool stays at `concurrency` threads: a thread stuck in a handler
  # that ignores its timeout is retired and replaced.
  class Worker
    # Seconds a handler thread waits in `next_step` before it checks whether it was retired.
    WAIT_SECONDS = 0.5

    # Raised inside a handler thread whose step ran past its timeout. An Exception, not a
    # StandardError, so a handler's `rescue => e` does not swallow it.
    class HandlerTimeout < Exception; end # rubocop:disable Lint/InheritException

    # A handler running on one thread.
    Running = Struct.new(:event, :deadline, :interrupted_at, :abandoned)

    # @param registry [Registry]
    # @param concurrency [Integer]
    # @param logger [#warn, #error] TaskerCore::Logger or a ::Logger
    # @param timeout_grace [Numeric] seconds a handler gets to react to its timeout before its
    #   thread is retired and replaced
    def initialize(registry:, concurrency:, logger:, timeout_grace: 5)
      @registry = registry
      @concurrency = concurrency
      @logger = logger
      @timeout_grace = timeout_grace
      @lock = Mutex.new
      @running = {}
      @threads = []
      @serial = 0
      @stopping = false
    end

    # Start the handler threads and the timeout watchdog.
    def start
      @lock.synchronize { @concurrency.times { spawn_thread } }
      @watchdog = Thread.new { watch }
      @watchdog.name = "tasker-watchdog"
      @watchdog.report_on_exception = false
      self
    end

    # Wait for the threads to finish their current step and exit (the engine must be shutting
    # down); threads still busy at the deadline are killed and their steps are redelivered
    # after their claims expire.
    # @return [Integer] threads that had to be killed
    def join(deadline)
      @lock.synchronize { @stopping = true }
      killed = 0
      threads.each do |t|
        left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
        next if t.join([left, 0].max)

        t.kill
        t.join(1)
        killed += 1
      end
      @watchdog&.kill&.join(1)
      @lock.synchronize { @threads = [] }
      killed
    end

    # @return [Integer] handler threads running a step now
    def busy_count
      @lock.synchronize { @running.size }
    end

    # @return [Integer] live handler threads that take new steps
    def alive_count
      threads.count { |t| t.alive? && !t[:tasker_retired] }
    end

    private

    def threads
      @lock.synchronize { @threads.dup }
    end

    # Caller holds @lock.
    def spawn_thread
      @serial += 1
      thread = Thread.new { run }
      thread.name = "tasker-worker-#{@serial}"
      thread.report_on_exception = false
      @threads << thread
    end

    def run
      Thread.handle_interrupt(HandlerTimeout => :never) do
        until Thread.current[:tasker_retired]
          event = Native.next_step(WAIT_SECONDS)
          break if event == false
          next if event.nil?

          Thread.current[Logger::CONTEXT_KEY] = event
          begin
            outcome = guarded(event)
            StepExecution.deliver(event, outcome, @logger) unless outcome.nil?
          ensure
            Thread.current[Logger::CONTEXT_KEY] = nil
          end
        end
      end
    rescue Exception => e # rubocop:disable Lint/RescueException
      @logger.error("tasker worker thread stopped: #{e.class}: #{e.message}") unless e.is_a?(Interrupt)
      raise
    end

    # Run the handler; the watchdog may interrupt it with HandlerTimeout. Returns nil when the
    # watchdog already reported the step (the thread was retired).
    def guarded(event)
      running = Running.new(event, monotonic + event.timeout_seconds)
      @lock.synchronize { @running[Thread.current] = running }
      timed_out = false
      outcome = begin
        Thread.handle_interrupt(HandlerTimeout => :immediate) { StepExecution.run_handler(event, @registry) }
      rescue HandlerTimeout
        timed_out = true
        StepExecution.timeout_failure(event)
      end
      interrupted = @lock.synchronize do
        @running.delete(Thread.current)
        running.interrupted_at
      end
      # The watchdog may have raised just after the handler returned: discard that interrupt
      # so it cannot hit the next step.
      drain_timeout if interrupted && !timed_out
      running.abandoned ? nil : outcome
    end

    def drain_timeout
      Thread.handle_interrupt(HandlerTimeout => :immediate) { Thread.pass }
    rescue HandlerTimeout
      nil
    end

    def watch
      loop do
        sleep 0.05
        now = monotonic
        @lock.synchronize do
          @running.each do |thread, running|
            next if running.abandoned || now < running.deadline

            if running.interrupted_at.nil?
              running.interrupted_at = now
              thread.raise(HandlerTimeout)
            elsif now - running.interrupted_at > @timeout_grace
              abandon(thread, running)
            end
          end
        end
      end
    end

    # The handler ignored its timeout: report the step, retire the thread, start another.
    # Caller holds @lock.
    def abandon(thread, running)
      running.abandoned = true
      thread[:tasker_retired] = true
      @logger.error("handler for step #{running.event.step_uuid} ignored its timeout; replacing its thread")
      StepExecution.deliver(running.event, StepExecution.timeout_failure(running.event), @logger)
      @threads.delete(thread)
      spawn_thread unless @stopping
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
