# frozen_string_literal: true

require "rails/generators"
require "rails/generators/migration"

module TaskerCore
  # Rails generators of the gem.
  module Generators
    # `bin/rails generate tasker_core:install`: an initializer, an example template and its
    # handler, and (with ActiveRecord) the migration that installs the tasker schema on
    # `bin/rails db:migrate`. Running it again changes nothing that is already there.
    class InstallGenerator < ::Rails::Generators::Base
      include ::Rails::Generators::Migration

      source_root File.expand_path("templates", __dir__)
      desc "Adds config/initializers/tasker_core.rb, config/tasker/templates/hello.yaml, " \
           "app/handlers/hello_handler.rb and db/migrate/<timestamp>_install_tasker_core.rb"

      # The timestamp prefix of a new migration, as ActiveRecord's generators make it
      # (`rails generate migration`): UTC now, or one more than the newest one in `dirname`.
      # @param dirname [String] the migrations directory
      # @return [String]
      def self.next_migration_number(dirname)
        now = Time.now.utc.strftime("%Y%m%d%H%M%S")
        [now, format("%.14d", current_migration_number(dirname) + 1)].max
      end

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

      # Writes db/migrate/<timestamp>_install_tasker_core.rb, whose `up` applies the tasker
      # schema to the app's database (skipped, with a note, in an app without ActiveRecord).
      # @return [void]
      def migration
        unless defined?(::ActiveRecord::Railtie)
          say "No ActiveRecord here: apply the schema with `bin/rails tasker_core:migrate` " \
              "or `bundle exec tasker_core migrate`."
          return
        end

        @migration_version = ::ActiveRecord::Migration.current_version
        migration_template "install_tasker_core.rb.tt", "db/migrate/install_tasker_core.rb"
      end

      # Prints the commands that install the schema and run the example task.
      # @return [void]
      def next_steps
        say <<~TEXT

          tasker_core is set up. Next:
            bin/rails db:migrate        # installs the tasker schema (and upgrades it after a gem update)
            bin/rails runner 'TaskerCore.start; task = TaskerCore::Client.create_task(namespace: "hello", name: "greet", version: "1.0.0", context: { "name" => "Rails" }); puts TaskerCore::Client.wait_for(task.uuid, timeout: 10).steps.last.result["greeting"]; TaskerCore.stop'
          Then `bin/rails server` runs the engine (and the hello handlers) in the server process,
          or `bundle exec tasker_core worker --rails` in a process of its own. See docs/rails.md.
        TEXT
      end
    end
  end
end
