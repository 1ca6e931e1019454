# frozen_string_literal: true

# How an Active Job's queue and priority map to tasker_core (docs/active_job.md).
RSpec.describe TaskerCore::ActiveJob do
  it "makes a namespace of a queue name, or says why it cannot" do
    expect(described_class.namespace_for("default")).to eq("aj_default")
    expect(described_class.namespace_for(:active_storage_analysis)).to eq("aj_active_storage_analysis")
    ["Mailers", "low-priority", "a" * 28, "", "x y"].each do |bad|
      expect { described_class.namespace_for(bad) }
        .to raise_error(TaskerCore::Errors::EnqueueError, /Active Job queue #{Regexp.escape(bad.inspect)} cannot be/)
    end
  end

  it "maps Active Job's priority (lower first) to tasker_core's and refuses what is out of range" do
    expect(described_class.priority_for(nil)).to eq(0)
    expect(described_class.priority_for(10)).to eq(-10)
    expect(described_class.priority_for(-100)).to eq(100)
    [101, -101, 1.5, "high"].each do |bad|
      expect { described_class.priority_for(bad) }.to raise_error(TaskerCore::Errors::EnqueueError, /out of range/)
    end
  end

  it "builds a one-step template per queue that the engine accepts" do
    summary = Dir.mktmpdir do |dir|
      File.write(File.join(dir, "aj.json"), described_class.template_for("mailers"))
      TaskerCore::Native.validate_templates([dir]).first
    end
    expect(summary).to include("namespace" => "aj_mailers", "name" => "active_job", "version" => "1.0.0",
                               "handlers" => ["TaskerCore::ActiveJob::Executor"], "steps" => ["perform"])
  end

  it "rejects a queue that cannot be a namespace in the configuration" do
    config = TaskerCore::Configuration.new
    config.database_url = "postgres://localhost/x"
    config.active_job_queues = ["Bad Queue"]
    expect { config.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, /active_job_queues has an invalid entry/)
    config.active_job_queues = %w[default]
    config.active_job_transaction = :yes
    expect { config.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, /active_job_transaction must be nil/)
    config.active_job_transaction = :active_record
    config.namespaces = ["billing"]
    expect(config.validate!.served_namespaces).to eq(%w[billing aj_default])
  end
end

RSpec.describe TaskerCore::ActiveJob::Options do
  let(:job_class) do
    Class.new do
      extend TaskerCore::ActiveJob::Options
      def self.name = "SyncJob"
    end
  end

  it "resolves a job class's limits for each job, inherited by subclasses" do
    job_class.tasker_core_options concurrency: { key: ->(job) { job.arguments.first }, limit: 2 },
                                  rate_limit: { key: "api", limit: 5, per: 1, name: "shared" }
    job = Struct.new(:arguments, :klass) { def class = klass }.new(["acct_1"], job_class)
    expect(TaskerCore::ActiveJob.flow_for(job)).to eq(
      "concurrency" => { "key" => "SyncJob:acct_1", "limit" => 2 },
      "rate" => { "key" => "shared:api", "limit" => 5, "per" => 1.0 }
    )
    expect(Class.new(job_class).tasker_core_options.keys).to eq(%i[concurrency rate_limit])
  end

  it "refuses unknown options and bad limits" do
    expect { job_class.tasker_core_options(speed: {}) }.to raise_error(TaskerCore::Errors::ConfigurationError, /not speed:/)
    expect { job_class.tasker_core_options(concurrency: { key: "k", limit: 0 }) }
      .to raise_error(TaskerCore::Errors::ConfigurationError, /concurrency: needs key:/)
    expect { job_class.tasker_core_options(rate_limit: { key: "k", limit: 1 }) }
      .to raise_error(TaskerCore::Errors::ConfigurationError, /per: \(seconds\)/)
  end
end
