# frozen_string_literal: true

# Stays on Rails' :async adapter while the others use tasker_core.
class AsyncJob < ApplicationJob
  self.queue_adapter = :async

  def perform
    record("adapter" => self.class.queue_adapter.class.name)
  end
end
