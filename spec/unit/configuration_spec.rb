# frozen_string_literal: true

RSpec.describe TaskerCore::Configuration do
  subject(:config) do
    described_class.new.tap { |c| c.database_url = "postgres://localhost/x" }
  end

  it "has defaults a web process can use" do
    fresh = described_class.new
    expect(fresh.namespaces).to eq([])
    expect(fresh.template_paths).to eq([])
    expect(fresh.concurrency).to eq(4)
    expect(config.validate!).to equal(config)
    # The main pool is fixed whatever the concurrency; retention keeps a week (errors a month).
    expect(config.to_native).to include("concurrency" => 4, "pool_size" => 10, "poll_interval_ms" => 500,
                                        "transaction_pooling" => false, "listen_database_url" => nil)
    expect(config.to_native["retention"]).to eq("completed_seconds" => 7 * 86_400.0, "errored_seconds" => 30 * 86_400.0,
                                                "archive_seconds" => 7 * 86_400.0, "interval_seconds" => 60.0,
                                                "batch_size" => 500)
    config.concurrency = 64
    expect(config.to_native["pool_size"]).to eq(10)
  end

  it "reads the database from the environment" do
    old = ENV.to_h.slice("TASKER_DATABASE_URL", "DATABASE_URL")
    ENV["TASKER_DATABASE_URL"] = "postgres://a/b"
    ENV["DATABASE_URL"] = "postgres://c/d"
    expect(described_class.new.database_url).to eq("postgres://a/b")
    ENV.delete("TASKER_DATABASE_URL")
    expect(described_class.new.database_url).to eq("postgres://c/d")
  ensure
    %w[TASKER_DATABASE_URL DATABASE_URL].each { |k| old.key?(k) ? ENV[k] = old[k] : ENV.delete(k) }
  end

  {
    database_url: ["", /database_url/],
    concurrency: [0, /concurrency/],
    namespaces: [["Bad-Name"], /namespaces has an invalid entry: namespace "Bad-Name" is invalid: use a lowercase letter/],
    template_paths: ["templates", /template_paths/],
    pool_size: [1, /pool_size/],
    poll_interval: [0, /poll_interval/]
  }.each do |setting, (value, message)|
    it "names #{setting} when it is invalid" do
      config.public_send("#{setting}=", value)
      expect { config.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, message)
    end
  end

  it "validates inside TaskerCore.configure" do
    expect { TaskerCore.configure { |c| c.concurrency = -1 } }
      .to raise_error(TaskerCore::Errors::ConfigurationError, /concurrency/)
  ensure
    TaskerCore.reset_configuration!
  end

  it "masks the database password (and a password parameter) when inspected" do
    config.database_url = "postgres://app:s3cr3t@db.internal:5432/prod?sslmode=require&password=other"
    config.telemetry = { endpoint: "https://collector:tok3n@otel.example:4318" }
    [config.inspect, config.to_s, TaskerCore::Configuration.redact_url(config.database_url)].each do |text|
      expect(text).not_to include("s3cr3t")
      expect(text).not_to include("other")
    end
    expect(config.inspect).to include("postgres://app:***@db.internal:5432/prod?sslmode=require&password=***")
    expect(config.inspect).not_to include("tok3n")
  end
end
