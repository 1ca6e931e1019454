# frozen_string_literal: true

RSpec.describe "parallel branches and joins" do
  let(:width) { 20 }
  let(:template) do
    branches = (1..width).map do |i|
      "  - name: branch_#{i}\n    handler: { callable: SpecHandlers::Counting }\n    dependencies: [fan_out]\n"
    end
    <<~YAML
      name: wide_join
      namespace: spec_fanout
      version: "1.0.0"
      steps:
        - name: fan_out
          handler: { callable: SpecHandlers::Counting }
      #{branches.join}  - name: join
          handler: { callable: SpecHandlers::Counting }
          dependencies: [#{(1..width).map { |i| "branch_#{i}" }.join(', ')}]
    YAML
  end

  it "runs each join exactly once across 50 tasks with 20-wide fan-out/fan-in" do
    SpecHandlers::Counting.reset!
    with_template_dir("wide.yaml" => template) do |dir|
      with_engine(namespaces: ["spec_fanout"], template_paths: [dir], concurrency: 8) do
        tasks = Array.new(50) do
          TaskerCore::Client.create_task(namespace: "spec_fanout", name: "wide_join", version: "1.0.0", context: {})
        end
        finished = tasks.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 60) }
        expect(finished.map(&:status).uniq).to eq(["complete"])
        counts = SpecHandlers::Counting.counts
        tasks.each do |t|
          expect(counts["#{t.uuid}/join"]).to eq(1)
          expect(counts["#{t.uuid}/fan_out"]).to eq(1)
          expect((1..width).map { |i| counts["#{t.uuid}/branch_#{i}"] }.uniq).to eq([1])
        end
        expect(counts.size).to eq(50 * (width + 2))
        join = finished.first.step("join")
        expect(join.result).to eq("parents_seen" => width)
        expect(join.transitions.map(&:to_state)).to eq(%w[pending enqueued in_progress complete])
      end
    end
  end
end
