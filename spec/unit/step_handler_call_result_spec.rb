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

  it "describes an error result" do
    r = described_class.error(message: "rate limited", retryable: true, retry_after: 3)
    expect(r.success?).to be(false)
    expect(r.error).to include(message: "rate limited", retryable: true, retry_after: 3)
  end
end
