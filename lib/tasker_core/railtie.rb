# frozen_string_literal: true

module TaskerCore
  # Rails integration, loaded only when Rails is (require "tasker_core" after Rails, as
  # Bundler.require does). Settings: `config.tasker_core.<setting>` in application.rb or an
  # environment file (same names as {Configuration}), overridden by an explicit
  # `TaskerCore.configure` in an initializer; `config.tasker_core.auto_start = false` keeps the
  # engine stopped until `TaskerCore.start`.
  class Railtie < ::Rails::Railtie
    config.tasker_core = ActiveSupport::OrderedOptions.new
    config.tasker_core.auto_start = true

    # Rails config over environment defaults; initializers (run next) may still override.
    initializer "tasker_core.configure", before: :load_config_initializers do |app|
      configuration = TaskerCore.configuration
      app.config.tasker_core.each do |setting, value|
        next if setting == :auto_start

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

    config.after_initialize do |app|
      if app.config.tasker_core.auto_start
        TaskerCore.start
        TaskerCore.configuration.logger.info("tasker_core #{VERSION} started (#{TaskerCore.configuration.mode})")
      end
    end

    generators do
      require_relative "../generators/tasker_core/install_generator"
    end
  end
end
