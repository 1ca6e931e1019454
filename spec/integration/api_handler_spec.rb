# frozen_string_literal: true

require "json"
require "time"
require "webrick"

RSpec.describe TaskerCore::StepHandler::Api do
  before(:all) do
    @hits = Hash.new(0)
    @server = WEBrick::HTTPServer.new(BindAddress: "127.0.0.1", Port: 0, Logger: WEBrick::Log.new(File::NULL),
                                      AccessLog: [])
    hits = @hits
    @server.mount_proc("/") do |req, res|
      hits[req.path] += 1
      case req.path
      when "/ok"
        res["Content-Type"] = "application/json"
        res.body = JSON.generate("ok" => true, "query" => req.query, "method" => req.request_method,
                                 "received" => req.body && JSON.parse(req.body))
      when %r{\A/status/(\d+)\z}
        res.status = Regexp.last_match(1).to_i
        res["Retry-After"] = req.query["retry_after"] if req.query["retry_after"]
        res.body = "status #{res.status}"
      when "/flaky"
        if hits["/flaky"] == 1
          res.status = 503
          res["Retry-After"] = Time.at(Time.now.to_i + 1).httpdate
        else
          res["Content-Type"] = "application/json"
          res.body = '{"recovered": true}'
        end
      end
    end
    @thread = Thread.new { @server.start }
    @base = "http://127.0.0.1:#{@server.config[:Port]}"
  end

  after(:all) do
    @server.shutdown
    @thread.join(5)
  end

  let(:template) do
    <<~YAML
      name: api_call
      namespace: spec_api
      version: "1.0.0"
      steps:
        - name: call_api
          handler:
            callable: SpecHandlers::ApiCall
            initialization: { base_url: "#{@base}", read_timeout: 5 }
          retry: { max_attempts: 2, backoff_base_ms: 10, max_backoff_ms: 20 }
    YAML
  end

  around do |ex|
    with_template_dir("api.yaml" => template) do |dir|
      with_engine(namespaces: ["spec_api"], template_paths: [dir]) { ex.run }
    end
  end

  def call_api(context)
    task = TaskerCore::Client.create_task(namespace: "spec_api", name: "api_call", version: "1.0.0", context: context)
    TaskerCore::Client.wait_for(task.uuid, timeout: 20).step("call_api")
  end

  it "returns the parsed body with status and timing in the metadata" do
    step = call_api("path" => "/ok", "params" => { "q" => "1" })
    expect(step.state).to eq("complete")
    expect(step.result).to eq("ok" => true, "query" => { "q" => "1" }, "method" => "GET", "received" => nil)
    expect(step.metadata).to include("http_status" => 200, "method" => "GET", "url" => "#{@base}/ok?q=1",
                                     "requests" => 1)
    expect(step.metadata["response_time_ms"]).to be_a(Numeric)
    posted = call_api("path" => "/ok", "verb" => "post")
    expect(posted.result).to include("method" => "POST", "received" => { "order" => 7 })
  end

  [400, 401, 403, 404, 422].each do |status|
    it "fails permanently on #{status}" do
      step = call_api("path" => "/status/#{status}")
      expect([step.state, step.attempts]).to eq(["error", 1])
      expect(step.error).to include("error_class" => "TaskerCore::Errors::PermanentError",
                                    "error_code" => "http_#{status}", "retryable" => false)
      # The error's metadata (StepError#metadata) is stored with it.
      expect(step.error["metadata"]).to eq("http_status" => status, "url" => "#{@base}/status/#{status}")
    end
  end

  [429, 503].each do |status|
    it "retries #{status} after exactly the Retry-After seconds" do
      step = call_api("path" => "/status/#{status}", "params" => { "retry_after" => "1" })
      expect([step.state, step.attempts]).to eq(["error", 2])
      waiting = step.transitions.find { |t| t.to_state == "waiting_for_retry" }
      expect(waiting.metadata).to include("retry_in_ms" => 1000)
    end
  end

  it "honours Retry-After given as an HTTP date and recovers" do
    step = call_api("path" => "/flaky")
    expect([step.state, step.attempts, step.result]).to eq(["complete", 2, { "recovered" => true }])
    waiting = step.transitions.find { |t| t.to_state == "waiting_for_retry" }
    expect(waiting.metadata["retry_in_ms"]).to be_between(0, 1000)
  end

  it "retries other 5xx and connection failures" do
    step = call_api("path" => "/status/500")
    expect(step.error).to include("error_class" => "TaskerCore::Errors::RetryableError", "retryable" => true)
    expect(step.attempts).to eq(2)
    closed = TCPServer.new("127.0.0.1", 0).tap { |s| @closed_port = s.addr[1] }
    closed.close
    handler = SpecHandlers::ApiCall.new(config: { "base_url" => "http://127.0.0.1:#{@closed_port}" }.freeze)
    expect { handler.get("/anything") }.to raise_error(TaskerCore::RetryableError, /ECONNREFUSED|refused/i)
  end

  it "parses Retry-After values" do
    handler = SpecHandlers::ApiCall.new(config: { "base_url" => @base }.freeze)
    expect(handler.send(:retry_after, "120")).to eq(120.0)
    expect(handler.send(:retry_after, (Time.now + 30).httpdate)).to be_within(1.5).of(30)
    expect(handler.send(:retry_after, "Wed, 21 Oct 2015 07:28:00 GMT")).to eq(0)
    expect(handler.send(:retry_after, "soon")).to be_nil
  end
end
