# frozen_string_literal: true

class FlakyError < StandardError; end

# Always fails: Active Job retries it, three runs in all.
class FlakyJob < ApplicationJob
  retry_on FlakyError, wait: 1, attempts: 3

  def perform
    record
    raise FlakyError, "still flaky"
  end
end
