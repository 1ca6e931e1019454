# frozen_string_literal: true

require "tasker_core"
require_relative "../../examples/linear_workflow/handlers/linear_step_handlers"
require_relative "noop_handler"

module TaskerCore
  module Bench
    # What `rake bench:floor` (benches/ruby/floor.rb) observes from inside the handlers: the
    # monotonic moment a chain's last handler returned, by task uuid, and how many no-op
    # handlers have returned.
    module Floor
      @lock = Mutex.new
      @finished = ConditionVariable.new
      @last_done = {}
      @count = 0
      @target = nil

      class << self
        def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

        # Called by ChainLastHandler as it returns.
        def chain_done(task_uuid)
          at = now
          @lock.synchronize { @last_done[task_uuid.to_s] = at }
        end

        # The moment the last handler of this task returned (and forget it); nil if it has not.
        def take_chain_done(task_uuid)
          @lock.synchronize { @last_done.delete(task_uuid.to_s) }
        end

        # Count no-op handler returns from 0; wait_for_noops wakes at `target`.
        def expect_noops(target)
          @lock.synchronize do
            @count = 0
            @target = target
          end
        end

        def noop_done
          @lock.synchronize do
            @count += 1
            @finished.broadcast if @target && @count >= @target
          end
        end

        # No-op handler returns since expect_noops.
        def noops = @lock.synchronize { @count }

        # Blocks until `target` no-op handlers returned since expect_noops; false after `timeout` s.
        def wait_for_noops(timeout)
          deadline = now + timeout
          @lock.synchronize do
            while @count < @target
              left = deadline - now
              return false if left <= 0

              @finished.wait(@lock, left)
            end
            true
          end
        end
      end

      # Prepended to NoopHandler: counts each return (the bench_noop template stays as it is).
      module CountReturns
        def call(task, sequence, step)
          result = super
          Floor.noop_done
          result
        end
      end
    end

    NoopHandler.prepend(Floor::CountReturns)

    # The linear example's last step, recording when it returns (benches/templates/chain.yaml).
    class ChainLastHandler < LinearWorkflow::StepHandlers::LinearStep4Handler
      def call(task, sequence, step)
        result = super
        Floor.chain_done(task.uuid)
        result
      end
    end
  end
end
