# frozen_string_literal: true

require "json"

module TaskerCore
  # Rack applications.
  module Web
    # A Rack application serving {TaskerCore.health} as JSON: 200 while the status is "ok" or
    # "degraded", 503 when the engine is stopped or the database unreachable. Needs no gem
    # beyond Rack's calling convention.
    #
    # @example config/routes.rb
    #   mount TaskerCore::Web::Health.new => "/health/tasker"
    class Health
      # The response headers.
      HEADERS = { "content-type" => "application/json", "cache-control" => "no-store" }.freeze

      # @param _env [Hash] the Rack environment (unused)
      # @return [Array(Integer, Hash, Array<String>)] a Rack response
      def call(_env)
        report = TaskerCore.health
        status = %w[ok degraded].include?(report["status"]) ? 200 : 503
        [status, HEADERS.dup, [JSON.generate(report)]]
      end
    end
  end
end
