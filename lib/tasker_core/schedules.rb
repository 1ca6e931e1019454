# frozen_string_literal: true

module TaskerCore
  # Cron schedules at runtime ({TaskerCore.schedules}): each creates a task of the template it
  # names at every tick of its cron expression in its timezone, exactly one per tick however
  # many worker processes run. Schedules declared in the configuration
  # ({Configuration#schedules}) or in a template (`schedules:`) are listed and controlled here
  # too.
  #
  # @example
  #   TaskerCore.schedules.create(name: "nightly_report", cron: "0 3 * * *", timezone: "Europe/Berlin",
  #                               namespace: "reports", task: "nightly", version: "1.0.0")
  #   TaskerCore.schedules.trigger_now("nightly_report")
  class Schedules
    # @api private
    def initialize(engine)
      @engine = engine
    end

    # @return [Array<Hash>] every schedule: "name", "namespace", "task_name", "version", "cron",
    #   "timezone", "context", "missed", "source" (template, config or runtime), "paused",
    #   "last_tick" (the newest tick handled), "next_tick" (nil while paused)
    def list = @engine.schedules

    # One schedule by name.
    # @return [Hash, nil]
    def find(name) = list.find { |s| s["name"] == name.to_s }

    # Create a schedule.
    # @param cron [String] 5 fields (minute hour day month weekday), or 6 with a leading seconds field
    # @param timezone [String] an IANA name ("Europe/Berlin"); DST changes as Vixie cron has them
    # @param missed [Symbol] :skip (default) or :fire_once, for ticks that pass while no process runs
    # @raise [Errors::ValidationError] for a bad name, cron expression, timezone or a name taken
    # @raise [Errors::TemplateNotFoundError] when the template is not registered
    # @return [true]
    def create(name:, cron:, namespace:, task:, version:, timezone: "UTC", context: {}, missed: :skip)
      @engine.create_schedule(Configuration.schedule_hash(
                                name: name.to_s, cron: cron, namespace: namespace.to_s, task: task.to_s,
                                version: version.to_s, timezone: timezone.to_s, context: context, missed: missed
                              ))
      true
    end

    # Stop firing (ticks passing meanwhile never fire).
    # @return [Boolean] false when it was paused already
    def pause(name) = @engine.set_schedule_paused(name.to_s, true)

    # Fire again from the next tick.
    # @return [Boolean] false when it was not paused
    def resume(name) = @engine.set_schedule_paused(name.to_s, false)

    # Remove a schedule and its fire records. One a template or the configuration declares
    # comes back when a process declaring it starts.
    # @return [Boolean] false when there was none
    def delete(name) = @engine.delete_schedule(name.to_s)

    # Create the schedule's task now, outside its cron times (recorded as a manual fire).
    # @return [Types::TaskRecord]
    def trigger_now(name)
      Types::TaskRecord.new(@engine.trigger_schedule(name.to_s))
    end

    # @return [Array<Hash>] the ticks fired, newest first: "tick", "kind" (tick, missed or
    #   manual), "task_uuid", "fired_at"
    def fires(name, limit: 100) = @engine.schedule_fires(name.to_s, limit)
  end
end
