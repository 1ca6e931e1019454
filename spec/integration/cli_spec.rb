# frozen_string_literal: true

require "json"
require "open3"
require "tempfile"
require "rbconfig"
require "timeout"

RSpec.describe "exe/tasker_core" do
  let(:exe) { File.expand_path("../../exe/tasker_core", __dir__) }

  def run_cli(*args)
    out, err, status = Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, *args)
    [out, err, status.exitstatus]
  end

  it "prints help and refuses unknown commands with a one-line reason" do
    out, _, code = run_cli("--help")
    expect(code).to eq(0)
    expect(out).to include("task create NAMESPACE/NAME@VERSION")
    _, err, code = run_cli("launch")
    expect([err, code]).to eq(["tasker_core: unknown command \"launch\" (see tasker_core --help)\n", 1])
  end

  it "serves the dashboard until SIGTERM, behind basic authentication from the environment" do
    require "net/http"
    require "socket"
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    env = { "DATABASE_URL" => DatabaseSupport.url, "TASKER_WEB_USER" => "ops", "TASKER_WEB_PASSWORD" => "pw" }
    err_r, err_w = IO.pipe
    pid = Process.spawn(env, RbConfig.ruby, exe, "web", "--port", port.to_s, err: err_w, out: File::NULL)
    err_w.close
    banner = Timeout.timeout(30) { err_r.gets }
    expect(banner).to include("http://127.0.0.1:#{port}/", "basic authentication")
    http = Net::HTTP.new("127.0.0.1", port)
    expect(http.get("/").code).to eq("401")
    request = Net::HTTP::Get.new("/tasks")
    request.basic_auth("ops", "pw")
    response = http.request(request)
    expect(response.code).to eq("200")
    expect(response.body).to include("Tasks")
    Process.kill("TERM", pid)
    _, status = Timeout.timeout(20) { Process.wait2(pid) }
    expect(status.exitstatus).to eq(0)
  ensure
    Process.kill("KILL", pid) if pid && (Process.getpgid(pid) rescue nil) # rubocop:disable Style/RescueModifier
  end

  it "reports a handler file that cannot be loaded in one line, without a backtrace" do
    _, err, code = run_cli("worker", "--namespaces", "spec_cli", "-r", "/nonexistent/handlers.rb")
    expect(code).to eq(1)
    expect(err.lines.size).to eq(1)
    expect(err).to start_with("tasker_core: ").and include("/nonexistent/handlers.rb")
  end

  it "names what is wrong with a file that is not a template, never echoing its content" do
    Tempfile.create(["secrets", ".yaml"]) do |f|
      f.write("DATABASE_PASSWORD=hunter2 and the rest of a secrets file\n")
      f.flush
      _, err, code = run_cli("templates", "validate", f.path)
      expect(code).to eq(1)
      expect(err).to eq("tasker_core: #{f.path}: not a task template: the document is a string, " \
                        "not a mapping with name, namespace, version and steps\n")
    end
  end

  it "shows migration status and --help for every command" do
    out, _, code = run_cli("migrate", "status")
    expect(code).to eq(0)
    expect(out).to match(/^applied  20261125000001  create tasker schema$/)
    expect(out.lines.last).to eq("up to date\n")
    %w[migrate templates task worker health demo].each do |command|
      out, err, code = run_cli(command, "--help")
      expect([code, err]).to eq([0, ""]), "#{command} --help: #{err}"
      expect(out).to start_with("Usage: tasker_core #{command}")
    end
    _, err, code = run_cli("migrate", "sideways")
    expect([err, code]).to eq(["tasker_core: unknown migrate action \"sideways\" (up, status or down)\n", 1])
    # Reverting drops data: it needs a version, and only a known one (nothing is reverted here).
    _, err, code = run_cli("migrate", "down")
    expect([err, code])
      .to eq(["tasker_core: missing argument: --to VERSION (0 reverts every migration and drops all tasks)\n", 1])
    _, err, code = run_cli("migrate", "down", "--to", "42")
    expect([err, code]).to eq(["tasker_core: no migration has version 42 (0 reverts them all)\n", 1])
    expect(run_cli("migrate", "status")[0].lines.last).to eq("up to date\n")
    Dir.mktmpdir do |dir|
      _, err, status = Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, "worker", "--rails",
                                      chdir: dir)
      expect([err, status.exitstatus]).to eq(["tasker_core: --rails: no Rails application here " \
                                 "(#{File.realpath(dir)}/config/environment.rb is missing)\n", 1])
    end
  end

  it "migrates and validates templates" do
    expect(run_cli("migrate")).to eq(["migrations applied\n", "", 0])
    out, _, code = run_cli("templates", "validate", linear_template_dir)
    expect([out, code]).to eq(["ok  linear_workflow/mathematical_sequence@1.0.0  (4 steps)\n", 0])
    with_template_dir("bad.yaml" => "name: x\nnamespace: y\nversion: \"1.0.0\"\nsteps: []\n") do |dir|
      _, err, code = run_cli("templates", "validate", dir)
      expect(code).to eq(1)
      expect(err).to match(/\Atasker_core: .*bad\.yaml: template has no steps\n\z/)
    end
  end

  it "creates, shows and cancels a task" do
    with_engine(template_paths: [linear_template_dir]) { nil } # registers the template
    out, err, code = run_cli("task", "create", "linear_workflow/mathematical_sequence@1.0.0",
                             "--context", '{"even_number": 2}', "--priority", "high")
    expect([err, code]).to eq(["", 0])
    uuid = out[/created task (\S+)/, 1]
    out, _, code = run_cli("task", "status", uuid)
    expect(code).to eq(0)
    expect(out).to match(%r{linear_step_1\s+enqueued\s+0/3})
    out, _, code = run_cli("task", "cancel", uuid, "--reason", "spec")
    expect([out.lines.first.strip.split.last, code]).to eq(["cancelled", 0])
    _, err, code = run_cli("task", "cancel", uuid)
    expect([err, code]).to eq(["tasker_core: task #{uuid} is cancelled and cannot be cancelled\n", 1])
    _, err, code = run_cli("task", "create", "linear_workflow/mathematical_sequence@1.0.0", "--context", "{oops")
    expect(code).to eq(1)
    expect(err).to start_with("tasker_core: --context is not JSON")
  end
end

RSpec.describe "exe/tasker_core worker and health" do
  let(:exe) { File.expand_path("../../exe/tasker_core", __dir__) }

  it "prints the health of a client engine" do
    out, _, status = Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, "health")
    expect(status.exitstatus).to eq(0)
    expect(JSON.parse(out)).to include("status" => "ok", "running" => true)
  end

  it "runs handlers until SIGTERM, then drains and exits 0" do
    handlers = File.expand_path("../../examples/linear_workflow/handlers/linear_step_handlers.rb", __dir__)
    out = Tempfile.new("worker")
    pid = Process.spawn({ "DATABASE_URL" => DatabaseSupport.url, "RUBYLIB" => File.expand_path("../../lib", __dir__) },
                        RbConfig.ruby, exe, "worker", "--namespaces", "linear_workflow", "--concurrency", "2",
                        "--templates", linear_template_dir, "-r", handlers, out: out.path, err: %i[child out])
    eventually(timeout: 20) { File.read(out.path).include?("namespaces linear_workflow, 2 threads") }
    with_engine(template_paths: [linear_template_dir]) do
      task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                            version: "1.0.0", context: { "even_number" => 2 })
      expect(TaskerCore::Client.wait_for(task.uuid, timeout: 20).steps.last.result).to eq(2**16)
    end
    Process.kill(:TERM, pid)
    _, status = Process.wait2(pid)
    expect(status.exitstatus).to eq(0)
    expect(File.read(out.path)).to include("TERM received, draining")
  ensure
    begin
      Process.kill(:KILL, pid) if pid
    rescue Errno::ESRCH
      nil
    end
  end
end
