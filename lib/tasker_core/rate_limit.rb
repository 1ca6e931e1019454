# frozen_string_literal: true

module TaskerCore
  # Rate limits for handler code that calls an API inside a larger step: a sliding window kept
  # in PostgreSQL, shared by every process (and by steps whose `rate_limit` has the same
  # `name` and key), in which no `per` seconds ever see more than `limit` starts.
  #
  # @example at most 100 calls a minute per API token, from any process
  #   TaskerCore::RateLimit.acquire(:github, key: token, limit: 100, per: 60)
  #   client.get("/repos")
  module RateLimit
    # What a limit's name may be (as a template's `rate_limit.name`).
    NAME = %r{\A[A-Za-z0-9_./-]{1,128}\z}

    class << self
      # Take one start under the limit, waiting (sleeping, never spinning on the database)
      # until one is allowed.
      # @param name [String, Symbol] the limit's name
      # @param key [#to_s, nil] what the limit counts per (an API token, an account); nil: one
      #   count for the name
      # @param limit [Integer] starts allowed per window (1 to 1,000,000)
      # @param per [Numeric] the window, in seconds
      # @param timeout [Numeric] the longest wait; 0 to take a start only if one is free now
      # @return [true]
      # @raise [Errors::RateLimitedError] (retryable, with retry_after) when no start is allowed
      #   within `timeout`: raised from a handler, the step runs again when one may be
      # @raise [Errors::ValidationError] for a bad name, limit or window
      def acquire(name, limit:, per:, key: nil, timeout: 30)
        full = key_for(name, key)
        unless timeout.is_a?(Numeric) && timeout >= 0
          raise Errors::ValidationError, "timeout must be a number of seconds, at least 0"
        end

        deadline = clock + timeout
        loop do
          wait = TaskerCore.engine.acquire_rate(full, limit, per)
          return true if wait.zero?

          left = deadline - clock
          if wait > left
            raise Errors::RateLimitedError.new("rate limit #{full.inspect} (#{limit} per #{per} s) allows no start " \
                                               "within #{timeout} s", retry_after: wait.ceil(3))
          end
          sleep(wait)
        end
      end

      private

      def key_for(name, key)
        name = name.to_s
        unless NAME.match?(name)
          raise Errors::ValidationError,
                "rate limit name #{name.inspect} is invalid: use 1-128 letters, digits, '_', '-', '.' or '/'"
        end

        key.nil? ? name : "#{name}:#{key}"
      end

      def clock = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
