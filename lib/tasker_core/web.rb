# frozen_string_literal: true

require "json"
require "erb"
require "securerandom"
require "openssl"
require "uri"
require "time"
require_relative "web/health"
require_relative "web/dag"
require_relative "web/request"
require_relative "web/app"
require_relative "web/server"

module TaskerCore
  # The operator dashboard: a Rack application (it needs no gem beyond Rack's calling
  # convention) that shows tasks, their DAGs and the engine's figures, and lets an operator
  # cancel a task, retry a failed step or resolve it by hand. Every page also answers JSON
  # (`Accept: application/json`).
  #
  # Closed by default: until access is configured every request gets 403 with a page saying how
  # to enable it.
  #
  # @example config/routes.rb (Rails)
  #   mount TaskerCore::Web => "/tasker"
  # @example config.ru
  #   run TaskerCore::Web
  # @example config/initializers/tasker_core.rb
  #   TaskerCore::Web.authorize do |request|
  #     user = request.env["warden"]&.user
  #     next nil unless user
  #     { role: user.admin? ? :admin : :read_only, actor: user.email }
  #   end
  #   # or: TaskerCore::Web.basic_auth(ENV.fetch("TASKER_WEB_USER"), ENV.fetch("TASKER_WEB_PASSWORD"))
  module Web
    # The roles an authorization may grant: `:admin` sees everything and may act; `:read_only`
    # sees everything, gets no action buttons and 403 on every POST.
    ROLES = %i[admin read_only].freeze

    # Who a request is: its role and the actor recorded with its actions.
    Access = Struct.new(:role, :actor) do
      # @return [Boolean] whether this access may act (POST)
      def admin? = role == :admin
    end

    class << self
      # Decide access with a block: it gets the {Request} (its `env` is the Rack environment,
      # Warden and the Rails session included) and returns `:admin`, `:read_only`, a Hash
      # `{ role:, actor: }` (the actor is recorded with every action), or nil/false for 403.
      # Replaces {basic_auth}.
      # @return [void]
      def authorize(&block)
        raise ArgumentError, "TaskerCore::Web.authorize needs a block" unless block

        @authorizer = block
        @basic = nil
      end

      # HTTP basic authentication with one user (compared in constant time). Replaces
      # {authorize}. Without either, `TASKER_WEB_USER` and `TASKER_WEB_PASSWORD` enable it.
      # @param role [Symbol] what the user may do: `:admin` or `:read_only`
      # @return [void]
      def basic_auth(user, password, role: :admin)
        if user.to_s.empty? || password.to_s.empty?
          raise Errors::ConfigurationError, "TaskerCore::Web.basic_auth needs a user and a password"
        end
        raise Errors::ConfigurationError, "role must be one of #{ROLES.inspect}" unless ROLES.include?(role)

        @basic = [user.to_s, password.to_s, role]
        @authorizer = nil
      end

      # Forget the configured access (closed again).
      # @return [void]
      def reset!
        @authorizer = nil
        @basic = nil
      end

      # The Rack entry point.
      # @param env [Hash] the Rack environment
      # @return [Array(Integer, Hash, Array<String>)]
      def call(env)
        App.new(env).response
      end

      # What a request may do, or nil (no access configured: 403), or `:challenge` (basic
      # authentication configured, credentials missing or wrong: 401).
      # @api private
      # @return [Access, Symbol, nil]
      def access_for(request)
        if @authorizer
          granted(@authorizer.call(request))
        elsif (basic = @basic || env_basic)
          basic_access(request, *basic)
        end
      end

      private

      def env_basic
        user = ENV.fetch("TASKER_WEB_USER", nil)
        password = ENV.fetch("TASKER_WEB_PASSWORD", nil)
        return nil if user.to_s.empty? || password.to_s.empty?

        [user, password, :admin]
      end

      def basic_access(request, user, password, role)
        given_user, given_password = request.basic_credentials
        return :challenge unless given_user && same?(given_user, user) & same?(given_password, password)

        Access.new(role, user)
      end

      # Constant-time comparison (the digests have the same length whatever was sent).
      def same?(given, expected)
        OpenSSL.fixed_length_secure_compare(OpenSSL::Digest::SHA256.digest(given.to_s),
                                            OpenSSL::Digest::SHA256.digest(expected.to_s))
      end

      def granted(answer)
        role, actor = answer.is_a?(Hash) ? [answer[:role] || answer["role"], answer[:actor] || answer["actor"]] : [answer, nil]
        role = role.to_sym if role.is_a?(String)
        return nil unless ROLES.include?(role)

        Access.new(role, actor.nil? || actor.to_s.empty? ? "web" : actor.to_s)
      end
    end
  end
end
