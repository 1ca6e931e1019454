# frozen_string_literal: true

class ApplicationJob < ActiveJob::Base
  # One JSON line per run, in the file the spec names.
  def record(extra = {})
    line = { "job" => self.class.name, "job_id" => job_id, "executions" => executions, "pid" => Process.pid,
             "at" => Time.now.to_f, "queue" => queue_name }.merge(extra)
    File.open(ENV.fetch("AJ_SPEC_LOG"), "a") { |f| f.puts(JSON.generate(line)) }
  end
end
