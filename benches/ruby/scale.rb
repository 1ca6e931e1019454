# frozen_string_literal: true

# `rake bench:scale`: 1, 2 and 4 worker processes (benches/ruby/scale_worker.rb, no-op Ruby
# handlers, CONCURRENCY threads each) draining the same backlog on one PostgreSQL — first on
# this host's loopback, then each worker in a network namespace of its own reaching PostgreSQL
# over a veth pair (a separate "host", benches/ruby/scale_network.rb). Per configuration:
# steps/s, the p50 latency of 4-step chains created (priority high) every 200 ms during the
# drain, PostgreSQL's share of the machine's CPU and its CPU per step, the workers' CPU.
# Prints `scale.<config>.<name>=<value>` lines.
#
#   DATABASE_URL=... PG_DATA=<cluster data dir> ruby benches/ruby/scale.rb
#   env: TASKS=10000 PROCESSES=1,2,4 NETNS=1 (0: loopback only) CONCURRENCY=10

$LOAD_PATH.unshift(File.expand_path("../../lib", __dir__))
require "tasker_core"
require "pg"
require "etc"
require "shellwords"
require_relative "scale_network"

url = ENV.fetch("DATABASE_URL")
pg_data = ENV.fetch("PG_DATA")
tasks = Integer(ENV.fetch("TASKS", "10000"))
counts = ENV.fetch("PROCESSES", "1,2,4").split(",").map { |n| Integer(n) }
netns = ENV.fetch("NETNS", "1") != "0"
concurrency = ENV.fetch("CONCURRENCY", "10")
worker = File.expand_path("scale_worker.rb", __dir__)
templates = File.expand_path("../templates", __dir__)
ticks = Etc.sysconf(Etc::SC_CLK_TCK).to_f
cores = Etc.nprocessors

def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def out(key, value)
  value = format("%.3f", value) if value.is_a?(Float)
  puts "scale.#{key}=#{value}"
  $stdout.flush
end

# CPU seconds used so far by `pid` (and, with children, by the children it has reaped).
def cpu_seconds(pid, ticks, reaped: false)
  fields = File.read("/proc/#{pid}/stat").split(") ", 2).last.split
  used = fields[11].to_i + fields[12].to_i
  used += fields[13].to_i + fields[14].to_i if reaped
  used / ticks
rescue Errno::ENOENT, Errno::ESRCH
  0.0
end

# CPU seconds of the whole PostgreSQL cluster: the postmaster (with the backends it reaped)
# and every live child.
def pg_cpu(postmaster, ticks)
  children = Dir["/proc/[0-9]*/stat"].select do |stat|
    File.read(stat).split(") ", 2).last.split[1].to_i == postmaster
  rescue Errno::ENOENT, Errno::ESRCH
    false
  end
  cpu_seconds(postmaster, ticks, reaped: true) +
    children.sum { |stat| cpu_seconds(stat[%r{/proc/(\d+)/}, 1].to_i, ticks) }
end

postmaster = Integer(File.readlines(File.join(pg_data, "postmaster.pid")).first)
TaskerCore.migrate!(database_url: url)
TaskerCore.configure do |c|
  c.database_url = url
  c.template_paths = [templates]
  c.mode = :client
  c.retention = { interval: nil }
end
TaskerCore.start
monitor = PG.connect(url)
port = monitor.exec("SHOW port").getvalue(0, 0)
puts "# #{tasks} no-op tasks per run, #{concurrency} handler threads per worker, #{cores} cores, " \
     "PostgreSQL #{monitor.exec('SHOW server_version').getvalue(0, 0)}"

run = lambda do |label, hosts|
  monitor.exec("TRUNCATE tasker.tasks, tasker.task_transitions, tasker.workflow_step_transitions CASCADE")
  monitor.exec("SELECT pgmq.purge_queue(queue_name) FROM pgmq.list_queues()")
  TaskerCore.pause(namespace: "bench_noop", reason: "bench:scale backlog")
  (tasks / 500).times do
    TaskerCore::Client.create_tasks(Array.new(500) { { namespace: "bench_noop", name: "noop", version: "1.0.0", context: {} } })
  end
  monitor.exec("VACUUM ANALYZE")
  monitor.exec("CHECKPOINT")
  workers = hosts.map do |host|
    worker_url = host ? url.sub("127.0.0.1", host.host_address) : url
    command = ["ruby", worker]
    command = host.wrap(command) if host
    reader, writer = IO.pipe
    pid = Process.spawn({ "DATABASE_URL" => worker_url, "CONCURRENCY" => concurrency }, *command,
                        out: writer, err: File::NULL)
    writer.close
    [pid, reader]
  end
  workers.each do |pid, reader|
    line = reader.gets or raise "#{label}: worker #{pid} exited before it was ready"
    raise "#{label}: worker said #{line.inspect}" unless line.start_with?("ready")
  end
  cpu0 = pg_cpu(postmaster, ticks)
  started = now
  TaskerCore.resume(namespace: "bench_noop")
  chains = []
  sampler = Thread.new do
    loop do
      chains << TaskerCore::Client.create_task(namespace: "bench_chain", name: "chain", version: "1.0.0",
                                               context: { "even_number" => 2 }, priority: :high).uuid
      sleep 0.2
    end
  end
  loop do
    done = monitor.exec("SELECT count(*) FROM tasker.tasks WHERE namespace = 'bench_noop' AND status = 'complete'")
                  .getvalue(0, 0).to_i
    break if done >= tasks / 500 * 500
    raise "#{label}: #{done} of #{tasks} done after 600 s" if now - started > 600

    sleep 0.05
  end
  finished = now
  cpu1 = pg_cpu(postmaster, ticks)
  sampler.kill
  chains.each { |uuid| TaskerCore::Client.wait_for(uuid, timeout: 60) }
  latencies = monitor.exec("SELECT extract(epoch FROM completed_at - created_at) * 1000 FROM tasker.tasks " \
                           "WHERE namespace = 'bench_chain' AND status = 'complete' ORDER BY 1").values.flatten.map(&:to_f)
  worker_cpu = workers.sum { |pid, _| cpu_seconds(pid, ticks) }
  Process.kill(:TERM, *workers.map(&:first))
  workers.each do |pid, reader|
    Process.wait(pid)
    reader.close
  end
  wall = finished - started
  steps = tasks / 500 * 500
  out "#{label}.processes", hosts.size
  out "#{label}.steps_per_s", steps / wall
  out "#{label}.chain_p50_ms", latencies.empty? ? 0.0 : latencies[latencies.size / 2]
  out "#{label}.chains", latencies.size
  out "#{label}.pg_cpu_share", (cpu1 - cpu0) / (wall * cores)
  out "#{label}.pg_cpu_us_per_step", (cpu1 - cpu0) / steps * 1e6
  out "#{label}.workers_cpu_share", worker_cpu / (wall * cores)
end

counts.each { |n| run.call("local#{n}", Array.new(n)) }
if netns
  TaskerCore::Bench::ScaleNetwork.with_hosts(counts.max) do |hosts|
    # PostgreSQL listens on the host side of every pair too (and trusts those addresses only).
    addresses = ["127.0.0.1", *hosts.map(&:host_address)].join(",")
    File.open(File.join(pg_data, "pg_hba.conf"), "a") { |f| f.puts "host all all 198.18.0.0/15 trust" }
    monitor.close
    TaskerCore.stop
    # Restarted with the options it was started with, listen_addresses widened.
    args = Shellwords.split(File.read(File.join(pg_data, "postmaster.opts"))).drop(1)
    args = args.map { |a| a.start_with?("listen_addresses=") ? "listen_addresses=#{addresses}" : a }
    args = args.each_slice(2).reject { |flag, _| flag == "-D" }.flatten
    pg_ctl = File.join(ENV.fetch("PG_BIN"), "pg_ctl")
    restart = "#{pg_ctl} -D #{pg_data.shellescape} -w -m fast stop && " \
              "#{pg_ctl} -D #{pg_data.shellescape} -w -l #{File.join(pg_data, '../log').shellescape} " \
              "-o #{args.shelljoin.shellescape} start"
    system("su", "postgres", "-s", "/bin/sh", "-c", restart, out: File::NULL) or
      raise "restarting PostgreSQL on the veth addresses failed"
    postmaster = Integer(File.readlines(File.join(pg_data, "postmaster.pid")).first)
    TaskerCore.start
    monitor = PG.connect(url)
    out "netns.addresses", hosts.map { |h| "#{h.address}->#{h.host_address}:#{port}" }.join(",")
    counts.each { |n| run.call("netns#{n}", hosts.first(n)) }
  end
end
TaskerCore.stop
