# frozen_string_literal: true

require "tasker_core/rspec"

RSpec.describe "TaskerCore::Testing with a database (mode :inline)" do
  include_context "with a clean tasker database"

  let(:linear) { { namespace: "linear_workflow", name: "mathematical_sequence", version: "1.0.0" } }

  it "runs the tasks a block creates to completion in the calling thread" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], mode: :inline) do
      expect(TaskerCore.worker_threads).to eq(0)
      tasks = TaskerCore::Testing.inline do
        TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 })
      end
      expect(tasks.map(&:status)).to eq(["complete"])
      expect(tasks.first).to complete_step("linear_step_4").with_result(2**16)
      expect(tasks.first).to complete_step("linear_step_1")
      expect(tasks.first).not_to complete_step("linear_step_4").with_result(3)
    end
  end

  it "matches the tasks a block creates, by name, namespace and context" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], mode: :inline) do
      expect { TaskerCore::Client.create_task(**linear, context: { "even_number" => 4, "tag" => "x" }) }
        .to have_created_task("mathematical_sequence").in_namespace("linear_workflow").with_context("even_number" => 4)
      expect { TaskerCore::Client.create_task(**linear, context: { "even_number" => 6 }) }
        .not_to have_created_task("mathematical_sequence").with_context("even_number" => 8)
      expect { nil }.not_to have_created_task("mathematical_sequence")
      # Left in the queue by the two blocks above: drained until nothing more arrives.
      expect(TaskerCore::Testing.drain!).to eq([])
      expect(psql("SELECT count(*) FROM tasker.tasks WHERE status = 'complete'").to_i).to eq(2)
    end
  end

  it "refuses to drain outside mode :inline, and mode :client serves no namespace" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], mode: :client) do
      expect(TaskerCore.worker_threads).to eq(0)
      expect(TaskerCore.health["queues"]).to eq({})
      expect { TaskerCore::Testing.drain! }.to raise_error(TaskerCore::Errors::ConfigurationError, /mode :inline/)
    end
    cfg = TaskerCore::Configuration.new.tap { |c| c.database_url = "postgres://x/y" }
    cfg.mode = :sidekiq
    expect { cfg.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, /mode/)
  end
end
