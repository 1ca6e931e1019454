# frozen_string_literal: true

require "tmpdir"

# Start the engine for one example and always stop it.
module EngineHelpers
  FIXTURES = File.expand_path("../fixtures", __dir__)
  EXAMPLES = File.expand_path("../../examples", __dir__)

  def with_engine(namespaces: [], template_paths: [], concurrency: 2, database_url: DatabaseSupport.url, **settings)
    TaskerCore.reset_configuration!
    TaskerCore.configure do |c|
      c.poll_interval = 0.1
      settings.each { |k, v| k == :error_handlers ? c.error_handlers.concat(v) : c.public_send("#{k}=", v) }
      c.database_url = database_url
      c.namespaces = namespaces
      c.template_paths = template_paths
      c.concurrency = concurrency
    end
    TaskerCore.start
    yield
  ensure
    TaskerCore.stop(timeout: 10)
    TaskerCore.reset_configuration!
  end

  # Poll until the block returns a truthy value; fail after `timeout` seconds.
  def eventually(timeout: 10, interval: 0.02)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      value = yield
      return value if value

      raise "condition not met within #{timeout}s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep interval
    end
  end

  # The next item of `queue`, waiting up to `timeout` seconds (Ruby 3.1's Queue#pop has no
  # timeout: `pop(timeout: 5)` there is a non-blocking pop that raises when empty).
  def pop_within(queue, timeout: 5)
    eventually(timeout: timeout) { queue.empty? ? nil : [queue.pop(true)] }.first
  end

  # Write templates into a fresh directory; yields its path.
  def with_template_dir(files)
    Dir.mktmpdir("tasker-templates") do |dir|
      files.each { |name, body| File.write(File.join(dir, name), body) }
      yield dir
    end
  end

  def linear_template_dir
    File.join(EXAMPLES, "linear_workflow/templates")
  end

  def fixture_templates
    File.join(FIXTURES, "templates")
  end

  def examples_dir
    EXAMPLES
  end
end

RSpec.configure do |config|
  config.include EngineHelpers
end

Dir[File.join(EngineHelpers::EXAMPLES, "*/handlers/*.rb")].sort.each { |f| require f }
require File.join(EngineHelpers::FIXTURES, "handlers/spec_handlers")
