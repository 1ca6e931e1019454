# frozen_string_literal: true

require "logger"
require "stringio"
require "uri"

# TaskerCore::BootRetry on its own (what the Railtie and `worker --rails` start with), in this
# process, against a database of its own in the test cluster that starts out unmigrated.
RSpec.describe TaskerCore::BootRetry do
  let(:database) { "tasker_boot_retry_#{Process.pid}" }
  let(:url) { URI(DatabaseSupport.url).tap { |u| u.path = "/#{database}" }.to_s }
  let(:output) { StringIO.new }
  let(:logger) { Logger.new(output) }
  let(:lines) { -> { output.string.lines } }

  before do
    psql("CREATE DATABASE #{database}")
    TaskerCore.reset_configuration!
    TaskerCore.configure do |c|
      c.database_url = url
      c.namespaces = []
    end
  end

  after do
    TaskerCore.stop(timeout: 5)
    TaskerCore.reset_configuration!
    psql("DROP DATABASE IF EXISTS #{database} WITH (FORCE)")
  end

  def eventually_line(pattern, timeout: 10)
    eventually(timeout: timeout) { lines.call.grep(pattern).last }
  end

  it "logs one line per failed attempt, backs off, and starts once the schema is there" do
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect(described_class.start(logger: logger, wait: 3)).to be(false)
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 2 # the first attempt failed at once
    expect(described_class.retrying?).to be(true)
    expect(lines.call.size).to eq(1)
    expect(lines.call.first)
      .to match(/not started \(attempt 1, pid #{Process.pid}\): migration failed: the tasker schema is missing.*retrying in 1s/)

    eventually_line(/attempt 2, pid #{Process.pid}\).*retrying in 2s/, timeout: 5)
    TaskerCore.migrate!(database_url: url)
    expect(eventually_line(/started \(embedded, pid #{Process.pid}\) at attempt 3/, timeout: 8)).to include(TaskerCore::VERSION)
    expect(lines.call.grep(/not started/).size).to eq(2)
    expect(TaskerCore.running?).to be(true)
    expect(described_class.retrying?).to be(false)
    expect(described_class.start(logger: logger)).to be(true) # already running: nothing more
  end

  it "ends the retries at TaskerCore.stop, with no attempt after it" do
    described_class.start(logger: logger, wait: 0)
    eventually_line(/attempt 1, pid #{Process.pid}\)/)
    stopped = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect(TaskerCore.stop).to be(false)
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - stopped).to be < 1 # it was between attempts
    expect(described_class.retrying?).to be(false)
    count = lines.call.size
    sleep 1.5 # past the next attempt's time
    expect(lines.call.size).to eq(count)
    expect(TaskerCore.running?).to be(false)
  end

  it "raises settings and template errors at once instead of retrying" do
    TaskerCore.configuration.namespaces = ["Not A Namespace"]
    expect { described_class.start(logger: logger) }.to raise_error(TaskerCore::Errors::ConfigurationError, /namespaces/)
    TaskerCore.configuration.namespaces = []
    with_template_dir("broken.yaml" => "name: x\nnamespace: y\nversion: '1'\nsteps: [{ name: a }]\n") do |dir|
      TaskerCore.configuration.template_paths = [dir]
      expect { described_class.start(logger: logger) }.to raise_error(TaskerCore::Errors::TemplateError)
    end
    expect(described_class.retrying?).to be(false)
    expect(output.string).to eq("")
  end
end
