# frozen_string_literal: true

require "json"
require "net/http"
require "openssl"
require "time"
require "uri"

module TaskerCore
  module StepHandler
    # A handler for steps that call an HTTP API. Implement {#process} and use {#get}, {#post},
    # {#put} and {#delete}, which resolve paths against the step's `base_url` setting and turn
    # failures into the right step outcome:
    #
    # - 400, 401, 403, 404, 422 (and other 4xx) → {PermanentError} (`error_code: "http_<status>"`)
    # - 408, 425, 429, 503 → {RetryableError}, honouring `Retry-After` (seconds or an HTTP date)
    # - other 5xx, connection errors and timeouts → {RetryableError}
    #
    # Step configuration (`handler.initialization` in the template): `base_url` (required),
    # `headers` (a Hash sent with every request), `open_timeout` and `read_timeout` (seconds,
    # default 5 and 30).
    #
    # @example
    #   class FetchUser < TaskerCore::StepHandler::Api
    #     def process(task, _sequence, _step)
    #       get("/users/#{task.context['user_id']}")
    #     end
    #   end
    class Api < Base
      # What the request helpers return.
      Response = Struct.new(:status, :body, :headers, keyword_init: true) do
        def success? = status.between?(200, 299)
      end

      # Statuses that fail the step with {PermanentError}.
      PERMANENT_STATUSES = (400..499).to_a - [408, 425, 429]
      # Statuses that fail the step with {RetryableError}, honouring `Retry-After`.
      RETRY_AFTER_STATUSES = [408, 425, 429, 503].freeze

      # Called by the engine; runs {#process} and records the HTTP exchange in the metadata.
      def call(task, sequence, step)
        @exchanges = []
        returned = process(task, sequence, step)
        case returned
        when Types::StepHandlerCallResult then returned
        when Response then Types::StepHandlerCallResult.success(result: returned.body, metadata: http_metadata)
        when Hash then Types::StepHandlerCallResult.success(result: returned, metadata: http_metadata)
        else returned
        end
      end

      # Implement the step here.
      # @return [Response, Hash, Types::StepHandlerCallResult]
      def process(task, sequence, step)
        raise NotImplementedError, "#{self.class} must implement #process(task, sequence, step)"
      end

      # @return [Response] for a 2xx/3xx answer; raises for the others (see the class docs)
      def get(path, params: {}, headers: {}) = request(Net::HTTP::Get, path, params: params, headers: headers)

      # @param body [Hash, Array, String] sent as JSON unless a String
      def post(path, body: nil, headers: {}) = request(Net::HTTP::Post, path, body: body, headers: headers)

      # @param body [Hash, Array, String] sent as JSON unless a String
      # @return [Response] for a 2xx/3xx answer; raises for the others (see the class docs)
      def put(path, body: nil, headers: {}) = request(Net::HTTP::Put, path, body: body, headers: headers)

      # @return [Response] for a 2xx/3xx answer; raises for the others (see the class docs)
      def delete(path, headers: {}) = request(Net::HTTP::Delete, path, headers: headers)

      private

      def request(verb, path, params: {}, body: nil, headers: {})
        uri = resolve(path, params)
        req = verb.new(uri)
        default_headers.merge(headers).each { |k, v| req[k.to_s] = v.to_s }
        unless body.nil?
          req.body = body.is_a?(String) ? body : JSON.generate(body)
          req["Content-Type"] ||= "application/json"
        end
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        raw = perform(uri, req)
        elapsed_ms = ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000).round(1)
        response = Response.new(status: raw.code.to_i, body: parse_body(raw), headers: raw.each_header.to_h)
        (@exchanges ||= []) << { "method" => req.method, "url" => uri.to_s, "http_status" => response.status,
                                 "response_time_ms" => elapsed_ms }
        classify!(response, req.method, uri)
      end

      def perform(uri, req)
        Net::HTTP.start(uri.host, uri.port, use_ssl: uri.scheme == "https",
                                            open_timeout: config.fetch("open_timeout", 5),
                                            read_timeout: config.fetch("read_timeout", 30)) do |http|
          http.request(req)
        end
      rescue Timeout::Error, SystemCallError, SocketError, IOError, OpenSSL::SSL::SSLError => e
        raise RetryableError.new("#{req.method} #{uri} failed: #{e.class}: #{e.message}",
                                 metadata: { "url" => uri.to_s })
      end

      def classify!(response, method, uri)
        status = response.status
        return response if status < 400

        what = "#{method} #{uri} answered #{status}"
        meta = { "http_status" => status, "url" => uri.to_s }
        if RETRY_AFTER_STATUSES.include?(status)
          raise RetryableError.new(what, retry_after: retry_after(response.headers["retry-after"]), metadata: meta)
        end
        raise PermanentError.new(what, error_code: "http_#{status}", metadata: meta) if PERMANENT_STATUSES.include?(status)

        raise RetryableError.new(what, metadata: meta)
      end

      # Seconds from a Retry-After header: a number of seconds or an HTTP date.
      def retry_after(value)
        return nil if value.nil? || value.strip.empty?
        return [Float(value), 0].max if value.strip.match?(/\A\d+(\.\d+)?\z/)

        [Time.httpdate(value.strip) - Time.now, 0].max
      rescue ArgumentError
        nil
      end

      def parse_body(raw)
        body = raw.body
        return nil if body.nil? || body.empty?
        return body unless raw["content-type"].to_s.include?("json")

        JSON.parse(body)
      rescue JSON::ParserError
        body
      end

      def resolve(path, params)
        base = config["base_url"] or raise Errors::ConfigurationError,
                                           "#{self.class}: set handler.initialization.base_url in the template"
        uri = URI.join(base.end_with?("/") ? base : "#{base}/", path.to_s.delete_prefix("/"))
        uri.query = URI.encode_www_form(params) unless params.empty?
        uri
      end

      def default_headers
        { "Accept" => "application/json" }.merge(config.fetch("headers", {}))
      end

      def http_metadata
        last = @exchanges.last || {}
        last.merge("requests" => @exchanges.size)
      end
    end
  end
end
