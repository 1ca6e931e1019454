# frozen_string_literal: true

# An exception no retry_on or discard_on handles: it escapes Active Job.
class BoomJob < ApplicationJob
  def perform
    record
    raise ArgumentError, "boom"
  end
end
