# frozen_string_literal: true

require "json"
require "tmpdir"

module LoggingSpecHandlers
  # Logs one line with a structured field from inside a handler.
  class Chatty < TaskerCore::StepHandler::Base
    def call(task, _sequence, step)
      TaskerCore::Logger.info("working on it", order_id: task.context["order_id"], attempt: step.attempts)
      { "ok" => true }
    end
  end
end

RSpec.describe TaskerCore::Logger do
  let(:template) do
    <<~YAML
      name: chatty
      namespace: spec_logging
      version: "1.0.0"
      steps:
        - name: first
          handler: { callable: LoggingSpecHandlers::Chatty }
        - name: second
          handler: { callable: LoggingSpecHandlers::Chatty }
          dependencies: [first]
    YAML
  end

  after { described_class.configure(level: "warn,ruby=info") }

  it "writes handler lines as JSON records with the step's context and the caller's fields at the top level" do
    Dir.mktmpdir("tasker-log") do |logdir|
      log = File.join(logdir, "tasker.jsonl")
      with_template_dir("chatty.yaml" => template) do |dir|
        with_engine(namespaces: ["spec_logging"], template_paths: [dir], log_level: "warn,ruby=info",
                    log_format: :json, log_output: log) do
          task = TaskerCore::Client.create_task(namespace: "spec_logging", name: "chatty", version: "1.0.0",
                                                context: { "order_id" => 1234 })
          done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
          expect(done.status).to eq("complete")

          records = File.readlines(log).map { |l| JSON.parse(l) }
          mine = records.select { |r| r["message"] == "working on it" && r["correlation_id"] == task.correlation_id }
          expect(mine.map { |r| r["step_name"] }).to contain_exactly("first", "second")
          mine.each do |r|
            expect(r).to include("level" => "INFO", "target" => "ruby", "order_id" => 1234, "attempt" => 1,
                                 "task_uuid" => task.uuid, "namespace" => "spec_logging")
            expect(r["step_uuid"]).to eq(done.step(r["step_name"]).uuid)
            expect(r["timestamp"]).to match(/\A\d{4}-\d\d-\d\dT/)
          end
          # Outside a handler: no step context, same pipeline.
          described_class.warn("outside", answer: 42)
          outside = File.readlines(log).map { |l| JSON.parse(l) }.find { |r| r["message"] == "outside" }
          expect(outside).to include("level" => "WARN", "answer" => 42)
          expect(outside).not_to have_key("step_uuid")
        end
      end
    end
  end

  it "does nothing for a disabled level: no block call, no line" do
    Dir.mktmpdir("tasker-log") do |logdir|
      log = File.join(logdir, "plain.log")
      described_class.configure(level: "warn", format: :text, output: log)
      called = false
      expect(described_class.debug { called = true }).to be(false)
      expect(described_class.info("nope", x: 1)).to be(false)
      expect(described_class.debug?).to be(false)
      expect(called).to be(false)
      expect(described_class.warn("yes", x: "two words")).to be(true)
      expect(File.read(log)).to match(/\A\S+Z  WARN ruby: yes x="two words"\n\z/)

      described_class.configure(level: "warn,ruby=debug", output: log)
      expect(described_class.debug("now", n: 1)).to be(true)
      expect(File.read(log).lines.last).to include("DEBUG ruby: now n=1")
    end
  end

  it "rejects invalid settings with a ConfigurationError and keeps the current ones" do
    expect { described_class.configure(level: "warn,=[") }.to raise_error(TaskerCore::Errors::ConfigurationError, /filter/)
    expect { described_class.configure(level: "info", format: :xml) }
      .to raise_error(TaskerCore::Errors::ConfigurationError, /format/)
    expect { described_class.configure(level: "info", output: "/nonexistent-dir/x.log") }
      .to raise_error(TaskerCore::Errors::ConfigurationError, /cannot be opened/)
    expect(described_class.info?).to be(true)
    cfg = TaskerCore::Configuration.new.tap { |c| c.database_url = "postgres://x/y" }
    cfg.log_format = :yaml
    expect { cfg.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, /log_format/)
  end
end
