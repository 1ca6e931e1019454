# frozen_string_literal: true

RSpec.describe "engine lifecycle" do
  let(:linear) { { namespace: "linear_workflow", name: "mathematical_sequence", version: "1.0.0" } }

  it "migrates twice without change" do
    expect(TaskerCore.migrate!(database_url: DatabaseSupport.url)).to be(true)
    expect(TaskerCore.migrate!(database_url: DatabaseSupport.url)).to be(true)
  end

  it "starts once, stops by joining every handler thread" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir], concurrency: 3) do
      expect(TaskerCore.start).to equal(TaskerCore) # second start is a no-op
      expect(TaskerCore.worker_threads).to eq(3)
      expect(Thread.list.map(&:name).grep(/tasker-worker/).size).to eq(3)
      expect(TaskerCore.stop(timeout: 5)).to be(true)
      expect(TaskerCore.running?).to be(false)
      expect(Thread.list.map(&:name).grep(/tasker-worker/)).to be_empty
      expect(TaskerCore.stop).to be(false)
    end
  end

  it "returns the existing task for the same idempotency key" do
    with_engine(namespaces: ["linear_workflow"], template_paths: [linear_template_dir]) do
      key = "order-#{rand(1 << 60)}"
      first = TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 }, idempotency_key: key)
      second = TaskerCore::Client.create_task(**linear, context: { "even_number" => 4 }, idempotency_key: key)
      third = TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 })
      expect(second.uuid).to eq(first.uuid)
      expect([first.created?, second.created?]).to eq([true, false])
      expect(third.uuid).not_to eq(first.uuid)
    end
  end

  it "lets a client-only process create and read tasks without running handlers" do
    with_engine(namespaces: [], template_paths: [linear_template_dir]) do
      expect(TaskerCore.worker_threads).to eq(0)
      task = TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 })
      expect { TaskerCore::Client.wait_for(task.uuid, timeout: 0.3) }
        .to raise_error(TaskerCore::Errors::TimeoutError, /still in_progress/)
      found = TaskerCore::Client.find_task(task.uuid)
      expect(found.status).to eq("in_progress")
      expect(found.step("linear_step_1").state).to eq("enqueued")
      expect(TaskerCore::Client.find_task("01a212e2-9b26-70b3-8e02-000000000000")).to be_nil
      expect { TaskerCore::Client.wait_for("01a212e2-9b26-70b3-8e02-000000000000", timeout: 1) }
        .to raise_error(TaskerCore::Errors::NotFoundError)
    end
  end

  it "gives a forked child its own engine" do
    with_engine(namespaces: [], template_paths: [linear_template_dir]) do
      reader, writer = IO.pipe
      pid = fork do
        reader.close
        status = begin
          child_running_before = TaskerCore.running?
          TaskerCore.configuration.namespaces = ["linear_workflow"]
          TaskerCore.start
          task = TaskerCore::Client.create_task(**linear, context: { "even_number" => 4 })
          done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
          TaskerCore.stop(timeout: 5)
          "#{child_running_before} #{done.status} #{done.steps.last.result}"
        rescue Exception => e # rubocop:disable Lint/RescueException
          "#{e.class}: #{e.message}"
        end
        writer.puts(status)
        writer.close
        exit!(0)
      end
      writer.close
      _, status = Process.wait2(pid)
      expect(status.exitstatus).to eq(0)
      expect(reader.read.strip).to eq("false complete #{4**16}")
      # The parent's engine is untouched.
      expect(TaskerCore.running?).to be(true)
      expect(TaskerCore::Client.create_task(**linear, context: { "even_number" => 2 }).status).to eq("in_progress")
    ensure
      reader&.close
    end
  end
end
