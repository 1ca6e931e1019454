# frozen_string_literal: true

# Rails' own test conventions beside the tasker_core adapter (spec/rails/active_job_spec.rb
# runs this file): ActiveJob::TestHelper puts the :test adapter on the job classes, so nothing
# reaches the engine, which this process does not start.
ENV["AJ_SPEC_NO_START"] = "1"
require_relative "../config/environment"
require "active_support/test_case"
require "active_job/test_helper"
require "action_mailer/test_helper"
require "minitest/autorun"

class JobsTest < ActiveSupport::TestCase
  include ActiveJob::TestHelper
  include ActionMailer::TestHelper

  test "the test adapter replaces tasker_core on the job classes" do
    assert_kind_of ActiveJob::QueueAdapters::TestAdapter, RecordJob.queue_adapter
    assert_kind_of ActiveJob::QueueAdapters::TestAdapter, LimitedJob.queue_adapter
  end

  test "assert_enqueued_with sees a job and its arguments" do
    assert_enqueued_with(job: RecordJob, args: ["x"], queue: "default") { RecordJob.perform_later("x") }
    assert_enqueued_with(job: LimitedJob, args: ["account"]) { LimitedJob.perform_later("account") }
    assert_enqueued_email_with NotifierMailer, :hello, args: ["someone@example.com"] do
      NotifierMailer.hello("someone@example.com").deliver_later
    end
  end

  test "perform_enqueued_jobs runs jobs, scheduled ones included; retry_on enqueues on the test adapter" do
    perform_enqueued_jobs do
      RecordJob.perform_later("now")
      RecordJob.set(wait: 60).perform_later("later")
      LimitedJob.perform_later("a")
    end
    assert_performed_jobs 3
    # retry_on enqueues the retry through the class's adapter: here the test adapter's queue.
    assert_enqueued_with(job: FlakyJob) { FlakyJob.perform_now }
  end

  test "tasker_core_options are read from the class whatever its adapter" do
    assert_equal 1, LimitedJob.tasker_core_options.dig(:concurrency, :limit)
    assert_equal({}, RecordJob.tasker_core_options)
  end
end
