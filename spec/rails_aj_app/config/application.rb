# frozen_string_literal: true

# A Rails 6.1 application whose jobs run on tasker_core (spec/rails/active_job_spec.rb): Active
# Record on the spec database (a model for GlobalID arguments), Action Mailer with the :test
# delivery method, the engine embedded (this process runs the queues it serves).
require "rails"
require "active_record/railtie"
require "active_job/railtie"
require "action_mailer/railtie"
require "tasker_core"

module AjApp
  class Application < Rails::Application
    config.load_defaults 6.1
    config.root = File.expand_path("..", __dir__)
    config.eager_load = false
    config.cache_classes = false
    config.secret_key_base = "x" * 64
    config.logger = Logger.new(ENV.fetch("RAILS_LOG", File::NULL))
    config.active_job.queue_adapter = :tasker_core
    config.action_mailer.delivery_method = :test
    config.tasker_core.active_job_queues = %w[default mailers]
    config.tasker_core.poll_interval = 0.1
    config.tasker_core.concurrency = 4
    config.tasker_core.auto_start = ENV["AJ_SPEC_NO_START"].nil?
    # Jobs enqueued inside the application's transaction (the spec's second example).
    config.tasker_core.active_job_transaction = :active_record if ENV["AJ_SPEC_TRANSACTION"]
  end
end
