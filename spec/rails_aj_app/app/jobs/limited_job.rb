# frozen_string_literal: true

# At most one run per account at a time (tasker_core_options), each taking 0.3 s.
class LimitedJob < ApplicationJob
  tasker_core_options concurrency: { key: ->(job) { job.arguments.first }, limit: 1 }

  def perform(account)
    started = Time.now.to_f
    sleep 0.3
    record("account" => account, "started" => started, "finished" => Time.now.to_f)
  end
end
