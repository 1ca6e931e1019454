# frozen_string_literal: true

module HandlerFormSpec
  # The canonical form.
  class Load < TaskerCore::StepHandler::Base
    def call(task, _sequence, _step) = { "items" => task.context["items"] }
  end

  # The earlier system's form, dispatched by the real engine.
  class Sum < TaskerCore::BaseStepHandler
    def execute(event)
      TaskerCore::Logger.debug("summing", step_name: event[:step][:name])
      { "sum" => event[:sequence]["load"]["items"].sum, "correlation_id" => event[:correlation_id],
        "task" => event[:task][:name] }
    end
  end
end

RSpec.describe "handler forms through the engine" do
  it "runs execute(event) handlers next to call(task, sequence, step) handlers" do
    template = <<~YAML
      name: forms
      namespace: spec_forms
      version: "1.0.0"
      steps:
        - name: load
          handler: { callable: HandlerFormSpec::Load }
        - name: sum
          handler: { callable: HandlerFormSpec::Sum }
          dependencies: [load]
    YAML
    with_template_dir("forms.yaml" => template) do |dir|
      with_engine(namespaces: ["spec_forms"], template_paths: [dir]) do
        task = TaskerCore::Client.create_task(namespace: "spec_forms", name: "forms", version: "1.0.0",
                                              context: { "items" => [2, 3, 4] })
        done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
        expect(done.status).to eq("complete")
        expect(done.step("sum").result).to eq("sum" => 9, "correlation_id" => task.correlation_id, "task" => "forms")
      end
    end
  end
end
