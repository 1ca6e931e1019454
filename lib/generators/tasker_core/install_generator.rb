# frozen_string_literal: true

require "rails/generators"

module TaskerCore
  module Generators
    # `rails generate tasker_core:install`: an initializer, an example template and its handler.
    class InstallGenerator < ::Rails::Generators::Base
      source_root File.expand_path("templates", __dir__)
      desc "Adds config/initializers/tasker_core.rb, config/tasker/templates/hello.yaml and " \
           "app/handlers/hello_handler.rb"

      def initializer
        template "initializer.rb", "config/initializers/tasker_core.rb"
      end

      def example_template
        template "hello.yaml", "config/tasker/templates/hello.yaml"
      end

      def example_handler
        template "hello_handler.rb", "app/handlers/hello_handler.rb"
      end

      def next_steps
        say <<~TEXT

          tasker_core is set up. Next:
            bin/rails runner 'TaskerCore.migrate!'      # the schema, once per database
            bin/rails runner 'p TaskerCore::Client.wait_for(TaskerCore::Client.create_task(namespace: "hello", name: "greet", version: "1.0.0", context: { "name" => "Rails" }).uuid, timeout: 10).steps.last.result'
        TEXT
      end
    end
  end
end
