# frozen_string_literal: true

require "tasker_core"

# Rails' Active Job (the gem adds its adapter here, where Active Job looks adapters up).
module ActiveJob
  # Active Job's adapters, looked up by name (`:tasker_core` → {TaskerCoreAdapter}).
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

      # Whether Active Job (Rails 7.2+) should hold an enqueue made inside an application
      # transaction until it commits: yes, unless the adapter enqueues inside that transaction
      # itself (`active_job_transaction = :active_record`).
      # @return [Boolean]
      def enqueue_after_transaction_commit?
        TaskerCore.configuration.active_job_transaction != :active_record
      end
    end
  end
end

# `tasker_core_options` in every job class (its limits apply when the class runs on tasker_core).
ActiveJob::Base.singleton_class.include(TaskerCore::ActiveJob::Options)
