# frozen_string_literal: true

# Records its arguments as it received them.
class RecordJob < ApplicationJob
  def perform(*args)
    record("args" => args.map { |a| a.is_a?(ActiveRecord::Base) ? "#{a.class.name}##{a.id}:#{a.name}" : a.inspect })
  end
end
