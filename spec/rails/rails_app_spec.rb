# frozen_string_literal: true

require "fileutils"
require "open3"
require "rbconfig"
require "tmpdir"

# A real Rails 6.1 application (Debian's ruby-rails; spec/rails_app) boots with the gem, in
# processes of its own.
RSpec.describe "Rails integration" do
  let(:app_dir) { File.expand_path("../rails_app", __dir__) }
  let(:lib_dir) { File.expand_path("../../lib", __dir__) }

  # Run Ruby code inside the application directory (outside this suite's bundle).
  def in_app(dir, code)
    run = lambda do
      Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, "-I", lib_dir, "-e", code, chdir: dir)
    end
    out, err, status = defined?(Bundler) ? Bundler.with_unbundled_env(&run) : run.call
    raise "app process failed (#{status.exitstatus}):\n#{out}\n#{err}" unless status.success?

    out
  end

  def copy_app
    dir = Dir.mktmpdir("rails-app")
    FileUtils.cp_r("#{app_dir}/.", dir)
    dir
  end

  it "boots with the initializer and config.tasker_core, runs a handler from app/, and restarts in a forked child" do
    out = in_app(app_dir, <<~'RUBY')
      require "./config/environment"
      c = TaskerCore.configuration
      puts "settings #{c.namespaces.inspect} #{c.poll_interval} #{c.concurrency} #{c.logger.equal?(Rails.logger)}"
      puts "running #{TaskerCore.running?}"
      task = TaskerCore::Client.create_task(namespace: "dummy", name: "report", version: "1.0.0", context: { "title" => "Q3" })
      done = TaskerCore::Client.wait_for(task.uuid, timeout: 20)
      puts "parent #{done.status} #{done.steps.first.result["report"]}"
      reader, writer = IO.pipe
      go_reader, go_writer = IO.pipe
      pid = fork do
        reader.close
        go_writer.close
        go_reader.gets # the parent has stopped its engine: only this process can run the step
        child = TaskerCore::Client.create_task(namespace: "dummy", name: "report", version: "1.0.0", context: { "title" => "fork" })
        finished = TaskerCore::Client.wait_for(child.uuid, timeout: 20)
        writer.puts "child #{finished.status} #{finished.steps.first.result["report"]} #{finished.steps.first.result["pid"] == Process.pid}"
        TaskerCore.stop
        exit!(0)
      end
      writer.close
      go_reader.close
      TaskerCore.stop # forked while running; the child must start and use its own engine
      go_writer.puts("go")
      go_writer.close
      Process.wait(pid)
      puts reader.read
      TaskerCore.stop
    RUBY
    expect(out).to include('settings ["dummy"] 0.1 2 true', "running true", "parent complete Q3 v1",
                           "child complete fork v1 true")
  end

  it "starts the engine at boot only where auto_start says so: nil outside a server process is not" do
    out = in_app(app_dir, <<~'RUBY')
      require "./config/application"
      Rails.application.config.tasker_core.auto_start = nil # this script is no server
      Rails.application.initialize!
      puts "server #{TaskerCore::Railtie.server_process?} running #{TaskerCore.running?}"
    RUBY
    expect(out.strip).to eq("server false running false")
    expect { in_app(app_dir, <<~'RUBY') }.to raise_error(/auto_start must be nil .*, true or false, got "yes"/)
      require "./config/application"
      Rails.application.config.tasker_core.auto_start = "yes"
      Rails.application.initialize!
    RUBY
  end

  it "serves the dashboard mounted in the routes, under its prefix, with its CSRF token in the Rails session" do
    out = in_app(app_dir, <<~'RUBY')
      require "./config/environment"
      require "rack/mock"
      mock = Rack::MockRequest.new(Rails.application)
      get = ->(path, env = {}) { mock.get(path, { "HTTP_HOST" => "localhost" }.merge(env)) } # a host Rails allows
      puts "closed #{get.call('/tasker/').status}"
      TaskerCore::Web.authorize { |request| { role: :admin, actor: request.env["HTTP_X_USER"] } }
      page = get.call("/tasker/tasks")
      puts "tasks #{page.status} #{page.body.include?('href="/tasker/tasks"')} #{page.body.include?('href="/tasker/processes"')}"
      overview = get.call("/tasker/", "HTTP_ACCEPT" => "application/json")
      cookies = Array(overview.headers["Set-Cookie"]).join("\n") # JSON pages carry the CSRF token
      puts "json #{overview.status} #{JSON.parse(overview.body)['namespaces'].include?('dummy')} " \
           "session #{cookies.include?('_dummy_app_session')} own-cookie #{cookies.include?('tasker_core_csrf')}"
      task = TaskerCore::Client.create_task(namespace: "dummy", name: "report", version: "1.0.0", context: { "title" => "web" })
      TaskerCore::Client.wait_for(task.uuid, timeout: 20)
      shown = get.call("/tasker/tasks/#{task.uuid}")
      puts "task #{shown.status} #{shown.body.include?('svg class="dag"')}"
      TaskerCore.stop
    RUBY
    expect(out.lines.map(&:strip)).to eq(["closed 403", "tasks 200 true true",
                                          "json 200 true session true own-cookie false", "task 200 true"])
  end

  it "reloads handler code between steps in development (each call inside the Rails reloader)" do
    dir = copy_app
    out = in_app(dir, <<~'RUBY')
      require "./config/environment"
      run = lambda do |title|
        task = TaskerCore::Client.create_task(namespace: "dummy", name: "report", version: "1.0.0", context: { "title" => title })
        TaskerCore::Client.wait_for(task.uuid, timeout: 20).steps.first.result["report"]
      end
      puts run.call("before")
      path = "app/handlers/report_handler.rb"
      sleep 1.1 # a newer mtime than the first load
      File.write(path, File.read(path).sub('"v1"', '"v2"'))
      puts run.call("after")
      TaskerCore.stop
    RUBY
    expect(out.lines.map(&:strip)).to eq(["before v1", "after v2"])
  ensure
    FileUtils.rm_rf(dir) if dir
  end

  it "installs with rails generate tasker_core:install, and the generated example runs" do
    dir = copy_app
    FileUtils.rm_rf(Dir[File.join(dir, "config/initializers/*"), File.join(dir, "config/tasker"),
                        File.join(dir, "app/handlers/*")])
    in_app(dir, <<~'RUBY')
      require "./config/application"
      Rails.application.config.tasker_core.auto_start = false
      Rails.application.initialize!
      require "rails/generators"
      Rails::Generators.invoke("tasker_core:install", [], destination_root: Dir.pwd, behavior: :invoke)
    RUBY
    expect(File).to exist(File.join(dir, "config/initializers/tasker_core.rb"))
    expect(File).to exist(File.join(dir, "config/tasker/templates/hello.yaml"))
    expect(File).to exist(File.join(dir, "app/handlers/hello_handler.rb"))
    out = in_app(dir, <<~'RUBY')
      require "./config/environment"
      task = TaskerCore::Client.create_task(namespace: "hello", name: "greet", version: "1.0.0", context: { "name" => "Rails" })
      puts TaskerCore::Client.wait_for(task.uuid, timeout: 20).steps.first.result["greeting"]
      TaskerCore.stop
    RUBY
    expect(out.strip).to eq("Hello, Rails!")
  ensure
    FileUtils.rm_rf(dir) if dir
  end
end
