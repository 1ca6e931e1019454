# frozen_string_literal: true

require "tasker_core/testing"

module FailureValueSpec
  # Returns its failure instead of raising it.
  class Declines < TaskerCore::StepHandler::Base
    def call(task, _sequence, _step)
      TaskerCore::Types::StepHandlerCallResult.error(message: "card #{task.context['card']} declined", retryable: false,
                                                     error_code: "card_declined", metadata: { "http_status" => 402 })
    end
  end

  # Rescues a lower-level exception and returns it as a retryable failure.
  class Wraps < TaskerCore::StepHandler::Base
    def call(*)
      Integer("twelve")
    rescue ArgumentError => e
      TaskerCore::Types::StepHandlerCallResult.error(error: e, retry_after: 0, metadata: { "input" => "twelve" })
    end
  end
end

RSpec.describe "one failure value, raised or returned" do
  let(:template) do
    <<~YAML
      name: failures
      namespace: spec_failure_value
      version: "1.0.0"
      steps:
        - name: decline
          handler: { callable: FailureValueSpec::Declines }
        - name: wrap
          handler: { callable: FailureValueSpec::Wraps }
          retry: { max_attempts: 2, backoff_base_ms: 1, max_backoff_ms: 1 }
    YAML
  end

  it "records and reports a returned error result with its real class, backtrace, code and metadata" do
    reported = Queue.new
    with_template_dir("failures.yaml" => template) do |dir|
      with_engine(namespaces: ["spec_failure_value"], template_paths: [dir],
                  error_handlers: [->(error, context) { reported << [error, context["step_name"]] }]) do
        task = TaskerCore::Client.create_task(namespace: "spec_failure_value", name: "failures", version: "1.0.0",
                                              context: { "card" => "4242" })
        done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
        expect(done.status).to eq("error")

        declined = done.step("decline").error
        expect(declined).to include("error_class" => "TaskerCore::Errors::PermanentError",
                                    "message" => "card 4242 declined", "error_code" => "card_declined",
                                    "metadata" => { "http_status" => 402 }, "retryable" => false)
        expect(declined["backtrace"].first).to match(%r{spec/integration/failure_value_spec\.rb:\d+})

        wrapped = done.step("wrap").error
        expect(wrapped).to include("error_class" => "ArgumentError", "metadata" => { "input" => "twelve" },
                                   "retryable" => true, "retry_after_seconds" => 0.0)
        expect(wrapped["message"]).to match(/invalid value for Integer/)
        expect(wrapped["backtrace"].join("\n")).to match(/failure_value_spec\.rb:\d+:in .*call/)

        seen = Array.new(3) { pop_within(reported) }.compact.group_by(&:last)
        decline = seen.fetch("decline").first.first
        expect(decline).to be_a(TaskerCore::PermanentError)
        expect([decline.message, decline.error_code, decline.metadata])
          .to eq(["card 4242 declined", "card_declined", { "http_status" => 402 }])
        expect(decline.backtrace.first).to match(/failure_value_spec\.rb/)
        expect(seen.fetch("wrap").map { |(e, _)| e.class }).to eq([ArgumentError, ArgumentError])
      end
    end
  end

  it "gives Testing.run_step the same failure, raised" do
    expect { TaskerCore::Testing.run_step(FailureValueSpec::Declines, context: { "card" => "1" }) }
      .to raise_error(TaskerCore::PermanentError, "card 1 declined") { |e| expect(e.error_code).to eq("card_declined") }
    expect { TaskerCore::Testing.run_step(FailureValueSpec::Wraps) }.to raise_error(ArgumentError, /twelve/)
  end
end
