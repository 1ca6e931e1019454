# frozen_string_literal: true

class NoopJob < ApplicationJob
  def perform(index)
    record("index" => index)
  end
end
