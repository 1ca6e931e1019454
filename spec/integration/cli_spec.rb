# frozen_string_literal: true

require "open3"
require "rbconfig"

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

  it "migrates and validates templates" do
    expect(run_cli("migrate")).to eq(["migrations applied\n", "", 0])
    out, _, code = run_cli("templates", "validate", linear_template_dir)
    expect([out, code]).to eq(["ok  linear_workflow/mathematical_sequence@1.0.0  (4 steps)\n", 0])
    with_template_dir("bad.yaml" => "name: x\nnamespace: y\nversion: \"1.0.0\"\nsteps: []\n") do |dir|
      _, err, code = run_cli("templates", "validate", dir)
      expect(code).to eq(1)
      expect(err).to match(%r{\Atasker_core: .*bad\.yaml: template has no steps\n\z})
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
    expect(out).to match(/linear_step_1\s+enqueued\s+0\/3/)
    out, _, code = run_cli("task", "cancel", uuid, "--reason", "spec")
    expect([out.lines.first.strip.split.last, code]).to eq(["cancelled", 0])
    _, err, code = run_cli("task", "cancel", uuid)
    expect([err, code]).to eq(["tasker_core: task #{uuid} is cancelled and cannot be cancelled\n", 1])
    _, err, code = run_cli("task", "create", "linear_workflow/mathematical_sequence@1.0.0", "--context", "{oops")
    expect(code).to eq(1)
    expect(err).to start_with("tasker_core: --context is not JSON")
  end
end
