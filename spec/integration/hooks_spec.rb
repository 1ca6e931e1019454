# frozen_string_literal: true

RSpec.describe "lifecycle hooks and error handlers" do
  it "runs startup/shutdown hooks and hands handler exceptions to error handlers on their own thread" do
    events = Queue.new
    reported = Queue.new
    threads = Queue.new
    TaskerCore.reset_configuration!
    TaskerCore.configure do |c|
      c.database_url = DatabaseSupport.url
      c.namespaces = ["spec_boundary"]
      c.template_paths = [fixture_templates]
      c.poll_interval = 0.1
      c.on(:startup) { events << :startup }
      c.on(:shutdown) { events << :shutdown }
      c.error_handlers << lambda do |error, context|
        threads << Thread.current.name
        reported << [error.class.name, error.message, context]
      end
      c.error_handlers << ->(_e, _c) { raise "a broken error handler must not stop the others" }
    end
    begin
      TaskerCore.start
      expect(pop_within(events)).to eq(:startup)
      task = TaskerCore::Client.create_task(namespace: "spec_boundary", name: "faulty", version: "1.0.0", context: {})
      expect(TaskerCore::Client.wait_for(task.uuid, timeout: 15).status).to eq("error")
      first = pop_within(reported)
      expect(first[0..1]).to eq(["ArgumentError", "kaboom on attempt 1"])
      expect(first[2]).to include("task_uuid" => task.uuid, "correlation_id" => task.correlation_id,
                                  "step_name" => "explode", "attempt" => 1, "namespace" => "spec_boundary")
      expect(pop_within(reported)[2]["attempt"]).to eq(2)
      expect(pop_within(threads)).to eq("tasker-error-reporter")
    ensure
      TaskerCore.stop(timeout: 10)
      TaskerCore.reset_configuration!
    end
    expect(pop_within(events)).to eq(:shutdown)
    config = TaskerCore::Configuration.new
    expect { config.on(:reload) { nil } }.to raise_error(TaskerCore::Errors::ConfigurationError, /unknown event/)
  end

  it "reads settings from the environment when not given explicitly" do
    old = ENV.to_h.slice("TASKER_CONCURRENCY", "TASKER_NAMESPACES", "TASKER_MODE")
    ENV["TASKER_CONCURRENCY"] = "7"
    ENV["TASKER_NAMESPACES"] = "billing,shipping"
    ENV["TASKER_MODE"] = "client"
    c = TaskerCore::Configuration.new
    expect([c.concurrency, c.namespaces, c.mode]).to eq([7, %w[billing shipping], :client])
    c.concurrency = 2 # explicit wins
    expect(c.concurrency).to eq(2)
    ENV["TASKER_CONCURRENCY"] = "many"
    expect { TaskerCore::Configuration.new }.to raise_error(TaskerCore::Errors::ConfigurationError, /TASKER_CONCURRENCY/)
  ensure
    %w[TASKER_CONCURRENCY TASKER_NAMESPACES TASKER_MODE].each { |k| old.key?(k) ? ENV[k] = old[k] : ENV.delete(k) }
  end
end
