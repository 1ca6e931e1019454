# frozen_string_literal: true

require "optparse"

module TaskerCore
  # `exe/tasker_core`: migrate the database, validate templates, run the demo workflow.
  class CLI
    USAGE = <<~TEXT
      Usage: tasker_core COMMAND [options]

      Commands:
        migrate                    apply the database schema (pgmq + tasker tables)
        templates validate PATH..  check task template files or directories
        demo [--number N]          run the linear demo workflow and print each step
        version                    print the version

      The database comes from --database-url, TASKER_DATABASE_URL or DATABASE_URL.
    TEXT

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
      when "version", "--version", "-v" then @out.puts(VERSION) || 0
      when nil, "help", "--help", "-h" then @out.puts(USAGE) || 0
      else fail_with("unknown command #{command.inspect} (see tasker_core --help)")
      end
    rescue Errors::Error, OptionParser::ParseError => e
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
      options = database_options(argv, "Usage: tasker_core migrate [--database-url URL]")
      TaskerCore.migrate!(database_url: options[:database_url])
      @out.puts("migrations applied")
      0
    end

    def templates(argv)
      sub = argv.shift
      return fail_with("usage: tasker_core templates validate PATH...") unless sub == "validate" && argv.any?

      Native.validate_templates(argv).each do |t|
        @out.puts("ok  #{t['namespace']}/#{t['name']}@#{t['version']}  (#{t['steps'].size} steps)")
      end
      0
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
        return fail_with("demo task did not finish within 30 seconds") if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep(0.02)
      end
    end
  end
end
