# frozen_string_literal: true

# A minimal Rails 6.1 application for the Rails integration specs (spec/rails/).
require "rails"
require "action_controller/railtie" # routes and the session, as in any Rails app that mounts the dashboard
require "tasker_core"

module DummyApp
  class Application < Rails::Application
    config.load_defaults 6.1
    config.root = File.expand_path("..", __dir__)
    config.eager_load = false
    config.cache_classes = false # development-style reloading
    config.secret_key_base = "x" * 64
    config.logger = Logger.new(ENV.fetch("RAILS_LOG", File::NULL))
    config.tasker_core.poll_interval = 0.1
    config.tasker_core.concurrency = 2
    # Not a server process: the specs' scripts want the engine started at boot all the same.
    config.tasker_core.auto_start = true
  end
end
