# frozen_string_literal: true

require "tasker_core/testing"

module TestingSpecHandlers
  # The canonical form.
  class Total < TaskerCore::StepHandler::Base
    def call(task, sequence, _step)
      items = sequence.get_results("load")["items"]
      { "total" => items.sum * task.context.fetch("factor"), "rate" => config["rate"] }
    end
  end

  # The earlier system's form: execute(event) with a Hash-like event.
  class Seeded < TaskerCore::BaseStepHandler
    def execute(event)
      { "correlation" => event[:correlation_id], "step" => event[:step][:name], "attempt" => event.dig(:step, "attempts"),
        "factor" => event[:task][:context]["factor"], "loaded" => event[:sequence]["load"] }
    end
  end

  class ReturnsTime < TaskerCore::StepHandler::Base
    def call(*) = { "at" => Time.at(0) }
  end

  # A result that contains itself: the engine's depth bound refuses it (no SystemStackError).
  class ReturnsCycle < TaskerCore::StepHandler::Base
    def call(*)
      cycle = {}
      cycle["self"] = cycle
      cycle
    end
  end

  class Refuses < TaskerCore::StepHandler::Base
    def call(*) = raise(TaskerCore::PermanentError.new("no", error_code: "nope"))
  end
end

RSpec.describe TaskerCore::Testing do
  it "runs a handler without a database, with what the engine would pass (String keys after JSON)" do
    result = described_class.run_step(TestingSpecHandlers::Total, context: { factor: 2 },
                                                                  parent_results: { load: { items: [1, 2, 3] } },
                                                                  config: { rate: 0.5 })
    expect(result).to be_success
    expect(result.result).to eq("total" => 12, "rate" => 0.5)
  end

  it "runs the Hash-event handler form on the same views" do
    result = described_class.run_step(TestingSpecHandlers::Seeded, context: { "factor" => 3 },
                                                                   parent_results: { "load" => [1] }, step_name: "sum",
                                                                   attempts: 2)
    expect(result.result).to include("step" => "sum", "attempt" => 2, "factor" => 3, "loaded" => [1])
    expect(result.result["correlation"]).to match(/\A\h{8}-/)
  end

  it "raises what the handler raises and rejects results without a JSON form" do
    expect { described_class.run_step(TestingSpecHandlers::Refuses) }
      .to raise_error(TaskerCore::PermanentError) { |e| expect(e.error_code).to eq("nope") }
    expect { described_class.run_step(TestingSpecHandlers::ReturnsTime) }
      .to raise_error(TaskerCore::Errors::InvalidResultError, /cannot be stored: result\["at"\]: a Time has no JSON form/)
    expect { described_class.run_step(TestingSpecHandlers::ReturnsCycle) }
      .to raise_error(TaskerCore::Errors::InvalidResultError, /result(\["self"\])+: nested deeper than/)
  end
end

RSpec.describe TaskerCore::Types::EventView do
  it "reads like a Hash with Symbol or String keys" do
    event = TaskerCore::Native::StepEvent.detached(
      "namespace" => "n", "task_name" => "t", "task_version" => "1.0.0", "step_name" => "s", "handler_class" => "X",
      "attempts" => 1, "max_attempts" => 3, "timeout_seconds" => 30, "context" => { "a" => 1 }, "handler_config" => {},
      "parent_names" => [], "dependency_results" => {}
    )
    view = described_class.new(TaskerCore::Types::Task.new(event), TaskerCore::Types::Sequence.new(event),
                               TaskerCore::Types::Step.new(event))
    expect(view["namespace"]).to eq("n")
    expect(view.fetch(:task)[:name]).to eq("t")
    expect(view.dig(:step, :max_attempts)).to eq(3)
    expect(view.fetch(:nope, :default)).to eq(:default)
    expect { view.fetch(:nope) }.to raise_error(KeyError)
    expect(view.to_h.keys).to include(:correlation_id, :task, :step, :sequence, :context)
  end
end
