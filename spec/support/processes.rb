# frozen_string_literal: true

require "rbconfig"
require "tempfile"

# Run Ruby snippets in real child processes (Process.spawn) with the gem and spec handlers
# loaded. Every spawned process is killed in an `ensure`.
module ProcessHelpers
  ROOT = File.expand_path("../..", __dir__)
  PRELUDE = <<~RUBY.freeze
    $stdout.sync = true
    $LOAD_PATH.unshift(File.join(#{ROOT.dump}, "lib"))
    require "tasker_core"
    Dir[File.join(#{ROOT.dump}, "examples/*/handlers/*.rb")].sort.each { |f| require f }
    require File.join(#{ROOT.dump}, "spec/fixtures/handlers/spec_handlers")
  RUBY

  Child = Struct.new(:pid, :output) do
    def read
      File.read(output.path)
    end
  end

  # Start `code` in a new Ruby process; returns a Child (pid + captured stdout/stderr).
  def spawn_ruby(code, env: {})
    output = Tempfile.new("tasker-child")
    script = Tempfile.new(["tasker-child", ".rb"])
    script.write(PRELUDE + code)
    script.flush
    pid = Process.spawn({ "DATABASE_URL" => DatabaseSupport.url }.merge(env), RbConfig.ruby, script.path,
                        out: output.path, err: %i[child out])
    (@children ||= []) << [pid, script]
    Child.new(pid, output)
  end

  # Wait for a child to exit within `timeout` seconds; returns its Process::Status.
  def wait_child(child, timeout: 60)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      _, status = Process.wait2(child.pid, Process::WNOHANG)
      return status if status
      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        raise "child #{child.pid} still running after #{timeout}s:\n#{child.read}"
      end

      sleep 0.05
    end
  end

  def kill_children
    (@children || []).each do |pid, _script|
      Process.kill(:KILL, pid)
      Process.wait(pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end
    @children = []
  end
end

RSpec.configure do |config|
  config.include ProcessHelpers
  config.after { kill_children }
end
