# frozen_string_literal: true

require "rails/generators"

module TaskerCore
  # Rails generators of the gem.
  module Generators
    # `rails generate tasker_core:install`: an initializer, an example template and its handler.
    class InstallGenerator < ::Rails::Generators::Base
      source_root File.expand_path("templates", __dir__)
      desc "Adds config/initializers/tasker_core.rb, config/tasker/templates/hello.yaml and " \
           "app/handlers/hello_handler.rb"

      # Writes config/initializers/tasker_core.rb.
      # @return [void]
      def initializer
        template "initializer.rb", "config/initializers/tasker_core.rb"
      end

      # Writes config/tasker/templates/hello.yaml, a one-step task template.
      # @return [void]
      def example_template
        template "hello.yaml", "config/tasker/templates/hello.yaml"
      end

      # Writes app/handlers/hello_handler.rb, the handler of that template's step.
      # @return [void]
      def example_handler
        template "hello_handler.rb", "app/handlers/hello_handler.rb"
      end

      # Prints the commands that migrate the database and run the example task.
      # @return [void]
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
