# frozen_string_literal: true

module TaskerCore
  # The handler classes this process may run: exactly those named by the templates it loaded.
  # A class name arriving with a step is resolved only if a template registered it, so a
  # string from the database or a queue never becomes an arbitrary constant.
  class Registry
    # @return [Array<Hash>] summaries of the loaded templates
    attr_reader :templates

    # @param templates [Array<Hash>] summaries returned by the native engine
    def initialize(templates)
      @templates = templates.map(&:freeze).freeze
      # Each registered name, split once into constant names (Symbols): resolving then
      # allocates nothing, yet always finds the class currently bound to the name.
      @handlers = templates.flat_map { |t| t["handlers"] }.uniq
                           .to_h { |name| [name, name.split("::").map(&:to_sym).freeze] }.freeze
      @configs = {}
      @configs_lock = Mutex.new
    end

    # @return [Boolean]
    def registered?(class_name)
      @handlers.key?(class_name)
    end

    # @return [Array<String>] registered handler class names
    def handler_names
      @handlers.keys
    end

    # Resolve a registered handler class. Resolved on every dispatch (never cached), so code
    # reloading in development picks up new class objects.
    # @raise [Errors::HandlerNotFoundError]
    # @return [Class]
    def resolve(class_name)
      unless registered?(class_name)
        raise Errors::HandlerNotFoundError,
              "handler #{class_name.inspect} is not registered by any template loaded in this process"
      end
      klass = begin
        path = @handlers.fetch(class_name)
        scope = Object
        i = 0
        while i < path.size
          scope = scope.const_get(path[i], false)
          i += 1
        end
        scope
      rescue NameError
        raise Errors::HandlerNotFoundError,
              "handler #{class_name} is named by a template but is not defined (is its file loaded?)"
      end
      unless klass.is_a?(Class) && klass <= StepHandler::Base
        raise Errors::HandlerNotFoundError, "#{class_name} is not a subclass of TaskerCore::StepHandler::Base"
      end

      klass
    end

    # The step's handler configuration as a deep-frozen Hash, converted once per template step.
    # @api private
    def config_for(event)
      id = event.handler_config_id
      @configs[id] || @configs_lock.synchronize { @configs[id] ||= Types.deep_freeze(event.handler_config) }
    end
  end
end
