# frozen_string_literal: true

module TaskerCore
  module Web
    # A Rack request as the dashboard reads it (no Rack gem needed): method, path under the
    # mount point, query and form parameters, cookies, headers.
    class Request
      # Most bytes of a form body read.
      MAX_BODY = 1024 * 1024

      # @return [Hash] the Rack environment
      attr_reader :env

      def initialize(env)
        @env = env
      end

      # @return [String] "GET", "POST", ...
      def request_method = @env["REQUEST_METHOD"].to_s.upcase

      # @return [String] the path under the mount point ("/" at least)
      def path
        path = @env["PATH_INFO"].to_s
        path.empty? ? "/" : path
      end

      # @return [String] where the dashboard is mounted ("" at the root)
      def prefix = @env["SCRIPT_NAME"].to_s.chomp("/")

      # @return [Hash{String => String}] query parameters (the last value of a repeated one)
      def query
        @query ||= decode(@env["QUERY_STRING"].to_s)
      end

      # @return [Hash{String => String}] form parameters of a POST (url-encoded body)
      def form
        @form ||= begin
          input = @env["rack.input"]
          body = input ? input.read(MAX_BODY).to_s : ""
          input.rewind if input.respond_to?(:rewind)
          type = @env["CONTENT_TYPE"].to_s
          type.empty? || type.start_with?("application/x-www-form-urlencoded") ? decode(body) : {}
        end
      end

      # @return [Hash{String => String}]
      def cookies
        @cookies ||= @env["HTTP_COOKIE"].to_s.split(/;\s*/).each_with_object({}) do |pair, out|
          name, value = pair.split("=", 2)
          out[name] ||= URI.decode_www_form_component(value.to_s) if name && !name.empty?
        rescue ArgumentError
          next
        end
      end

      # @param name [String] a header name, e.g. "Origin"
      # @return [String, nil]
      def header(name) = @env["HTTP_#{name.upcase.tr('-', '_')}"]

      # @return [Boolean] whether the client asked for JSON
      def json? = header("Accept").to_s.include?("application/json")

      # @return [Boolean]
      def https? = @env["HTTPS"] == "on" || @env["rack.url_scheme"] == "https" || header("X-Forwarded-Proto") == "https"

      # @return [String] scheme://host[:port] the request was made to
      def origin
        host = header("Host") || [@env["SERVER_NAME"], @env["SERVER_PORT"]].compact.join(":")
        "#{https? ? 'https' : 'http'}://#{host}"
      end

      # @return [Array(String, String), nil] user and password of HTTP basic authentication
      def basic_credentials
        auth = header("Authorization").to_s
        return nil unless auth.start_with?("Basic ")

        decoded = auth.delete_prefix("Basic ").unpack1("m")
        user, password = decoded.split(":", 2)
        user && password ? [user, password] : nil
      rescue ArgumentError
        nil
      end

      # @return [Hash, nil] the Rack session (Rails'), when there is one
      def session
        session = @env["rack.session"]
        session.respond_to?(:[]) && session.respond_to?(:[]=) ? session : nil
      end

      private

      def decode(text)
        URI.decode_www_form(text.scrub("")).to_h
      rescue ArgumentError
        {}
      end
    end
  end
end
