# frozen_string_literal: true

require "tasker_core"

module ActiveJob
  module QueueAdapters
    # Active Job's adapter for tasker_core: `config.active_job.queue_adapter = :tasker_core`,
    # or `self.queue_adapter = :tasker_core` in one job class. Each job becomes a one-step task
    # of its queue's built-in template ({TaskerCore::ActiveJob}); see docs/active_job.md.
    class TaskerCoreAdapter
      # Enqueue a job to run as soon as a worker serving its queue is free.
      # @return [TaskerCore::Types::TaskRecord]
      def enqueue(job)
        TaskerCore::ActiveJob.enqueue(job)
      end

      # Enqueue a job to run at `timestamp` (a Unix time).
      # @return [TaskerCore::Types::TaskRecord]
      def enqueue_at(job, timestamp)
        TaskerCore::ActiveJob.enqueue(job, at: timestamp)
      end

      # Enqueue many jobs in one transaction (`ActiveJob.perform_all_later`).
      # @return [Integer] how many were enqueued
      def enqueue_all(jobs)
        TaskerCore::ActiveJob.enqueue_all(jobs)
      end

      # Whether Active Job may commit-guard enqueues (Rails 7.2): tasker_core's own transaction
      # is independent of the application's unless `transaction: :active_record` is used.
      # @return [Boolean]
      def enqueue_after_transaction_commit?
        true
      end
    end
  end
end
