# frozen_string_literal: true

module TaskerCore
  # The Ruby handler threads. Each thread waits in the native `next_step` with the GVL
  # released, runs the step's handler under the step's timeout, and hands the outcome back
  # without waiting for the database.
  #
  # Nothing a handler does stops its thread: whatever it raises (any Exception, but for
  # {HandlerTimeout}) or returns is recorded as that step's outcome. The pool stays at
  # `concurrency` threads: a thread stuck in a handler that ignores its timeout is retired and
  # replaced, and a thread that ends anyway (killed with Thread#kill, or an exception escaping
  # the worker's own code) is replaced at once by its own `ensure`, its step reported as failed
  # with {ThreadDied}. The watchdog thread tops the pool up should a replacement fail.
  class Worker
    # Seconds a handler thread waits in `next_step` before it checks whether it was retired.
    WAIT_SECONDS = 0.5

    # Raised inside a handler thread whose step ran past its timeout. An Exception, not a
    # StandardError, so a handler's `rescue => e` does not swallow it.
    class HandlerTimeout < Exception; end # rubocop:disable Lint/InheritException

    # Recorded (retryable) on a step whose handler thread ended while it ran the step: the
    # thread was killed (Thread#kill, Thread.exit in the handler) or an exception escaped the
    # worker's own code. The message says which.
    class ThreadDied < Errors::Error; end

    # A handler running on one thread.
    Running = Struct.new(:event, :deadline, :interrupted_at, :abandoned)

    # Thread-local key of the step a handler thread holds (claimed, not yet handed back).
    HELD_KEY = :tasker_held_step
    private_constant :HELD_KEY

    # @return [Integer] handler threads the pool keeps
    attr_reader :concurrency

    # @param engine [Native::Engine] the engine whose claimed steps the threads run
    # @param registry [Registry]
    # @param concurrency [Integer]
    # @param logger [#warn, #error] TaskerCore::Logger or a ::Logger
    # @param timeout_grace [Numeric] seconds a handler gets to react to its timeout before its
    #   thread is retired and replaced
    def initialize(engine:, registry:, concurrency:, logger:, timeout_grace:)
      @engine = engine
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
    # after their claims expire. Never raises what ended a thread.
    # @return [Integer] threads that had to be killed
    def join(deadline)
      @lock.synchronize { @stopping = true }
      killed = 0
      threads.each do |t|
        left = deadline - monotonic
        next if ended?(t, [left, 0].max)

        t.kill
        ended?(t, 1)
        killed += 1
      end
      @watchdog&.kill
      @watchdog && ended?(@watchdog, 1)
      @lock.synchronize { @threads = [] }
      killed
    end

    # @return [Boolean] whether {join} was called or the engine began shutting down
    def stopping?
      @lock.synchronize { @stopping }
    end

    # @return [Integer] handler threads running a step now
    def busy_count
      @lock.synchronize { @running.size }
    end

    # @return [Integer] live handler threads that take new steps (a thread being killed, still
    #   running its `ensure` blocks, does not count)
    def alive_count
      threads.count { |t| t.alive? && !t[:tasker_retired] && t.status != "aborting" }
    end

    private

    def threads
      @lock.synchronize { @threads.dup }
    end

    # Whether `thread` ended within `limit` seconds. Thread#join re-raises the exception that
    # ended a thread: that is not the caller's, so it is not raised here.
    def ended?(thread, limit)
      !thread.join(limit).nil?
    rescue Exception # rubocop:disable Lint/RescueException
      raise if thread.alive? # raised in this thread (a signal while waiting), not by `thread`

      true
    end

    # Caller holds @lock.
    def spawn_thread
      @serial += 1
      thread = Thread.new { run }
      thread.name = "tasker-worker-#{@serial}"
      thread.report_on_exception = false
      @threads << thread
      thread
    end

    def run
      finished = false
      Thread.handle_interrupt(HandlerTimeout => :never) do
        until Thread.current[:tasker_retired]
          event = next_event
          break if event == false
          next if event.nil?

          serve(event)
        end
      end
      finished = true
    rescue Exception => e # rubocop:disable Lint/RescueException
      died_of = e
    ensure
      ended(Thread.current, finished, died_of)
    end

    # The next claimed step; false when the engine is shutting down; nil when none came.
    def next_event
      @engine.next_step(WAIT_SECONDS)
    rescue StandardError => e
      return false unless @engine.running?

      StepExecution.log(@logger, :error, "tasker worker: next_step failed (#{StepExecution.describe(e)}); retrying")
      sleep WAIT_SECONDS
      nil
    end

    # Run one step and hand its outcome back. The step stays held (thread-local) until it is
    # handed back, so a thread killed meanwhile reports it from its `ensure`.
    def serve(event)
      me = Thread.current
      me[HELD_KEY] = event
      me[Logger::CONTEXT_KEY] = event
      outcome = guarded(event)
      StepExecution.deliver(event, outcome, @logger) unless outcome.nil?
      me[HELD_KEY] = nil
    rescue Exception => e # rubocop:disable Lint/RescueException
      # A defect of the worker's own code, not the handler's: the step still gets an outcome,
      # and the thread carries on.
      me[HELD_KEY] = nil
      report_lost(event, Errors::InternalError,
                  "the worker failed while running step #{step_name(event)}: #{StepExecution.describe(e)}", e)
    ensure
      me[Logger::CONTEXT_KEY] = nil
    end

    # Run the handler; the watchdog may interrupt it with HandlerTimeout. Returns nil when the
    # watchdog already reported the step (the thread was retired).
    def guarded(event)
      running = Running.new(event, monotonic + event.timeout_seconds)
      @lock.synchronize { @running[Thread.current] = running }
      timed_out = false
      begin
        outcome = begin
          Thread.handle_interrupt(HandlerTimeout => :immediate) { StepExecution.run_handler(event, @registry) }
        rescue HandlerTimeout
          timed_out = true
          StepExecution.timeout_failure(event)
        end
      ensure
        interrupted = @lock.synchronize do
          @running.delete(Thread.current)
          running.interrupted_at
        end
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

    # A handler thread's last act. `finished`: its loop ended (retired, or the engine is
    # shutting down). Otherwise it died: it is replaced at once (unless the worker is stopping)
    # and the step it held is reported as failed.
    def ended(thread, finished, died_of)
      event = thread[HELD_KEY]
      thread[HELD_KEY] = nil
      replacement = @lock.synchronize do
        @threads.delete(thread)
        @running.delete(thread)
        # The loop ends by itself only when retired (already replaced) or when the engine is
        # shutting down: then no thread replaces it.
        @stopping = true if finished && !thread[:tasker_retired]
        spawn_thread unless finished || thread[:tasker_retired] || @stopping
      end
      return unless replacement

      how = died_of ? "raised #{StepExecution.describe(died_of)}" : "was killed"
      StepExecution.log(@logger, :error, "handler thread #{thread.name} #{how}; #{replacement.name} replaces it")
      return if event.nil?

      report_lost(event, ThreadDied,
                  "handler thread #{thread.name} #{how} while running step #{step_name(event)}", died_of)
    rescue Exception => e # rubocop:disable Lint/RescueException
      StepExecution.log(@logger, :error, "handler thread #{thread.name} ended badly: #{StepExecution.describe(e)}")
    end

    # Reports `event` as failed (retryable, a fault) with a `klass` error, unless its outcome was
    # handed back already (the watchdog reported it, or the thread died after handing it back).
    def report_lost(event, klass, message, cause)
      return if StepExecution.completed?(event)

      error = klass.new(message)
      error.set_backtrace(StepExecution.backtrace_of(cause)) if cause
      StepExecution.reported(error, event) do
        StepExecution.deliver(event, StepExecution.failure(error, "retryable", fault: true), @logger)
      end
    end

    def step_name(event)
      StepExecution.contained { event.step_name } || "?"
    end

    def watch
      loop do
        sleep 0.05
        supervise
      rescue Exception => e # rubocop:disable Lint/RescueException
        StepExecution.log(@logger, :error, "tasker watchdog: #{StepExecution.describe(e)}")
      end
    end

    # One watchdog round: interrupt handlers past their deadline, abandon those that ignore
    # it, and keep the pool at `concurrency` (a thread that died without replacing itself).
    def supervise
      now = monotonic
      dead = []
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
        next if @stopping

        dead = @threads.reject(&:alive?)
        dead.each do |t|
          @threads.delete(t)
          @running.delete(t)
        end
        (@concurrency - @threads.count { |t| !t[:tasker_retired] }).times { spawn_thread }
      end
      dead.each do |t|
        held = t[HELD_KEY]
        t[HELD_KEY] = nil
        report_lost(held, ThreadDied, "handler thread #{t.name} died while running step #{step_name(held)}", nil) if held
      end
    end

    # The handler ignored its timeout: report the step, retire the thread, start another.
    # Caller holds @lock.
    def abandon(thread, running)
      running.abandoned = true
      thread[:tasker_retired] = true
      StepExecution.log(@logger, :error,
                        "handler for step #{running.event.step_uuid} ignored its timeout; replacing its thread")
      StepExecution.deliver(running.event, StepExecution.timeout_failure(running.event), @logger)
      @threads.delete(thread)
      spawn_thread unless @stopping
    end

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
