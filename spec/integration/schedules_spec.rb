# frozen_string_literal: true

require "open3"
require "rbconfig"

# Cron schedules: exactly one task per tick however many processes run them
# (docs/flow-control.md).
RSpec.describe "cron schedules" do
  let(:template) do
    <<~YAML
      name: tick
      namespace: spec_cron
      version: "1.0.0"
      schedules:
        - name: spec_every_second
          cron: "* * * * * *"
          context: { "from": "template" }
        - name: spec_every_second_once
          cron: "* * * * * *"
          missed: fire_once
      steps:
        - name: work
          handler: { callable: SpecHandlers::Timed }
    YAML
  end

  def worker(dir)
    child = spawn_ruby(<<~RUBY)
      TaskerCore.configure do |c|
        c.namespaces = ["spec_cron"]
        c.template_paths = [#{dir.dump}]
        c.poll_interval = 0.1
        c.logger = ::Logger.new(nil)
      end
      TaskerCore.start
      puts "ready"
      trap("TERM") { Thread.new { TaskerCore.stop(timeout: 5); exit!(0) } }
      sleep
    RUBY
    deadline = Time.now + 30
    sleep 0.05 until child.read.include?("ready") || Time.now > deadline
    raise "worker did not start:\n#{child.read}" unless child.read.include?("ready")

    child
  end

  def stop(children)
    children.each { |c| Process.kill(:TERM, c.pid) }
    children.each { |c| wait_child(c, timeout: 20) } # rubocop:disable Style/CombinableLoops -- signal all, then wait
  end

  def fires(name)
    TaskerCore.schedules.fires(name, limit: 1000).map { |f| f.merge("tick" => Time.parse(f["tick"])) }.sort_by { |f| f["tick"] }
  end

  around do |example|
    psql("DELETE FROM tasker.schedules WHERE name LIKE 'spec_%'")
    with_template_dir("tick.yaml" => template) do |dir|
      @dir = dir
      with_engine(mode: :client, template_paths: [dir]) { example.run }
    end
  ensure
    psql("DELETE FROM tasker.schedules WHERE name LIKE 'spec_%'")
  end

  it "fires exactly one task per tick with three processes, none while paused or down (skip), one for the missed (fire_once)" do
    children = Array.new(3) { worker(@dir) }
    sleep 10
    stop(children)
    ticks = fires("spec_every_second").map { |f| f["tick"] }
    expect(ticks.size).to be_between(8, 12)
    expect(ticks.each_cons(2).map { |a, b| b - a }.uniq).to eq([1.0]) # every second, none twice, none left out
    tasks = psql("SELECT count(*), count(DISTINCT idempotency_key) FROM tasker.tasks t JOIN tasker.schedule_fires f " \
                 "ON f.task_uuid = t.task_uuid WHERE f.schedule = 'spec_every_second'").split("|").map(&:to_i)
    expect(tasks).to eq([ticks.size, ticks.size])
    expect(TaskerCore.schedules.find("spec_every_second")).to include("source" => "template", "cron" => "* * * * * *",
                                                                      "context" => { "from" => "template" })

    # All processes down for 5 s, then one back for 3 s.
    down_from = ticks.last
    sleep 5
    back = [worker(@dir)]
    sleep 3
    up_fires = fires("spec_every_second").select { |f| f["tick"] > down_from }
    missed = up_fires.select { |f| f["kind"] == "missed" }
    expect(missed).to be_empty # :skip
    expect(up_fires.first["tick"]).to be >= down_from + 5
    once = fires("spec_every_second_once").select { |f| f["tick"] > down_from }
    expect(once.count { |f| f["kind"] == "missed" }).to eq(1) # :fire_once

    # Paused: nothing; trigger_now: one task at once.
    expect(TaskerCore.schedules.pause("spec_every_second")).to be(true)
    paused_at = Time.now
    sleep 2.5
    expect(fires("spec_every_second").count { |f| f["tick"] > paused_at + 0.5 }).to eq(0)
    record = TaskerCore.schedules.trigger_now("spec_every_second")
    expect(TaskerCore::Client.wait_for(record.uuid, timeout: 15).status).to eq("complete")
    expect(fires("spec_every_second").count { |f| f["kind"] == "manual" }).to eq(1)
    expect(TaskerCore.schedules.find("spec_every_second")).to include("paused" => true, "next_tick" => nil)
    expect(TaskerCore.schedules.resume("spec_every_second")).to be(true)
    resumed = Time.now
    sleep 2.5
    stop(back)
    after = fires("spec_every_second").select { |f| f["tick"] > resumed }
    expect(after.size).to be_between(1, 3)
    expect(after.map { |f| f["kind"] }.uniq).to eq(["tick"]) # the paused seconds are not "missed"
  end

  it "creates, lists, deletes runtime schedules and rejects bad ones" do
    TaskerCore.schedules.create(name: "spec_runtime", cron: "0 9 * * 1-5", timezone: "Europe/Berlin",
                                namespace: "spec_cron", task: "tick", version: "1.0.0", context: { "n" => 1 })
    s = TaskerCore.schedules.find("spec_runtime")
    expect(s).to include("source" => "runtime", "timezone" => "Europe/Berlin", "missed" => "skip", "paused" => false)
    next_tick = Time.parse(s["next_tick"]).getlocal("+00:00")
    expect([7, 8]).to include(next_tick.hour) # 09:00 in Berlin, summer or winter
    expect(next_tick.min).to eq(0)
    expect do
      TaskerCore.schedules.create(name: "spec_runtime", cron: "* * * * *", namespace: "spec_cron", task: "tick", version: "1.0.0")
    end
      .to raise_error(TaskerCore::Errors::ValidationError, /exists already/)
    bad = { namespace: "spec_cron", task: "tick", version: "1.0.0" }
    expect { TaskerCore.schedules.create(name: "spec_b", cron: "61 * * * *", **bad) }
      .to raise_error(TaskerCore::Errors::ValidationError, /cron "61 \* \* \* \*" is invalid/)
    expect { TaskerCore.schedules.create(name: "spec_b", cron: "* * * *", **bad) }
      .to raise_error(TaskerCore::Errors::ValidationError, /has 4 fields/)
    expect { TaskerCore.schedules.create(name: "spec_b", cron: "* * * * *", timezone: "Mars/Base", **bad) }
      .to raise_error(TaskerCore::Errors::ValidationError, %r{timezone "Mars/Base" is unknown})
    expect { TaskerCore.schedules.create(name: "spec_b", cron: "* * * * *", missed: :twice, **bad) }
      .to raise_error(TaskerCore::Errors::ValidationError, /twice/)
    expect { TaskerCore.schedules.create(name: "spec b", cron: "* * * * *", **bad) }
      .to raise_error(TaskerCore::Errors::ValidationError, /schedule name/)
    expect do
      TaskerCore.schedules.create(name: "spec_b", cron: "* * * * *", namespace: "spec_cron", task: "nope", version: "1.0.0")
    end
      .to raise_error(TaskerCore::Errors::TemplateNotFoundError)
    expect(TaskerCore.schedules.delete("spec_runtime")).to be(true)
    expect(TaskerCore.schedules.delete("spec_runtime")).to be(false)
    expect { TaskerCore.schedules.trigger_now("spec_runtime") }.to raise_error(TaskerCore::Errors::NotFoundError)
  end

  it "refuses a bad schedule in a template or the configuration, naming it" do
    bad = template.sub('cron: "* * * * * *"', 'cron: "* * *"')
    with_template_dir("bad.yaml" => bad) do |dir|
      expect { TaskerCore::Native.validate_templates([dir]) }.to raise_error(
        TaskerCore::Errors::TemplateError,
        %r{bad.yaml: template spec_cron/tick: schedule "spec_every_second": cron "\* \* \*" has 3 fields}
      )
    end
    TaskerCore.stop
    TaskerCore.configuration.schedules = [{ name: "spec_conf", cron: "* * * * *", timezone: "Nowhere/City",
                                            namespace: "spec_cron", task: "tick", version: "1.0.0" }]
    expect { TaskerCore.start }.to raise_error(TaskerCore::Errors::ConfigurationError, %r{spec_conf.*Nowhere/City})
    TaskerCore.configuration.schedules = [{ name: "spec_conf", cron: "* * * * *", namespace: "spec_cron", task: "tick" }]
    expect { TaskerCore.start }.to raise_error(TaskerCore::Errors::ConfigurationError, /must name its task/)
    TaskerCore.configuration.schedules = [{ name: "spec_conf", cron: "*/10 * * * *", namespace: "spec_cron",
                                            task: "tick", version: "1.0.0", missed: :fire_once }]
    TaskerCore.start
    expect(TaskerCore.schedules.find("spec_conf")).to include("source" => "config", "missed" => "fire_once")
  end
end

RSpec.describe "tasker_core schedules (CLI)" do
  let(:exe) { File.expand_path("../../exe/tasker_core", __dir__) }

  def cli(*args)
    out, err, status = Open3.capture3({ "DATABASE_URL" => DatabaseSupport.url }, RbConfig.ruby, exe, *args)
    [out + err, status.exitstatus]
  end

  around do |example|
    psql("DELETE FROM tasker.schedules WHERE name LIKE 'spec_%'")
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir]) do
      TaskerCore.schedules.create(name: "spec_cli", cron: "0 0 1 1 *", namespace: "linear_workflow",
                                  task: "mathematical_sequence", version: "1.0.0", context: { "even_number" => 2 })
      example.run
    end
  ensure
    psql("DELETE FROM tasker.schedules WHERE name LIKE 'spec_%'")
  end

  it "lists, pauses, resumes and triggers" do
    out, code = cli("schedules", "list")
    expect(code).to eq(0)
    expect(out).to match(%r{spec_cli\s+0 0 1 1 \*\s+UTC\s+linear_workflow/mathematical_sequence@1.0.0\s+on\s+\d{4}-01-01T00:00})
    expect(cli("schedules", "pause", "spec_cli")).to eq(["paused spec_cli\n", 0])
    expect(cli("schedules", "list").first).to match(/spec_cli.*paused\s+-/)
    expect(cli("schedules", "resume", "spec_cli")).to eq(["resumed spec_cli: it fires from its next tick\n", 0])
    out, code = cli("schedules", "trigger", "spec_cli")
    expect([out, code]).to match([/triggered spec_cli: task (\S+)/, 0])
    uuid = out[/task (\S+)/, 1]
    expect(TaskerCore::Client.wait_for(uuid, timeout: 15).status).to eq("complete")
    expect(cli("schedules", "trigger", "nope").last).to eq(1)
    expect(cli("schedules", "frobnicate").first).to match(/usage: tasker_core schedules/)
  end
end
