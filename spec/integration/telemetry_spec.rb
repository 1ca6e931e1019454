# frozen_string_literal: true

module TelemetrySpecHandlers
  # Records the trace ids each handler run sees, and logs a line.
  class Traced < TaskerCore::StepHandler::Base
    SEEN = Queue.new

    def call(task, _sequence, step)
      SEEN << [task.correlation_id, step.name, step.trace_id, step.span_id]
      TaskerCore::Logger.info("traced step")
      { "step" => step.name }
    end
  end
end

RSpec.describe "OpenTelemetry export over OTLP" do
  let(:template) do
    <<~YAML
      name: traced
      namespace: spec_otel
      version: "1.0.0"
      steps:
        - name: start
          handler: { callable: TelemetrySpecHandlers::Traced }
        - name: left
          handler: { callable: TelemetrySpecHandlers::Traced }
          dependencies: [start]
        - name: right
          handler: { callable: TelemetrySpecHandlers::Traced }
          dependencies: [start]
        - name: join
          handler: { callable: TelemetrySpecHandlers::Traced }
          dependencies: [left, right]
    YAML
  end

  BOUNDED_LABELS = %w[namespace task_name step_name outcome error_type breaker breaker_kind].freeze

  def spans_of(received)
    received.select { |e| e["path"] == "/v1/traces" }.flat_map do |e|
      e.dig("request", "resourceSpans").flat_map { |rs| rs["scopeSpans"].flat_map { |ss| ss["spans"] } }
    end
  end

  # The last export of each metric (the SDK exports cumulative sums).
  def metrics_of(received)
    received.select { |e| e["path"] == "/v1/metrics" }.each_with_object({}) do |e, out|
      e.dig("request", "resourceMetrics").each do |rm|
        rm["scopeMetrics"].each { |sm| sm["metrics"].each { |m| out[m["name"]] = m } }
      end
    end
  end

  def points(metric) = (metric["sum"] || metric["gauge"] || metric["histogram"])["dataPoints"]

  def labels(point) = point["attributes"].to_h { |a| [a["key"], a["value"].values.first] }

  def attribute_of(span, key) = span["attributes"].find { |a| a["key"] == key }&.dig("value", "stringValue")

  it "exports the run's metrics and one trace per task, flushed by TaskerCore.stop" do
    seen = TelemetrySpecHandlers::Traced::SEEN
    seen.clear
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller_span = "00f067aa0ba902b7"
    with_otlp_receiver do |endpoint, exports|
      Dir.mktmpdir("otel-log") do |logdir|
        log = File.join(logdir, "log.jsonl")
        task = chained = nil
        with_template_dir("traced.yaml" => template) do |dir|
          with_engine(namespaces: ["spec_otel"], template_paths: [dir], log_format: :json, log_output: log,
                      telemetry: { endpoint: endpoint, export_interval: 3600, service_name: "tasker-spec" }) do
            task = TaskerCore::Client.create_task(namespace: "spec_otel", name: "traced", version: "1.0.0", context: {})
            chained = TaskerCore::Client.create_task(namespace: "spec_otel", name: "traced", version: "1.0.0",
                                                     context: {}, traceparent: "00-#{caller_trace}-#{caller_span}-01")
            [task, chained].each do |t|
              expect(TaskerCore::Client.wait_for(t.uuid, timeout: 15).status).to eq("complete")
            end
          end
        end
        received = exports.call

        # Metrics: the set, the counts of this run, bounded labels only.
        metrics = metrics_of(received)
        expect(metrics.keys).to include(
          "tasker.tasks.requests", "tasker.tasks.completions", "tasker.task.initialization.duration",
          "tasker.task.finalization.duration", "tasker.steps.enqueued", "tasker.steps.claimed",
          "tasker.steps.executions", "tasker.steps.succeeded", "tasker.step.execution.duration",
          "tasker.step.claim.duration", "tasker.step.result_processing.duration", "tasker.steps.results_submitted",
          "tasker.ffi.dispatch.wait", "tasker.circuit_breaker.state", "tasker.circuit_breaker.rejections",
          "tasker.queue.depth"
        )
        mine = ->(name) { points(metrics.fetch(name)).select { |p| labels(p)["namespace"] == "spec_otel" } }
        expect(mine.call("tasker.steps.executions").sum { |p| p["asInt"].to_i }).to eq(8)
        expect(mine.call("tasker.steps.executions").map { |p| labels(p)["outcome"] }.uniq).to eq(["success"])
        expect(mine.call("tasker.tasks.completions").sum { |p| p["asInt"].to_i }).to eq(2)
        expect(mine.call("tasker.steps.enqueued").sum { |p| p["asInt"].to_i }).to eq(8)
        expect(mine.call("tasker.step.execution.duration").sum { |p| p["count"].to_i }).to eq(8)
        metrics.each_value do |m|
          points(m).each do |p|
            expect(labels(p).keys - BOUNDED_LABELS).to be_empty, "#{m["name"]} has labels #{labels(p).keys}"
            expect(labels(p).values).not_to include(task.correlation_id)
          end
        end

        # Traces: task.initialize → four step.attempt → one step.handler each, one trace id.
        spans = spans_of(received)
        root = spans.find do |s|
          s["name"] == "task.initialize" && attribute_of(s, "tasker.correlation_id") == task.correlation_id
        end
        expect(root).not_to be_nil
        trace = root["traceId"]
        attempts = spans.select { |s| s["name"] == "step.attempt" && s["parentSpanId"] == root["spanId"] }
        expect(attempts.size).to eq(4)
        expect(attempts.map { |s| s["traceId"] }.uniq).to eq([trace])
        expect(attempts.map { |s| attribute_of(s, "tasker.correlation_id") }.uniq).to eq([task.correlation_id])
        handlers = spans.select do |s|
          s["name"] == "step.handler" && attempts.map do |a|
            a["spanId"]
          end.include?(s["parentSpanId"])
        end
        expect(handlers.size).to eq(4)

        # The handler saw its trace and span ids, and its log lines carry them.
        runs = Array.new(seen.size) { seen.pop }.select { |corr, *| corr == task.correlation_id }
        expect(runs.map { |_, _, t, _| t }.uniq).to eq([trace])
        expect(runs.map { |*, s| s }).to match_array(handlers.map { |h| h["spanId"] })
        lines = File.readlines(log).map { |l| JSON.parse(l) }.select { |r| r["correlation_id"] == task.correlation_id }
        expect(lines.map { |r| r["trace_id"] }.uniq).to eq([trace])
        expect(lines.map { |r| r["span_id"] }).to match_array(handlers.map { |h| h["spanId"] })

        # A caller's traceparent: the task's trace continues it.
        chained_root = spans.find do |s|
          s["name"] == "task.initialize" && attribute_of(s, "tasker.correlation_id") == chained.correlation_id
        end
        expect(chained_root).to include("traceId" => caller_trace, "parentSpanId" => caller_span)
        expect(spans.count { |s| s["name"] == "step.attempt" && s["traceId"] == caller_trace }).to eq(4)
      end
    end
  end

  it "sends the log pipeline to the collector as OTLP logs, with the step's trace context" do
    with_otlp_receiver do |endpoint, exports|
      task = nil
      with_template_dir("traced.yaml" => template) do |dir|
        with_engine(namespaces: ["spec_otel"], template_paths: [dir], log_output: :otlp, log_level: "warn,ruby=info",
                    telemetry: { endpoint: endpoint, export_interval: 3600 }) do
          task = TaskerCore::Client.create_task(namespace: "spec_otel", name: "traced", version: "1.0.0", context: {})
          expect(TaskerCore::Client.wait_for(task.uuid, timeout: 15).status).to eq("complete")
        end
      end
      TaskerCore::Logger.configure(level: "warn,ruby=info") # back to stderr
      records = exports.call.select { |e| e["path"] == "/v1/logs" }.flat_map do |e|
        e.dig("request", "resourceLogs").flat_map { |rl| rl["scopeLogs"].flat_map { |sl| sl["logRecords"] } }
      end
      mine = records.select do |r|
        r["attributes"].any? do |a|
          a["key"] == "correlation_id" && a.dig("value", "stringValue") == task.correlation_id
        end
      end
      expect(mine.size).to eq(4)
      trace = spans_of(exports.call).find do |s|
                s["name"] == "task.initialize" && attribute_of(s, "tasker.correlation_id") == task.correlation_id
              end["traceId"]
      mine.each do |r|
        expect(r).to include("severityText" => "INFO", "traceId" => trace)
        expect(r.dig("body", "stringValue")).to eq("traced step")
        expect(r["attributes"].map { |a| a["key"] }).to include("step_name", "task_uuid", "span_id")
      end
    end
  end

  it "starts new exporters in a forked child, whose engine exports on its own" do
    with_otlp_receiver do |endpoint, exports|
      with_template_dir("traced.yaml" => template) do |dir|
        with_engine(namespaces: [], template_paths: [dir], telemetry: { endpoint: endpoint, export_interval: 3600 }) do
          parent = TaskerCore::Client.create_task(namespace: "spec_otel", name: "traced", version: "1.0.0", context: {})
          reader, writer = IO.pipe
          pid = fork do
            reader.close
            TaskerCore.configuration.namespaces = ["spec_otel"]
            TaskerCore.start
            task = TaskerCore::Client.create_task(namespace: "spec_otel", name: "traced", version: "1.0.0", context: {})
            TaskerCore::Client.wait_for(task.uuid, timeout: 15)
            TaskerCore.stop(timeout: 5)
            writer.puts(task.correlation_id)
            writer.close
            exit!(0)
          rescue Exception => e # rubocop:disable Lint/RescueException
            writer.puts("#{e.class}: #{e.message}")
            exit!(1)
          end
          writer.close
          _, status = Process.wait2(pid)
          child_correlation = reader.read.strip
          reader.close
          expect(status.exitstatus).to eq(0), child_correlation
          # The child's engine exported its own spans (and ran the parent's steps too).
          spans = spans_of(exports.call)
          roots = spans.select { |sp| sp["name"] == "task.initialize" }.map { |sp| attribute_of(sp, "tasker.correlation_id") }
          expect(roots).to include(child_correlation)
          attempts = spans.select { |sp| sp["name"] == "step.attempt" }
          expect(attempts.count { |sp| attribute_of(sp, "tasker.correlation_id") == parent.correlation_id }).to eq(4)
        end
      end
    end
  end

  it "is off unless configured, and rejects what it cannot do" do
    cfg = TaskerCore::Configuration.new.tap { |c| c.database_url = "postgres://x/y" }
    old = ENV.to_h.slice("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED")
    ENV.delete("OTEL_EXPORTER_OTLP_ENDPOINT")
    expect(cfg.to_native["telemetry"]).to be_nil
    ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4318"
    expect(cfg.to_native["telemetry"]).to include("endpoint" => nil, "service_name" => "tasker_core")
    ENV["OTEL_SDK_DISABLED"] = "true"
    expect(cfg.to_native["telemetry"]).to be_nil
    cfg.telemetry = { protocol: "grpc" }
    expect { cfg.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, /grpc.*not supported/)
    cfg.telemetry = { endpoint: "collector:4318" }
    expect { cfg.validate! }.to raise_error(TaskerCore::Errors::ConfigurationError, /http\(s\) URL/)
  ensure
    %w[OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SDK_DISABLED].each { |k| old.key?(k) ? ENV[k] = old[k] : ENV.delete(k) }
  end
end
