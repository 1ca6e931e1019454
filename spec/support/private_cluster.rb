# frozen_string_literal: true

require "socket"
require "tmpdir"
require "fileutils"

# A PostgreSQL cluster of one spec's own, which the spec may stop and start (the outage fault
# test). Same settings as bin/lib/pg_cluster.sh: trust auth on 127.0.0.1, a free port, data in a
# short /tmp directory; as root, the server runs as the `postgres` user.
class PrivateCluster
  attr_reader :url, :port

  def self.bin_dir
    ENV["PG_BIN"] || Dir["/usr/lib/postgresql/*/bin"].max_by { |d| d[%r{/(\d+)/bin\z}, 1].to_i } ||
      raise("no PostgreSQL server binaries under /usr/lib/postgresql")
  end

  def initialize(dbname: "tasker_outage", max_connections: 100)
    @dir = Dir.mktmpdir("tpc.", "/tmp")
    @dbname = dbname
    @max_connections = max_connections
    @port = free_port
    @url = "postgres://postgres@127.0.0.1:#{@port}/#{dbname}"
  end

  # initdb, start, create the database.
  def boot
    FileUtils.chown("postgres", nil, @dir) if Process.uid.zero?
    as_owner("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    start
    as_owner("psql", "-h", "127.0.0.1", "-p", @port.to_s, "-U", "postgres", "-Xq", "-c", "CREATE DATABASE #{@dbname}")
    self
  end

  def start
    as_owner("pg_ctl", "-D", data, "-l", "#{@dir}/log", "-w", "-t", "30", "-o",
             "-p #{@port} -k #{@dir} -c listen_addresses=127.0.0.1 -c max_connections=#{@max_connections} -c fsync=off",
             "start")
  end

  # Fast shutdown: every connection is cut at once, as in a crash of the server.
  def stop
    as_owner("pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "30", "stop")
  end

  def destroy
    as_owner("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", allow_failure: true)
    FileUtils.rm_rf(@dir)
  end

  private

  def data = "#{@dir}/data"

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def as_owner(tool, *args, allow_failure: false)
    cmd = [File.join(self.class.bin_dir, tool), *args]
    cmd = ["su", "postgres", "-s", "/bin/sh", "-c", cmd.map { |a| shell_quote(a) }.join(" ")] if Process.uid.zero?
    out = IO.popen(cmd, chdir: @dir, err: %i[child out], &:read)
    raise "#{tool} failed: #{out}" unless $?.success? || allow_failure

    out
  end

  def shell_quote(arg) = "'#{arg.gsub("'", %q('"'"'))}'"
end
