# frozen_string_literal: true

module TaskerCore
  module Web
    # The dashboard on a server of its own (`tasker_core web`): Puma when it is installed, else
    # WEBrick (through Rack's handler).
    class Server
      # @return [String] which server, with its version
      attr_reader :name

      # Listen on `bind`:`port` in background threads.
      # @param log [IO] where the server's warnings go
      # @return [Server]
      def self.start(bind:, port:, log: $stderr)
        new(bind, port, log)
      end

      def initialize(bind, port, log)
        @stopper = begin
          puma(bind, port)
        rescue LoadError
          webrick(bind, port, log)
        end
      end

      # Stop listening and let running requests finish.
      # @return [void]
      def stop = @stopper.call

      private

      def puma(bind, port)
        require "puma"
        require "puma/server"
        require "puma/events"
        server = Puma::Server.new(Web, Puma::Events.strings, { min_threads: 0, max_threads: 8 })
        server.add_tcp_listener(bind, port)
        server.run
        @name = "puma #{Puma::Const::PUMA_VERSION}"
        -> { server.stop(true) }
      end

      def webrick(bind, port, log)
        require "webrick"
        require "rack"
        require "rack/handler/webrick"
        server = WEBrick::HTTPServer.new(BindAddress: bind, Port: port, AccessLog: [],
                                         Logger: WEBrick::Log.new(log, WEBrick::BasicLog::WARN))
        server.mount("/", Rack::Handler::WEBrick, Web)
        thread = Thread.new { server.start }
        @name = "WEBrick #{WEBrick::VERSION}"
        lambda do
          server.shutdown
          thread.join(5)
        end
      end
    end
  end
end
