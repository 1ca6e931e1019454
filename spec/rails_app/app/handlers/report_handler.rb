# frozen_string_literal: true

# Autoloaded from app/handlers (Zeitwerk); the version marker lets the reloading spec see a change.
class ReportHandler < TaskerCore::StepHandler::Base
  VERSION_MARK = "v1"

  def call(task, _sequence, _step)
    { "report" => "#{task.context['title']} #{VERSION_MARK}", "pid" => Process.pid }
  end
end
