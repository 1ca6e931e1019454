# frozen_string_literal: true

# tasker_core: workflows of Ruby step handlers on PostgreSQL (see the gem's docs/rails.md).
# Settings can also live in config.tasker_core.* (application.rb, environments/*.rb); what is
# set here wins. Environment variables: TASKER_DATABASE_URL / DATABASE_URL, TASKER_CONCURRENCY,
# TASKER_NAMESPACES, TASKER_MODE, TASKER_LOG.
TaskerCore.configure do |c|
  # Templates are read from config/tasker/templates by default.
  c.namespaces = ["hello"]           # the namespaces whose steps this app's processes run
  c.concurrency = 4                  # handler threads per process
  # c.mode = :client                 # web processes that only create tasks
  # c.error_handlers << ->(error, context) { Rails.error.report(error, context: context) }
end
