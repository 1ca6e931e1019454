# frozen_string_literal: true

# What Active Job itself costs per job, without tasker_core: `ActiveJob::Base.execute` of a
# no-op job (the adapter's Executor calls exactly this), its parts, and the same without
# Active Job's log subscriber. Single thread, nothing else running in the process.
#
#   ruby benches/ruby/active_job_cost.rb   (outside the bundle: Debian's Active Job)
#   env: N=20000

require "active_job"
require "active_support/core_ext/object/json"
require "logger"

ActiveJob::Base.logger = Logger.new(nil)

# A job that does nothing.
class CostNoopJob < ActiveJob::Base
  def perform(_index) = nil
end

n = Integer(ENV.fetch("N", "20000"))
data = CostNoopJob.new(1).serialize.as_json

measure = lambda do |label, &work|
  GC.start
  allocated = GC.stat(:total_allocated_objects)
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  n.times(&work)
  seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  puts format("active_job.%s_us=%.1f active_job.%s_allocations=%d", label, seconds / n * 1e6, label,
              (GC.stat(:total_allocated_objects) - allocated) / n)
end

puts "# Active Job #{ActiveJob.version}, Ruby #{RUBY_VERSION}, #{n} jobs"
measure.call("execute") { ActiveJob::Base.execute(data) }
measure.call("deserialize") { ActiveJob::Base.deserialize(data) }
measure.call("serialize") { CostNoopJob.new(1).serialize.as_json }
ActiveJob::LogSubscriber.detach_from :active_job
measure.call("execute_without_log_subscriber") { ActiveJob::Base.execute(data) }
