# frozen_string_literal: true

module TaskerCore
  class CLI
    # The operator's commands: pause|resume, schedules, dead.
    # @api private
    module Operations
      private

      # The commands this module runs.
      OPERATIONS = %w[pause resume schedules dead maintenance].freeze

      def operation(command, argv)
        case command
        when "pause", "resume" then pause_or_resume(command, argv)
        when "schedules" then schedules(argv)
        when "dead" then dead(argv)
        else maintenance(argv)
        end
      end

      def pause_or_resume(command, argv)
        usage = "Usage: tasker_core #{command} NAMESPACE[/TEMPLATE]#{' [--reason TEXT]' if command == 'pause'}"
        options = database_options(argv, usage) do |o, opts|
          o.on("--reason TEXT", "why (recorded)") { |v| opts[:reason] = v } if command == "pause"
        end
        target = argv.shift
        return fail_with("usage: tasker_core #{command} NAMESPACE[/TEMPLATE]") if target.nil? || argv.any?

        namespace, template = target.split("/", 2)
        with_client(options[:database_url]) do
          if command == "pause"
            TaskerCore.pause(namespace: namespace, template: template, reason: options[:reason])
            from = template ? "its next claim" : "within one poll interval"
            @out.puts("paused #{target}: no process claims its steps from #{from}")
          else
            resumed = TaskerCore.resume(namespace: namespace, template: template)
            @out.puts(resumed ? "resumed #{target}" : "#{target} was not paused")
          end
        end
        0
      end

      def schedules(argv)
        sub = argv.first&.start_with?("-") ? nil : argv.shift
        options = database_options(argv, "Usage: tasker_core schedules list|trigger|pause|resume [NAME]")
        usage = "usage: tasker_core schedules list|trigger|pause|resume [NAME]"
        return fail_with(usage) unless %w[list trigger pause resume].include?(sub)

        with_client(options[:database_url]) do
          if sub == "list"
            raise OptionParser::NeedlessArgument, argv.first if argv.any?

            print_schedules(TaskerCore.schedules.list)
          else
            @out.puts(schedule_action(sub, one_arg(argv, "NAME")))
          end
        end
        0
      end

      def schedule_action(sub, name)
        case sub
        when "trigger"
          record = TaskerCore.schedules.trigger_now(name)
          "triggered #{name}: task #{record.uuid} (correlation #{record.correlation_id})"
        when "pause" then TaskerCore.schedules.pause(name) ? "paused #{name}" : "#{name} was paused already"
        else TaskerCore.schedules.resume(name) ? "resumed #{name}: it fires from its next tick" : "#{name} was not paused"
        end
      end

      SCHEDULE_ROW = "%-28s %-18s %-14s %-32s %-6s %s"

      def print_schedules(rows)
        return @out.puts("no schedules") if rows.empty?

        @out.puts(format(SCHEDULE_ROW, "NAME", "CRON", "TIMEZONE", "TASK", "STATE", "NEXT TICK"))
        rows.each do |r|
          task = "#{r['namespace']}/#{r['task_name']}@#{r['version']}"
          @out.puts(format(SCHEDULE_ROW, r["name"], r["cron"], r["timezone"], task, r["paused"] ? "paused" : "on",
                           r["next_tick"] || "-"))
        end
      end

      def dead(argv)
        sub = argv.first&.start_with?("-") ? nil : argv.shift
        options = database_options(argv, "Usage: tasker_core dead list|replay [ID] [--namespace NS] [--limit N]") do |o, opts|
          o.on("--namespace NS", "whose queue (default: the task requests queue)") { |v| opts[:namespace] = v }
          o.on("--limit N", Integer, "at most N (default 50)") { |v| opts[:limit] = v }
        end
        return fail_with("usage: tasker_core dead list|replay [ID] [--namespace NS]") unless %w[list replay].include?(sub)

        with_client(options[:database_url]) { sub == "list" ? dead_list(options) : dead_replay(argv, options) }
        0
      rescue ArgumentError => e
        fail_with("dead replay: ID must be a message id (#{e.message})")
      end

      def dead_list(options)
        letters = TaskerCore.dead_letters(namespace: options[:namespace], limit: options.fetch(:limit, 50))
        @out.puts("no dead letters") if letters.empty?
        letters.each { |l| @out.puts("#{l['msg_id']}  #{l['archived_at']}  #{l['reason']}\n    #{l['message']}") }
      end

      def dead_replay(argv, options)
        id = Integer(one_arg(argv, "ID"), 10)
        new_id = TaskerCore.replay(id, namespace: options[:namespace])
        @out.puts("replayed dead letter #{id} as message #{new_id}")
      end

      # A retention window from the command line: seconds, or a number with s/m/h/d, or
      # "forever" (nil: keep).
      RETENTION_UNITS = { "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400 }.freeze

      def maintenance(argv)
        sub = argv.first&.start_with?("-") ? nil : argv.shift
        windows = {}
        options = database_options(argv, "Usage: tasker_core maintenance run [--completed D] [--errored D] " \
                                          "[--archive D] [-r FILE | --rails]") do |o, opts|
          %i[completed errored archive].each do |key|
            o.on("--#{key} D", "keep #{key} work this long (90, 30m, 12h, 7d, forever)") do |v|
              windows[key] = retention_window(key, v)
            end
          end
          o.on("-r", "--require FILE", "load the application's configuration from FILE") { |v| opts[:require] = v }
          o.on("--rails", "load the Rails application here (its tasker_core configuration)") { opts[:rails] = true }
        end
        return fail_with("usage: tasker_core maintenance run [--completed D] [--errored D] [--archive D]") unless sub == "run"

        run_maintenance(options, windows)
        0
      ensure
        TaskerCore.stop(timeout: 5) if TaskerCore.running?
      end

      # Load the application's configuration (if asked), apply the windows given, run a pass.
      def run_maintenance(options, windows)
        load_rails_app if options[:rails]
        require File.expand_path(options[:require]) if options[:require]
        url = options[:database_url] || TaskerCore.configuration.database_url
        TaskerCore.configure do |c|
          c.database_url = url
          c.namespaces = []
          c.active_job_queues = []
          c.retention = c.retention.merge(windows)
        end
        used = TaskerCore.configuration.resolved_retention
        @out.puts("retention: #{%i[completed errored archive].map { |k| "#{k} #{describe_window(used[k])}" }.join(', ')}")
        TaskerCore.start
        report = TaskerCore.run_maintenance
        @out.puts("deleted #{report['tasks']} tasks (#{report['steps']} steps, #{report['transitions']} transitions), " \
                  "#{report['archived']} archived messages in #{report['batches']} batches")
      end

      def retention_window(key, text)
        return nil if text == "forever"

        number, unit = text.match(/\A(\d+(?:\.\d+)?)([smhd]?)\z/)&.captures
        raise OptionParser::InvalidArgument, "--#{key} #{text}: give seconds, 30m, 12h, 7d or forever" unless number

        Float(number) * RETENTION_UNITS.fetch(unit.empty? ? "s" : unit)
      end

      def describe_window(seconds)
        return "forever" if seconds.nil?

        (seconds % 86_400).zero? ? "#{(seconds / 86_400).to_i}d" : "#{seconds.round(1)}s"
      end
    end
  end
end
