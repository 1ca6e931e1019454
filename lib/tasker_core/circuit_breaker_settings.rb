# frozen_string_literal: true

module TaskerCore
  # The `circuit_breakers` section of the configuration: defaults that depend on the
  # environment, overridden per component and per name.
  #
  #   c.circuit_breakers = {
  #     defaults: { failure_threshold: 5, timeout: 30, success_threshold: 2 }, # every breaker
  #     pgmq:     { timeout: 10 },                       # every namespace queue's breaker
  #     handlers: { failure_threshold: 3 },              # every handler class's breaker
  #     namespaces: { "billing" => { timeout: 5 } },     # one namespace queue
  #     handler_classes: { "Billing::Charge" => { failure_threshold: 10 } },
  #     named: { "payments_api" => { timeout: 60 } }     # TaskerCore::CircuitBreaker.call(:payments_api)
  #   }
  #
  # Each setting is `failure_threshold` (consecutive failures that open the breaker),
  # `timeout` (seconds it stays open before one trial call) and `success_threshold` (trial
  # successes that close it). A value given here is merged over the environment's defaults:
  # component settings over `defaults`, a named entry over its component.
  # @api private
  class CircuitBreakerSettings
    # The settings of one breaker.
    KEYS = %i[failure_threshold timeout success_threshold].freeze
    # The top-level keys of the section.
    SECTIONS = %i[defaults pgmq handlers namespaces handler_classes named].freeze

    # A profile of the engine's defaults (`Native::DEFAULTS`, defined once in the core) with
    # Symbol keys: { defaults: {...}, pgmq: {...}, handlers: {...} }.
    def self.profile(name)
      Native::DEFAULTS.fetch("circuit_breakers").fetch(name).to_h do |component, one|
        [component.to_sym, one.transform_keys(&:to_sym).freeze]
      end.freeze
    end
    private_class_method :profile

    # Production trips later and waits longer before a trial; development and test recover
    # within seconds so a broken local setup heals while you watch.
    QUICK = profile("quick")
    # Defaults of the `defaults`, `pgmq` and `handlers` components, by environment name.
    ENVIRONMENT_DEFAULTS = {
      "production" => profile("production"),
      "development" => QUICK,
      "test" => QUICK
    }.freeze

    # @param environment [String] production, development, test; anything else (staging, ...)
    #   gets the production defaults
    def self.environment_defaults(environment)
      ENVIRONMENT_DEFAULTS.fetch(environment.to_s, ENVIRONMENT_DEFAULTS["production"])
    end

    # @raise [Errors::ConfigurationError] naming the offending entry
    def self.validate!(settings)
      fail_with("must be a Hash with keys #{SECTIONS.join(", ")}") unless settings.is_a?(Hash)
      unknown = settings.keys.map(&:to_sym) - SECTIONS
      fail_with("has unknown keys #{unknown.join(", ")} (known: #{SECTIONS.join(", ")})") if unknown.any?
      settings.each do |section, value|
        if %i[namespaces handler_classes named].include?(section.to_sym)
          fail_with("#{section} must be a Hash of name => settings") unless value.is_a?(Hash)
          value.each do |name, one|
            validate_namespace!(name) if section.to_sym == :namespaces
            validate_one!("#{section}[#{name.to_s.inspect}]", one)
          end
        else
          validate_one!(section, value)
        end
      end
    end

    # Checks the settings of one breaker or component.
    # @param where [String, Symbol] the entry's name in error messages
    # @param value [Hash] failure_threshold, timeout and/or success_threshold
    # @raise [Errors::ConfigurationError]
    def self.validate_one!(where, value)
      fail_with("#{where} must be a Hash of #{KEYS.join(", ")}") unless value.is_a?(Hash)
      value.each do |key, v|
        case key.to_sym
        when :failure_threshold, :success_threshold
          fail_with("#{where}: #{key} must be an Integer from 1 to 1000000") unless v.is_a?(Integer) && v.between?(1, 1_000_000)
        when :timeout
          unless v.is_a?(Numeric) && v.real? && v.positive? && v <= Configuration::MAX_SECONDS
            fail_with("#{where}: timeout must be a positive number of seconds, " \
                      "at most #{Configuration::MAX_SECONDS.to_i}, got #{v.inspect}")
          end
        else
          fail_with("#{where}: unknown setting #{key} (known: #{KEYS.join(", ")})")
        end
      end
    end

    # Checks that a `namespaces` key is a valid namespace name (the engine's rule).
    # @raise [Errors::ConfigurationError]
    def self.validate_namespace!(name)
      problem = Native.namespace_problem(name.to_s)
      fail_with("namespaces: #{problem}") if problem
    end

    def self.fail_with(message)
      raise Errors::ConfigurationError, "TaskerCore configuration: circuit_breakers #{message}"
    end
    private_class_method :fail_with

    # The effective settings: environment defaults merged with the user's section, every
    # component fully specified, names as Strings.
    def self.resolve(environment, settings)
      base = environment_defaults(environment)
      user = settings.transform_keys(&:to_sym)
      defaults = symbolize(base[:defaults]).merge(symbolize(user[:defaults]))
      # A component inherits what `defaults` sets explicitly, then its own settings.
      component = lambda do |name|
        symbolize(base[name]).merge(symbolize(user[:defaults])).merge(symbolize(user[name]))
      end
      pgmq = component.call(:pgmq)
      handlers = component.call(:handlers)
      {
        defaults: defaults, pgmq: pgmq, handlers: handlers,
        namespaces: named(user[:namespaces], pgmq),
        handler_classes: named(user[:handler_classes], handlers),
        named: named(user[:named], defaults)
      }
    end

    def self.symbolize(hash)
      (hash || {}).transform_keys(&:to_sym)
    end

    def self.named(entries, base)
      (entries || {}).to_h { |name, one| [name.to_s, base.merge(symbolize(one))] }
    end
    private_class_method :symbolize, :named

    # The form the native extension reads.
    def self.to_native(one)
      { "failure_threshold" => one[:failure_threshold], "timeout" => one[:timeout],
        "success_threshold" => one[:success_threshold] }
    end
  end
end
