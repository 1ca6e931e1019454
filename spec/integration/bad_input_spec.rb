# frozen_string_literal: true

RSpec.describe "bad input" do
  around { |ex| with_engine(namespaces: ["spec_boundary"], template_paths: [fixture_templates]) { ex.run } }

  def create(name, context = {}, **opts)
    TaskerCore::Client.create_task(namespace: "spec_boundary", name: name, version: "1.0.0",
                                   context: context, **opts)
  end

  it "refuses unknown templates, namespaces and versions" do
    expect { create("no_such_task") }
      .to raise_error(TaskerCore::Errors::TemplateNotFoundError, %r{spec_boundary/no_such_task@1.0.0})
    expect { TaskerCore::Client.create_task(namespace: "nowhere", name: "faulty", version: "1.0.0", context: {}) }
      .to raise_error(TaskerCore::Errors::TemplateNotFoundError)
    expect { TaskerCore::Client.create_task(namespace: "spec_boundary", name: "faulty", version: "2.0.0", context: {}) }
      .to raise_error(TaskerCore::Errors::TemplateNotFoundError, /@2.0.0/)
  end

  it "refuses a context that is not a JSON object" do
    [[1, 2], "text", 5, nil].each do |context|
      expect { create("faulty", context) }.to raise_error(TaskerCore::Errors::ValidationError, /context must be a Hash/)
    end
  end

  it "refuses bad priorities and idempotency keys" do
    expect { create("faulty", priority: :urgent) }.to raise_error(TaskerCore::Errors::ValidationError, /priority/)
    expect { create("faulty", idempotency_key: "x" * 300) }
      .to raise_error(TaskerCore::Errors::ValidationError, /idempotency_key/)
  end

  it "records a plain exception as a retryable failure with class and message, and keeps running" do
    task = create("faulty")
    done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
    expect(done.status).to eq("error")
    step = done.step("explode")
    expect(step.state).to eq("error")
    expect(step.attempts).to eq(2)
    expect(step.error).to include("error_class" => "ArgumentError", "message" => "kaboom on attempt 2",
                                  "retryable" => true)
    expect(step.error["backtrace"].first).to match(/spec_handlers\.rb/)
    expect(step.transitions.map(&:to_state))
      .to eq(%w[pending enqueued in_progress waiting_for_retry enqueued in_progress error])
    expect(done.transitions.map(&:to_state)).to eq(%w[pending in_progress error])

    # The process keeps serving: another workflow still completes.
    expect(TaskerCore.worker_threads).to eq(2)
    other = TaskerCore::Client.wait_for(create("big_numbers").uuid, timeout: 15)
    expect(other.status).to eq("complete")
  end

  it "fails steps whose handler is undefined or returns something unusable, permanently and clearly" do
    done = TaskerCore::Client.wait_for(create("odd_results").uuid, timeout: 15)
    expect(done.status).to eq("error")
    string = done.step("returns_string")
    expect(string.state).to eq("error")
    expect(string.attempts).to eq(1)
    expect(string.error).to include("error_class" => "TaskerCore::Errors::InvalidResultError")
    expect(string.error["message"]).to match(/ReturnsString#call returned String/)
    time = done.step("returns_time")
    expect(time.error["message"]).to match(/result\["at"\]: a Time has no JSON form/)
    missing = done.step("undefined_class")
    expect(missing.error).to include("error_class" => "TaskerCore::Errors::HandlerNotFoundError")
    expect(missing.error["message"]).to match(/SpecHandlers::NotDefinedAnywhere .*not defined/)
  end
end

RSpec.describe "a handler class not registered by any loaded template" do
  it "is never resolved: the step fails with HandlerNotFoundError" do
    template = <<~YAML
      name: sneaky
      namespace: spec_unregistered
      version: "1.0.0"
      steps:
        - name: run_it
          handler: { callable: SpecHandlers::BigNumberProducer }
          retry: { max_attempts: 1 }
    YAML
    other = template.sub("name: sneaky", "name: innocent").sub("BigNumberProducer", "ReturnsString")
    uuid = nil
    # A client process registers the template and creates the task...
    with_template_dir("sneaky.yaml" => template) do |dir|
      with_engine(template_paths: [dir]) do
        uuid = TaskerCore::Client.create_task(namespace: "spec_unregistered", name: "sneaky",
                                              version: "1.0.0", context: {}).uuid
      end
    end
    # ...and a worker that loaded other templates for that namespace refuses to run it.
    with_template_dir("innocent.yaml" => other) do |dir|
      with_engine(namespaces: ["spec_unregistered"], template_paths: [dir]) do
        done = TaskerCore::Client.wait_for(uuid, timeout: 15)
        step = done.step("run_it")
        expect(step.state).to eq("error")
        expect(step.error["error_class"]).to eq("TaskerCore::Errors::HandlerNotFoundError")
        expect(step.error["message"]).to match(/not registered by any template/)
      end
    end
  end
end

RSpec.describe "poison queue messages" do
  around { |ex| with_engine(namespaces: ["spec_boundary"], template_paths: [fixture_templates]) { ex.run } }

  def send_poison(payload)
    psql("SELECT pgmq.send('tasker_ns_spec_boundary', '#{payload}'::jsonb)").to_i
  end

  def archived_reason(msg_id)
    eventually(timeout: 15) do
      psql("SELECT headers->>'tasker_archive_reason' FROM pgmq.a_tasker_ns_spec_boundary WHERE msg_id = #{msg_id}")
        .then { |r| r.empty? ? nil : r }
    end
  end

  it "archives each with a reason and keeps the namespace running" do
    done = TaskerCore::Client.wait_for(
      TaskerCore::Client.create_task(namespace: "spec_boundary", name: "big_numbers", version: "1.0.0", context: {}).uuid,
      timeout: 15
    )
    finished_step = done.step("produce").uuid
    unknown = "01a2aaaa-0000-7000-8000-000000000001"
    poison = {
      '"a string, not a step message"' => /not a step message/,
      '{"task_uuid": 12}' => /not a step message/,
      %({"task_uuid": "#{done.uuid}", "step_uuid": "#{unknown}", "correlation_id": "#{unknown}"}) => /unknown step/,
      %({"task_uuid": "#{done.uuid}", "step_uuid": "#{finished_step}", "correlation_id": "#{unknown}"}) =>
        /step is complete; nothing to run/,
      %({"task_uuid": "#{done.uuid}", "step_uuid": "#{finished_step}", "correlation_id": "#{unknown}",
         "priority": "asap"}) => /step is complete; nothing to run/, # a priority that is no number counts as 0
      # A handler name no template registered: no breaker is made for it (nor a constant).
      %({"task_uuid": "#{done.uuid}", "step_uuid": "#{unknown}", "correlation_id": "#{unknown}",
         "handler": "Kernel::EvilHandler"}) => /unknown step/
    }
    ids = poison.keys.map { |payload| send_poison(payload) }
    ids.zip(poison.values).each { |id, reason| expect(archived_reason(id)).to match(reason) }
    expect(TaskerCore.health["handler_breakers"].keys).not_to include("Kernel::EvilHandler")

    after = TaskerCore::Client.create_task(namespace: "spec_boundary", name: "big_numbers", version: "1.0.0", context: {})
    expect(TaskerCore::Client.wait_for(after.uuid, timeout: 15).status).to eq("complete")
    expect(TaskerCore.worker_threads).to eq(2)
  end
end
