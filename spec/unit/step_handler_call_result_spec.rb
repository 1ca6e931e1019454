# frozen_string_literal: true

RSpec.describe TaskerCore::Types::StepHandlerCallResult do
  it "wraps any JSON value with metadata beside it" do
    r = described_class.success(result: 6**20, metadata: { "ms" => 3 })
    expect([r.success?, r.result, r.metadata]).to eq([true, 6**20, { "ms" => 3 }])
    expect(r).to be_frozen
  end

  it "normalizes what a handler returns" do
    expect(described_class.from_handler_return({ "a" => 1 }, "H").result).to eq("a" => 1)
    result = described_class.success(result: [1])
    expect(described_class.from_handler_return(result, "H")).to equal(result)
    expect { described_class.from_handler_return("nope", "MyHandler") }
      .to raise_error(TaskerCore::Errors::InvalidResultError, /MyHandler#call returned String/)
  end

  it "carries an error result's failure as the matching step error, raised where .error was called" do
    r = described_class.error(message: "rate limited", retryable: true, retry_after: 3, metadata: { "a" => 1 })
    expect([r.success?, r.retryable, r.retry_after, r.message]).to eq([false, true, 3, "rate limited"])
    expect(r.error).to be_a(TaskerCore::RetryableError)
    expect([r.error.message, r.error.retry_after, r.error.metadata]).to eq(["rate limited", 3, { "a" => 1 }])
    expect(r.error.backtrace.first).to match(/step_handler_call_result_spec\.rb:#{__LINE__ - 4}/)
    permanent = described_class.error(message: "no", retryable: false, error_code: "nope")
    expect(permanent.error).to be_a(TaskerCore::PermanentError)
    expect(permanent.error.error_code).to eq("nope")
    rescued = KeyError.new("missing")
    expect(described_class.error(error: rescued).error).to equal(rescued)
  end
end
