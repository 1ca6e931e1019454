# frozen_string_literal: true

class GoneError < StandardError; end

# Fails in a way Active Job discards: one run.
class DiscardJob < ApplicationJob
  discard_on GoneError

  def perform
    record
    raise GoneError, "the record is gone"
  end
end
