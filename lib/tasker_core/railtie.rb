# frozen_string_literal: true

require "erb"

module TaskerCore
  # Rails integration, loaded only when Rails is (require "tasker_core" after Rails, as
  # Bundler.require does). Settings: `config.tasker_core.<setting>` in application.rb or an
  # environment file (same names as {Configuration}), overridden by an explicit
  # `TaskerCore.configure` in an initializer. The database defaults to ActiveRecord's.
  #
  # `config.tasker_core.auto_start`: nil (the default) starts the engine in server processes
  # only ({.server_process?}), never in rake tasks, consoles, runners or generators; true
  # starts it in every process; false never (call `TaskerCore.start`). A start never raises
  # out of boot for want of a database: {BootRetry} keeps trying in the background.
  class Railtie < ::Rails::Railtie
    config.tasker_core = ActiveSupport::OrderedOptions.new
    config.tasker_core.auto_start = nil

    # `queue_adapter = :tasker_core` (Active Job looks the adapter class up by name): the
    # adapter is defined as soon as Active Job is — registered here, when the gem is required,
    # so that it runs before Active Job's own hook applies config.active_job.queue_adapter.
    ActiveSupport.on_load(:active_job) { require "active_job/queue_adapters/tasker_core_adapter" }

    # Settings of config.tasker_core that are the Railtie's, not {Configuration}'s.
    OWN_SETTINGS = %i[auto_start].freeze

    # Where the tasker migrations are recorded (sqlx's table, in the public schema).
    SQLX_MIGRATIONS_TABLE = "_sqlx_migrations"

    # Adapters whose connection settings name a PostgreSQL database.
    POSTGRESQL_ADAPTERS = %w[postgresql postgis].freeze

    class << self
      # Set by `tasker_core worker --rails`, which starts the engine itself once it has applied
      # its own options: boot then leaves the engine alone whatever auto_start says.
      # @api private
      attr_accessor :deferred_start

      # Whether boot starts the engine, for a `config.tasker_core.auto_start` value.
      # @param setting [Boolean, nil] true, false, or nil (only in a server process)
      # @return [Boolean]
      # @raise [Errors::ConfigurationError] for any other value
      def auto_start?(setting)
        case setting
        when nil then server_process?
        when true, false then setting
        else
          raise Errors::ConfigurationError,
                "config.tasker_core.auto_start must be nil (start in server processes), true or false, " \
                "got #{setting.inspect}"
        end
      end

      # Whether this process serves the application over HTTP, judged while it boots:
      # `bin/rails server` defines `Rails::Server`; the `puma` executable defines
      # `Puma.cli_config`; and every Rack server (Puma, Unicorn, Passenger, Falcon, rackup)
      # loads the application from a rackup file, which is then on the call stack. Merely
      # loaded gems say nothing: Bundler.require loads puma in every process of an app whose
      # Gemfile has it, and `Puma::Server` is an autoload there.
      # @return [Boolean]
      def server_process?
        return true if defined?(::Rails::Server)
        return true if defined?(::Puma) && ::Puma.respond_to?(:cli_config)

        caller_locations.any? { |location| location.path.to_s.end_with?(".ru") }
      end

      # The database the engine uses and the tasker schema belongs in: TaskerCore's
      # `database_url` when it is set (TASKER_DATABASE_URL, DATABASE_URL, `TaskerCore.configure`),
      # else a URL built from the ActiveRecord settings when they name a PostgreSQL database:
      # `connection`'s, or else the current environment's first database in config/database.yml
      # (with DATABASE_URL merged in, as ActiveRecord does). Neither connects nor loads
      # ActiveRecord::Base.
      # @param connection [ActiveRecord::ConnectionAdapters::AbstractAdapter, nil]
      # @return [String, nil]
      def database_url(connection = nil)
        configured = TaskerCore.configuration.database_url
        return configured if configured.is_a?(String) && !configured.empty?
        return nil unless defined?(::ActiveRecord::Railtie)

        db_config = if connection
                      connection.pool.db_config
                    else
                      require "active_record/database_configurations"
                      ::ActiveRecord::DatabaseConfigurations.new(::Rails.application.config.database_configuration)
                                                            .find_db_config(::Rails.env.to_s)
                    end
        db_config && url_from_active_record(db_config.configuration_hash)
      rescue StandardError # no config/database.yml, or one that does not parse: no default
        nil
      end

      # A PostgreSQL URL for ActiveRecord connection settings (host, or a socket directory,
      # port, username, password, database and the ssl* settings); nil for another adapter.
      # @param settings [Hash]
      # @return [String, nil]
      def url_from_active_record(settings)
        s = settings.transform_keys(&:to_sym)
        return nil unless POSTGRESQL_ADAPTERS.include?(s[:adapter].to_s)

        user = s[:username] || s[:user]
        auth = ""
        if user
          auth = escape(user)
          auth += ":#{escape(s[:password])}" if s[:password]
          auth += "@"
        end
        host = s[:host].to_s.split(",").first.to_s # libpq's "a,b" host lists: the first one
        port = s[:port] ? ":#{Integer(s[:port])}" : ""
        query = %i[sslmode sslrootcert sslcert sslkey application_name].filter_map do |key|
          "#{key}=#{escape(s[key])}" if s[key]
        end
        "postgres://#{auth}#{escape(host)}#{port}/#{escape(s[:database] || s[:dbname])}" \
          "#{"?#{query.join("&")}" unless query.empty?}"
      end

      private

      def escape(value) = ERB::Util.url_encode(value.to_s)
    end

    # Rails config over environment defaults; initializers (run next) may still override.
    initializer "tasker_core.configure", before: :load_config_initializers do |app|
      configuration = TaskerCore.configuration
      app.config.tasker_core.each do |setting, value|
        next if OWN_SETTINGS.include?(setting)

        unless configuration.respond_to?(:"#{setting}=")
          raise Errors::ConfigurationError, "config.tasker_core.#{setting} is not a TaskerCore setting"
        end

        configuration.public_send(:"#{setting}=", value)
      end
      # The gem's own boot and shutdown messages; handler logs stay on TaskerCore::Logger.
      configuration.logger = ::Rails.logger if ::Rails.logger
      templates = app.root.join("config/tasker/templates")
      configuration.template_paths = [templates.to_s] if configuration.template_paths.empty? && templates.directory?
      # Each handler call runs inside the Rails reloader (and executor): development-mode code
      # reloading, query cache and connection handling as in a request.
      TaskerCore.handler_wrapper = ->(&call) { app.reloader.wrap(&call) }
    end

    # The tasker migrations' bookkeeping table lives in the public schema: db/schema.rb leaves
    # it out (tasker_core's own schemas are not dumped either), so that db:schema:load cannot
    # recreate it empty beside an installed tasker schema.
    initializer "tasker_core.schema_dumper" do
      ActiveSupport.on_load(:active_record) do
        require "active_record/schema_dumper"
        ::ActiveRecord::SchemaDumper.ignore_tables |= [TaskerCore::Railtie::SQLX_MIGRATIONS_TABLE]
      end
    end

    # Nothing here connects: rake tasks, consoles, runners, generators and asset builds boot
    # with the database absent, not created or not migrated.
    config.after_initialize do |app|
      TaskerCore.configuration.database_url ||= Railtie.database_url
      start = Railtie.auto_start?(app.config.tasker_core.auto_start)
      TaskerCore::BootRetry.start if start && !Railtie.deferred_start
    end

    rake_tasks do
      namespace :tasker_core do
        desc "Apply tasker_core's schema (pgmq and the tasker tables) to the database; safe to repeat"
        task migrate: :environment do
          url = TaskerCore::Railtie.database_url or
            raise Errors::ConfigurationError, "tasker_core: no PostgreSQL database configured " \
                                              "(config/database.yml, DATABASE_URL or TASKER_DATABASE_URL)"
          TaskerCore.migrate!(database_url: url)
        end
      end

      # The schema of a newer gem version arrives with the app's own migrations; a database
      # built from db/schema.rb (db:setup, db:prepare) gets it too. A no-op when up to date.
      %w[db:migrate db:schema:load db:prepare].each do |name|
        Rake::Task[name].enhance { Rake::Task["tasker_core:migrate"].invoke } if Rake::Task.task_defined?(name)
      end
    end

    generators do
      require_relative "../generators/tasker_core/install_generator"
    end
  end
end
