# frozen_string_literal: true

require "json"
require "optparse"
require_relative "cli/operations"

module TaskerCore
  # `exe/tasker_core`: migrate the database, validate templates, run the demo workflow.
  class CLI
    include Operations

    # The text `tasker_core --help` prints.
    USAGE = <<~TEXT
      Usage: tasker_core COMMAND [options]

      Commands:
        migrate [up]               apply the database schema (pgmq + tasker tables)
        migrate status             each migration and whether it is applied (exit 1 if any is pending)
        migrate down --to VERSION  revert the migrations newer than VERSION (0: all, dropping every task)
        templates validate PATH..  check task template files or directories
        task create NAMESPACE/NAME@VERSION --context JSON [--priority P] [--idempotency-key K]
        task status UUID           the task and its steps
        task cancel UUID [--reason TEXT]
        task retry-step UUID STEP [--reason TEXT]
        task resolve-step UUID STEP --result JSON [--reason TEXT]
        worker --namespaces a,b [--queues x,y] [--concurrency N] [--templates PATH] [-r FILE | --rails]
                                   run handlers until SIGTERM/SIGINT (drains, then exits 0)
        pause NAMESPACE[/TEMPLATE] [--reason TEXT]
                                   stop every process claiming the namespace's (template's) steps;
                                   the work stays queued
        resume NAMESPACE[/TEMPLATE]
                                   let them claim again
        schedules list             every cron schedule, its next tick and whether it is paused
        schedules trigger|pause|resume NAME
                                   fire a schedule now / stop it firing / let it fire again
        dead list [--namespace NS] [--limit N]
                                   messages archived as unrunnable (NS omitted: the task requests queue)
        dead replay ID [--namespace NS]
                                   send one back to its queue
        maintenance run [--completed D] [--errored D] [--archive D] [-r FILE | --rails]
                                   delete finished tasks and archived messages older than their
                                   retention (D: 90, 30m, 12h, 7d or forever; default: the loaded
                                   configuration's, else 7d / 30d / 7d)
        health                     print TaskerCore.health as JSON (exit 1 unless ok/degraded)
        web [--port N] [--bind ADDR] [-r FILE]
                                   serve the dashboard (TaskerCore::Web) until SIGTERM/SIGINT
        demo [--number N]          run the linear demo workflow and print each step
        version                    print the version

      The database comes from --database-url, TASKER_DATABASE_URL or DATABASE_URL.
      Every command takes --help.
    TEXT

    # The gem's examples/ directory (the demo command's templates and handlers).
    # @api private
    EXAMPLES = File.expand_path("../../examples", __dir__)

    def initialize(out, err)
      @out = out
      @err = err
    end

    # @return [Integer] exit status
    def run(argv)
      argv = argv.dup
      command = argv.shift
      case command
      when "migrate" then migrate(argv)
      when "templates" then templates(argv)
      when "demo" then demo(argv)
      when "task" then task(argv)
      when "worker" then worker(argv)
      when "health" then health(argv)
      when *OPERATIONS then operation(command, argv)
      when "web" then web(argv)
      when "version", "--version", "-v" then @out.puts(VERSION) || 0
      when nil, "help", "--help", "-h" then @out.puts(USAGE) || 0
      else fail_with("unknown command #{command.inspect} (see tasker_core --help)")
      end
    rescue Errors::Error, OptionParser::ParseError, LoadError, SystemCallError => e
      fail_with(e.message)
    end

    private

    def fail_with(message)
      @err.puts("tasker_core: #{message}")
      1
    end

    def database_options(argv, banner)
      options = { database_url: TaskerCore.configuration.database_url }
      parser = OptionParser.new do |o|
        o.banner = banner
        o.on("--database-url URL", "PostgreSQL URL") { |v| options[:database_url] = v }
        yield o, options if block_given?
      end
      parser.parse!(argv)
      options
    end

    def migrate(argv)
      usage = "Usage: tasker_core migrate [up|status|down --to VERSION] [--database-url URL]"
      options = database_options(argv, usage) do |o, opts|
        o.on("--to VERSION", Integer, "down: revert the migrations newer than VERSION (0: all)") { |v| opts[:to] = v }
      end
      case (action = argv.shift || "up")
      when "up"
        TaskerCore.migrate!(database_url: options[:database_url])
        @out.puts("migrations applied")
        0
      when "status" then migrate_status(options[:database_url])
      when "down" then migrate_down(options[:database_url], options[:to])
      else fail_with("unknown migrate action #{action.inspect} (up, status or down)")
      end
    end

    # Reverting drops data (down to 0: every task): it needs the version named explicitly.
    def migrate_down(database_url, target)
      raise OptionParser::MissingArgument, "--to VERSION (0 reverts every migration and drops all tasks)" unless target
      raise Errors::ConfigurationError, "no database: pass --database-url or set DATABASE_URL" unless database_url

      Native.rollback(database_url, target)
      @out.puts("migrations newer than #{target} reverted")
      0
    end

    def migrate_status(database_url)
      raise Errors::ConfigurationError, "no database: pass --database-url or set DATABASE_URL" unless database_url

      rows = Native.migration_status(database_url)
      rows.each do |version, description, applied|
        @out.puts(format("%-8s %s  %s", applied ? "applied" : "pending", version, description))
      end
      pending = rows.count { |_, _, applied| !applied }
      @out.puts(pending.zero? ? "up to date" : "#{pending} pending: run `tasker_core migrate`")
      pending.zero? ? 0 : 1
    end

    def templates(argv)
      OptionParser.new("Usage: tasker_core templates validate PATH...\n\n" \
                       "Check task template files or directories: each listed when all are valid, " \
                       "else the first error and exit 1.").parse!(argv)
      sub = argv.shift
      return fail_with("usage: tasker_core templates validate PATH...") unless sub == "validate" && argv.any?

      Native.validate_templates(argv).each do |t|
        @out.puts("ok  #{t['namespace']}/#{t['name']}@#{t['version']}  (#{t['steps'].size} steps)")
      end
      0
    end

    def task(argv)
      sub = argv.first&.start_with?("-") ? nil : argv.shift
      banner = "Usage: tasker_core task create|status|cancel|retry-step|resolve-step ARGS [options]"
      options = database_options(argv, sub ? "Usage: tasker_core task #{sub} ..." : banner) do |o, opts|
        o.on("--context JSON", "task input (a JSON object)") { |v| opts[:context] = parse_json(v, "--context") }
        o.on("--result JSON", "the step's result (any JSON value)") { |v| opts[:result] = parse_json(v, "--result") }
        o.on("--priority P", "low, normal, high, critical or an integer") { |v| opts[:priority] = v }
        o.on("--idempotency-key K", "return the existing task for this key") { |v| opts[:idempotency_key] = v }
        o.on("--reason TEXT", "recorded in the history") { |v| opts[:reason] = v }
      end
      unless %w[create status cancel retry-step resolve-step].include?(sub)
        return fail_with("usage: tasker_core task create|status|cancel|retry-step|resolve-step ... (see --help)")
      end

      with_client(options[:database_url]) do
        case sub
        when "create" then task_create(argv, options)
        when "status" then print_task(Client.find_task(one_arg(argv, "UUID")) || raise(Errors::NotFoundError, "no such task"))
        when "cancel" then print_task(Client.cancel_task(one_arg(argv, "UUID"), reason: options[:reason]))
        when "retry-step"
          uuid, step = two_args(argv, "UUID STEP")
          print_task(Client.retry_step(uuid, step, reason: options[:reason]))
        when "resolve-step"
          uuid, step = two_args(argv, "UUID STEP")
          raise OptionParser::MissingArgument, "--result" unless options.key?(:result)

          print_task(Client.resolve_step_manually(uuid, step, result: options[:result], reason: options[:reason]))
        end
      end
      0
    end

    def task_create(argv, options)
      ref = one_arg(argv, "NAMESPACE/NAME@VERSION")
      match = %r{\A([^/]+)/([^@]+)@(.+)\z}.match(ref) or
        raise Errors::ValidationError, "expected NAMESPACE/NAME@VERSION, got #{ref.inspect}"
      priority = options.fetch(:priority, "normal")
      priority = priority.match?(/\A-?\d+\z/) ? Integer(priority) : priority.to_sym
      record = Client.create_task(namespace: match[1], name: match[2], version: match[3],
                                  context: options.fetch(:context, {}), priority: priority,
                                  idempotency_key: options[:idempotency_key])
      @out.puts("#{record.created? ? 'created' : 'existing'} task #{record.uuid} " \
                "(correlation #{record.correlation_id}): #{record.status}")
    end

    def print_task(record)
      @out.puts("task #{record.uuid}  #{record.namespace}/#{record.name}@#{record.version}  #{record.status}")
      @out.puts("correlation #{record.correlation_id}")
      rows = record.steps.map do |s|
        [s.name, s.state, "#{s.attempts}/#{s.max_attempts}", (s.error ? s.error["message"] : s.result.to_json).to_s]
      end
      widths = [4, 5, 8].each_with_index.map { |min, i| ([min] + rows.map { |r| r[i].size }).max }
      @out.puts(format("  %-#{widths[0]}s  %-#{widths[1]}s  %-#{widths[2]}s  %s", "step", "state", "attempts",
                       "result / error"))
      rows.each do |r|
        @out.puts(format("  %-#{widths[0]}s  %-#{widths[1]}s  %-#{widths[2]}s  %s", r[0], r[1], r[2], r[3][0, 80]))
      end
    end

    def with_client(database_url)
      TaskerCore.configure do |c|
        c.database_url = database_url
        c.namespaces = []
      end
      TaskerCore.start
      yield
    ensure
      TaskerCore.stop(timeout: 5)
    end

    def load_rails_app
      environment = File.expand_path("config/environment.rb")
      unless File.file?(environment)
        raise Errors::ConfigurationError,
              "--rails: no Rails application here (#{environment} is missing)"
      end

      # tasker_core was loaded before Rails, so its Railtie was not: load it before the app's
      # config (config.tasker_core), and take the start over from boot (options apply first).
      boot = File.expand_path("config/boot.rb")
      require boot if File.file?(boot)
      require "rails"
      require_relative "railtie"
      Railtie.deferred_start = true
      require environment
      # Development-mode autoloading resolves handler classes on first use; a worker needs
      # them loaded like production does.
      Rails.application.eager_load! if defined?(Rails.application) && Rails.application.respond_to?(:eager_load!)
    end

    def parse_json(text, flag)
      JSON.parse(text)
    rescue JSON::ParserError => e
      raise Errors::ValidationError, "#{flag} is not JSON: #{e.message}"
    end

    def one_arg(argv, name)
      raise OptionParser::MissingArgument, name unless argv.size == 1

      argv.first
    end

    def two_args(argv, names)
      raise OptionParser::MissingArgument, names unless argv.size == 2

      argv
    end

    def worker(argv)
      options = worker_options(argv)
      load_rails_app if options[:rails]
      options[:requires].each { |f| require File.expand_path(f) }
      namespaces = options[:namespaces] || TaskerCore.configuration.namespaces
      queues = options[:queues] || TaskerCore.configuration.active_job_queues
      raise OptionParser::MissingArgument, "--namespaces (or --queues)" if namespaces.to_a.empty? && queues.to_a.empty?

      configure_worker(options, namespaces)
      run_worker(options[:rails], TaskerCore.configuration.served_namespaces)
    end

    def worker_options(argv)
      database_options(argv, "Usage: tasker_core worker --namespaces a,b [--queues x,y] [options]") do |o, opts|
        opts[:requires] = []
        opts[:templates] = []
        o.on("--namespaces LIST", Array, "namespaces whose steps this worker runs") { |v| opts[:namespaces] = v }
        o.on("--queues LIST", Array, "Active Job queues whose jobs this worker runs") { |v| opts[:queues] = v }
        o.on("--concurrency N", Integer, "handler threads (default 4)") { |v| opts[:concurrency] = v }
        o.on("--templates PATH", "template file or directory (repeatable)") { |v| opts[:templates] << v }
        o.on("-r", "--require FILE", "Ruby file with handler classes (repeatable)") { |v| opts[:requires] << v }
        o.on("--rails", "boot the Rails application in the current directory (its initializer configures " \
                        "TaskerCore; handlers load from app/)") { opts[:rails] = true }
      end
    end

    def configure_worker(options, namespaces)
      TaskerCore.configure do |c|
        c.database_url = options[:database_url] if options[:database_url]
        c.namespaces = namespaces
        c.active_job_queues = options[:queues] if options[:queues]
        c.mode = :embedded
        c.template_paths = options[:templates] unless options[:templates].empty?
        c.concurrency = options[:concurrency] if options[:concurrency]
      end
    end

    # Start, then wait for TERM or INT and drain.
    def run_worker(rails, namespaces)
      stop = Queue.new
      %w[TERM INT].each { |sig| trap(sig) { stop << sig } }
      # A Rails worker waits for its database (BootRetry logs each failed attempt to stderr).
      rails ? BootRetry.start(logger: ::Logger.new(@err, progname: "tasker_core")) : TaskerCore.start
      @out.puts("tasker_core worker #{Process.pid}: namespaces #{namespaces.join(', ')}, " \
                "#{TaskerCore.configuration.concurrency} threads")
      @out.flush
      signal = stop.pop
      @out.puts("tasker_core worker #{Process.pid}: #{signal} received, draining")
      TaskerCore.stop
      0
    end

    def health(argv)
      options = database_options(argv, "Usage: tasker_core health [--database-url URL]")
      report = nil
      with_client(options[:database_url]) { report = TaskerCore.health }
      @out.puts(JSON.pretty_generate(report))
      %w[ok degraded].include?(report["status"]) ? 0 : 1
    end

    def web(argv)
      options = database_options(argv, "Usage: tasker_core web [--port N] [--bind ADDR] [-r FILE] [--database-url URL]\n\n" \
                                       "Access: TASKER_WEB_USER and TASKER_WEB_PASSWORD (basic authentication), or a " \
                                       "file given with -r that calls TaskerCore::Web.authorize.") do |o, opts|
        opts.merge!(port: 9292, bind: "127.0.0.1", requires: [])
        o.on("--port N", Integer, "TCP port (default 9292)") { |v| opts[:port] = v }
        o.on("--bind ADDR", "address to listen on (default 127.0.0.1)") { |v| opts[:bind] = v }
        o.on("-r", "--require FILE", "Ruby file loaded first, e.g. one calling TaskerCore::Web.authorize") do |v|
          opts[:requires] << v
        end
      end
      options[:requires].each { |f| require File.expand_path(f) }
      with_client(options[:database_url]) { serve_web(options[:bind], options[:port]) }
      0
    end

    # Serve TaskerCore::Web until SIGTERM/SIGINT.
    def serve_web(bind, port)
      stop = Queue.new
      %w[TERM INT].each { |sig| trap(sig) { stop << sig } }
      server = Web::Server.start(bind: bind, port: port, log: @err)
      @err.puts("tasker_core web: the dashboard is at http://#{bind}:#{port}/ (#{server.name}); #{web_access_note}")
      stop.pop
      server.stop
    end

    def web_access_note
      if ENV["TASKER_WEB_USER"].to_s.empty? || ENV["TASKER_WEB_PASSWORD"].to_s.empty?
        "access as configured by -r files (closed, 403, unless one calls TaskerCore::Web.authorize or basic_auth)"
      else
        "basic authentication as TASKER_WEB_USER"
      end
    end

    def demo(argv)
      options = database_options(argv, "Usage: tasker_core demo [--number N] [--database-url URL]") do |o, opts|
        opts[:number] = 6
        o.on("--number N", Integer, "the even number to start from (default 6)") { |v| opts[:number] = v }
      end
      require File.join(EXAMPLES, "linear_workflow/handlers/linear_step_handlers")
      TaskerCore.migrate!(database_url: options[:database_url])
      TaskerCore.configure do |c|
        c.database_url = options[:database_url]
        c.template_paths = [File.join(EXAMPLES, "linear_workflow/templates")]
        c.namespaces = ["linear_workflow"]
        c.concurrency = 2
      end
      TaskerCore.start
      run_demo(options[:number])
    ensure
      TaskerCore.stop(timeout: 10)
    end

    def run_demo(number)
      task = Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                version: "1.0.0", context: { "even_number" => number })
      @out.puts("task #{task.uuid} (correlation #{task.correlation_id}): even_number = #{number}")
      printed = []
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
      loop do
        record = Client.find_task(task.uuid)
        record.steps.each do |s|
          next if printed.include?(s.name) || !%w[complete error].include?(s.state)

          printed << s.name
          @out.puts("  #{s.name.ljust(14)} #{s.state.ljust(8)} attempt #{s.attempts}  result: #{s.result.inspect}")
        end
        if record.terminal?
          last = record.steps.last
          @out.puts("task #{record.status}: final result #{last.result.inspect} " \
                    "(#{number}**16 = #{number**16}, #{last.result == number**16 ? 'correct' : 'WRONG'})")
          return record.complete? && last.result == number**16 ? 0 : 1
        end
        if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          return fail_with("demo task did not finish within 30 seconds")
        end

        sleep(0.02)
      end
    end
  end
end
