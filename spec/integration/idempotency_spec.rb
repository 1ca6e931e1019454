# frozen_string_literal: true

RSpec.describe "idempotent task creation under concurrency" do
  let(:request) do
    { namespace: "linear_workflow", name: "mathematical_sequence", version: "1.0.0", context: { "even_number" => 2 } }
  end

  it "gives every one of 8 threads the same single task" do
    with_engine(template_paths: [linear_template_dir], pool_size: 12) do
      key = "threads-#{rand(1 << 62)}"
      start = Queue.new
      threads = Array.new(8) do
        Thread.new do
          start.pop
          TaskerCore::Client.create_task(**request, idempotency_key: key)
        end
      end
      8.times { start << :go }
      records = threads.map(&:value)
      expect(records.map(&:uuid).uniq.size).to eq(1)
      expect(records.count(&:created?)).to eq(1)
    end
  end

  it "gives two processes creating at the same moment the same single task" do
    key = "processes-#{rand(1 << 62)}"
    go_at = Time.now.to_f + 1.5
    code = <<~RUBY
      TaskerCore.configure { |c| c.template_paths = [#{linear_template_dir.dump}] }
      TaskerCore.start
      sleep([#{go_at} - Time.now.to_f, 0].max)
      task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "mathematical_sequence",
                                            version: "1.0.0", context: { "even_number" => 2 },
                                            idempotency_key: #{key.dump})
      puts "RESULT \#{task.uuid} \#{task.created?}"
      TaskerCore.stop
    RUBY
    children = Array.new(2) { spawn_ruby(code) }
    results = children.map do |child|
      expect(wait_child(child, timeout: 30).exitstatus).to eq(0), child.read
      child.read[/^RESULT (\S+) (\w+)$/] && [Regexp.last_match(1), Regexp.last_match(2)]
    end
    expect(results.map(&:first).uniq.size).to eq(1)
    expect(results.map(&:last).sort).to eq(%w[false true])
  end
end
