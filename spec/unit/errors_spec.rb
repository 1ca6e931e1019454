# frozen_string_literal: true

RSpec.describe TaskerCore::Errors do
  it "roots every error in TaskerCore::Errors::Error" do
    %i[ConfigurationError TemplateError TemplateNotFoundError NotFoundError ValidationError
       InvalidTransitionError NotStartedError TimeoutError MigrationError DatabaseError
       HandlerNotFoundError InvalidResultError RetryableError PermanentError].each do |name|
      expect(described_class.const_get(name)).to be < TaskerCore::Errors::Error
    end
    expect(TaskerCore::Errors::Error).to be < StandardError
  end

  it "exposes the handler errors at the top level as the seeds use them" do
    expect(TaskerCore::RetryableError).to equal(TaskerCore::Errors::RetryableError)
    expect(TaskerCore::PermanentError).to equal(TaskerCore::Errors::PermanentError)
  end

  it "carries retry_after and error_code" do
    retryable = TaskerCore::RetryableError.new("busy", retry_after: 7, metadata: { "a" => 1 })
    expect([retryable.message, retryable.retry_after, retryable.metadata]).to eq(["busy", 7, { "a" => 1 }])
    permanent = TaskerCore::PermanentError.new("declined", error_code: "card_declined")
    expect([permanent.message, permanent.error_code]).to eq(%w[declined card_declined])
  end
end
