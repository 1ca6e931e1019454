# frozen_string_literal: true

# tasker_core: workflows of Ruby step handlers on PostgreSQL (see the gem's docs/rails.md).
# Settings can also live in config.tasker_core.* (application.rb, environments/*.rb); what is
# set here wins. The database is the app's own (config/database.yml) unless
# TASKER_DATABASE_URL or DATABASE_URL names one. Environment variables: TASKER_CONCURRENCY,
# TASKER_NAMESPACES, TASKER_MODE, TASKER_LOG.
TaskerCore.configure do |c|
  # Templates are read from config/tasker/templates by default.
  c.namespaces = ["hello"]           # the namespaces whose steps this app's processes run
  c.concurrency = 4                  # handler threads per process
  # c.mode = :client                 # web processes that only create tasks
  # c.error_handlers << ->(error, context) { Rails.logger.error("#{error.class}: #{error.message} #{context}") }
end

# The engine starts by itself in server processes (bin/rails server, puma) and in
# `bundle exec tasker_core worker --rails`; never in rake tasks, consoles, runners or
# generators. true: in every process; false: only where TaskerCore.start is called.
# Rails.application.config.tasker_core.auto_start = nil
