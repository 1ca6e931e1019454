# frozen_string_literal: true

require "rack/test"

RSpec.describe TaskerCore::Web do
  include Rack::Test::Methods

  def app = described_class

  around do |example|
    CheckoutWorkflow.reset!
    with_template_dir("checkout.yaml" => CheckoutWorkflow.template("spec_web")) do |dir|
      with_engine(namespaces: ["spec_web"], template_paths: [dir]) { example.run }
    end
  ensure
    described_class.reset!
  end

  def create(context = { "order_id" => 7 })
    TaskerCore::Client.create_task(namespace: "spec_web", name: "checkout", version: "1.0.0", context: context)
  end

  def failed_task(context = { "order_id" => 7 })
    task = create(context)
    expect(TaskerCore::Client.wait_for(task.uuid, timeout: 15).status).to eq("error")
    task
  end

  def token_from(body) = body[/name="authenticity_token" value="([^"]+)"/, 1]

  def json_get(path, params = {})
    get path, params, "HTTP_ACCEPT" => "application/json"
    JSON.parse(last_response.body)
  end

  it "is closed by default: 403 with a page that says how to open it, for HTML and JSON" do
    get "/"
    expect(last_response.status).to eq(403)
    expect(last_response.body).to include("TaskerCore::Web.authorize", "TaskerCore::Web.basic_auth", "TASKER_WEB_USER")
    get "/tasks", {}, "HTTP_ACCEPT" => "application/json"
    expect(last_response.status).to eq(403)
    expect(JSON.parse(last_response.body)["error"]).to include("closed until access is configured")
    post "/tasks/#{SecureRandom.uuid}/cancel", reason: "x"
    expect(last_response.status).to eq(403)
    described_class.authorize { |_request| nil }
    get "/"
    expect(last_response.status).to eq(403)
  end

  it "asks for basic credentials and compares them, from the call or the environment" do
    described_class.basic_auth("ops", "s3cret")
    get "/"
    expect(last_response.status).to eq(401)
    expect(last_response.headers["www-authenticate"]).to start_with("Basic")
    basic_authorize "ops", "wrong"
    get "/"
    expect(last_response.status).to eq(401)
    basic_authorize "ops", "s3cret"
    get "/"
    expect(last_response.status).to eq(200)
    described_class.reset!
    ENV["TASKER_WEB_USER"] = "env-user"
    ENV["TASKER_WEB_PASSWORD"] = "env-pass"
    basic_authorize "env-user", "env-pass"
    get "/"
    expect(last_response.status).to eq(200)
  ensure
    ENV.delete("TASKER_WEB_USER")
    ENV.delete("TASKER_WEB_PASSWORD")
  end

  context "as an admin" do
    before { described_class.authorize { |_request| { role: :admin, actor: "alice" } } }

    it "finds a failed task by status, draws its DAG with the failed node, retries the step with a reason" do
      task = failed_task
      get "/tasks", status: "error"
      expect(last_response.status).to eq(200)
      expect(last_response.body).to include(task.uuid)

      get "/tasks/#{task.uuid}"
      page = last_response.body
      expect(page).to include('<svg class="dag"')
      expect(page).to match(%r{<g class="node state-error"><title>charge: error</title>})
      expect(page).to match(%r{<g class="node state-pending"><title>ship: pending</title>})
      expect(page.scan('<path class="edge"').size).to eq(2)
      expect(page).to include("card &lt;b&gt;declined&lt;/b&gt; by the gateway", "TaskerCore::Errors::PermanentError", "declined")

      # No token: refused, nothing changed.
      post "/tasks/#{task.uuid}/steps/charge/retry", reason: "fixed the gateway"
      expect(last_response.status).to eq(403)
      expect(last_response.body).to include("CSRF")
      # A cross-site request: refused even with the token.
      token = token_from(page)
      post "/tasks/#{task.uuid}/steps/charge/retry", { reason: "x", authenticity_token: token },
           "HTTP_SEC_FETCH_SITE" => "cross-site"
      expect(last_response.status).to eq(403)
      post "/tasks/#{task.uuid}/steps/charge/retry", { reason: "x", authenticity_token: token },
           "HTTP_ORIGIN" => "https://evil.example"
      expect(last_response.status).to eq(403)
      # No reason: refused.
      post "/tasks/#{task.uuid}/steps/charge/retry", authenticity_token: token
      expect(last_response.status).to eq(422)
      expect(TaskerCore::Client.find_task(task.uuid).step("charge").state).to eq("error")

      CheckoutWorkflow.fixed = true
      post "/tasks/#{task.uuid}/steps/charge/retry", { reason: "fixed the gateway", authenticity_token: token },
           "HTTP_SEC_FETCH_SITE" => "same-origin", "HTTP_ORIGIN" => "http://example.org"
      expect(last_response.status).to eq(303)
      expect(last_response.headers["location"]).to eq("/tasks/#{task.uuid}?done=retry&step=charge")
      done = TaskerCore::Client.wait_for(task.uuid, timeout: 15)
      expect(done.status).to eq("complete")
      retried = done.step("charge").transitions.find { |t| t.metadata.is_a?(Hash) && t.metadata["operator"] }
      expect(retried.metadata).to include("actor" => "alice", "reason" => "fixed the gateway")
      get last_response.headers["location"]
      expect(last_response.body).to include("Step charge will run again.")
    end

    it "resolves a failed step with a JSON result and cancels a task, recording who and why" do
      task = failed_task
      get "/tasks/#{task.uuid}"
      token = token_from(last_response.body)
      post "/tasks/#{task.uuid}/steps/charge/resolve", result: "{not json", reason: "paid by phone", authenticity_token: token
      expect(last_response.status).to eq(422)
      post "/tasks/#{task.uuid}/steps/charge/resolve", result: '{"charged": 7}', reason: "paid by phone",
                                                       authenticity_token: token
      expect(last_response.status).to eq(303)
      expect(TaskerCore::Client.wait_for(task.uuid, timeout: 15).step("charge").result).to eq("charged" => 7)

      post "/tasks/#{task.uuid}/cancel", reason: "too late", authenticity_token: token
      expect(last_response.status).to eq(409) # a complete task cannot be cancelled
      expect(last_response.body).to include("complete")

      other = failed_task
      post "/tasks/#{other.uuid}/cancel", { reason: "customer gave up", authenticity_token: token },
           "HTTP_ACCEPT" => "application/json"
      expect(last_response.status).to eq(200)
      expect(JSON.parse(last_response.body)).to include("ok" => true, "done" => "cancel")
      cancelled = TaskerCore::Client.find_task(other.uuid)
      expect(cancelled.status).to eq("cancelled")
      expect(cancelled.transitions.last.metadata).to include("actor" => "alice", "reason" => "customer gave up")
    end

    it "renders every value from the database as text and allows only its own nonce'd script and style" do
      task = failed_task("order_id" => "<img src=x onerror=alert(1)>", "<script>k</script>" => "v")
      get "/tasks/#{task.uuid}"
      page = last_response.body
      expect(page).not_to include("<img src=x", "<script>k</script>", "<script>alert('r')</script>")
      expect(page).to include("&lt;img src=x onerror=alert(1)&gt;", "&lt;script&gt;alert(&#39;r&#39;)&lt;/script&gt;")
      csp = last_response.headers["content-security-policy"]
      nonce = csp[/script-src 'nonce-([^']+)'/, 1]
      expect(nonce).not_to be_nil
      expect(csp).to include("default-src 'none'", "frame-ancestors 'none'", "form-action 'self'")
      expect(page.scan(/<script[^>]*>/)).to eq([%(<script nonce="#{nonce}">)])
      expect(page.scan(/<style[^>]*>/)).to eq([%(<style nonce="#{nonce}">)])
      get "/tasks/#{task.uuid}"
      expect(last_response.headers["content-security-policy"]).not_to include(nonce) # one per response
      expect(page).not_to include(DatabaseSupport.url)
    end

    it "lists newest first by keyset pages, filters by context path, and answers JSON" do
      batch = SecureRandom.hex(8) # this example's tasks, whatever earlier runs left
      created = Array.new(53) { |i| create("order_id" => 1000 + i, "batch" => batch) }
      first = json_get("/tasks", namespace: "spec_web")
      expect(first["tasks"].size).to eq(50)
      expect(first["next"]).to be_a(String)
      second = json_get("/tasks", namespace: "spec_web", cursor: first["next"])
      uuids = (first["tasks"] + second["tasks"]).map { |t| t["uuid"] }
      expect(uuids.uniq.size).to eq(uuids.size)
      expect(uuids).to include(*created.map(&:uuid))
      times = (first["tasks"] + second["tasks"]).map { |t| t["created_at"] }
      expect(times).to eq(times.sort.reverse)

      found = json_get("/tasks", "context.order_id" => "1042", "context.batch" => batch)
      expect(found["tasks"].map { |t| t["uuid"] }).to eq([created[42].uuid])
      expect(json_get("/tasks", "context.batch" => batch)["tasks"].size).to eq(50)
      expect(json_get("/tasks", "context.order_id" => "1042", "context.batch" => batch, status: "cancelled")["tasks"])
        .to eq([])
      expect(json_get("/tasks", task_uuid: created[3].uuid)["tasks"].map { |t| t["uuid"] }).to eq([created[3].uuid])
      expect(json_get("/tasks", created_from: "2999-01-01T00:00:00Z")["tasks"]).to eq([])

      get "/tasks", status: "nope"
      expect(last_response.status).to eq(422)
      get "/tasks", created_from: "yesterday-ish"
      expect(last_response.status).to eq(422)
      get "/tasks", cursor: "garbage"
      expect(last_response.status).to eq(422)

      task = json_get("/tasks/#{created[0].uuid}")
      expect(task).to include("uuid" => created[0].uuid, "status" => a_kind_of(String))
      expect(task["steps"].map { |s| s["name"] }).to eq(%w[load charge ship])
    end

    it "shows the overview with exact counts, the last hour per minute and the queues" do
      failed_task
      data = json_get("/")
      expect(data["tasks"]["exact"]).to be(true)
      expect(data["tasks"]["states"]).to include("state" => "error", "count" => a_value >= 1)
      expect(data["throughput"].size).to eq(60)
      expect(data["throughput"].sum { |m| m["failed"] }).to be >= 1
      expect(data["queues"].map { |q| q["namespace"] }).to include("spec_web")
      get "/"
      expect(last_response.body).to include('<svg class="chart"', "spec_web", "Live refresh")
    end

    it "retries every failed task matching the filter at once, bounded, and says how many" do
      batch = SecureRandom.hex(8)
      failed = Array.new(3) { |i| failed_task("order_id" => i, "batch" => batch) }
      get "/tasks", status: "error", "context.batch" => batch
      page = last_response.body
      expect(page).to include("Retry every failed task matching this filter")
      CheckoutWorkflow.fixed = true
      post "/tasks/retry", { "status" => "error", "context.batch" => batch, "reason" => "gateway back",
                             "authenticity_token" => token_from(page) }
      expect(last_response.status).to eq(303)
      location = last_response.headers["location"]
      expect(location).to include("done=bulk", "steps=3", "tasks=3", "context.batch=#{batch}")
      expect(failed.map { |t| TaskerCore::Client.wait_for(t.uuid, timeout: 15).status }).to all(eq("complete"))
      get location
      expect(last_response.body).to include("Retried 3 failed step(s) of 3 task(s).")
      post "/tasks/retry", { "context.batch" => batch, "reason" => "again", "authenticity_token" => token_from(page) },
           "HTTP_ACCEPT" => "application/json"
      expect(JSON.parse(last_response.body)).to include("tasks" => 0, "steps" => 0)
    end

    it "lists the queues, the breakers, the live processes and the dead letters with their reasons" do
      data = json_get("/queues")
      expect(data["queues"]).to include(a_hash_including("namespace" => "spec_web"))
      breakers = json_get("/breakers")["groups"]
      expect(breakers.keys.join(" ")).to include("named", "queue", "handler")

      procs = eventually { json_get("/processes")["processes"].find { |p| p["pid"] == Process.pid && p["alive"] } }
      expect(procs).to include("namespaces" => ["spec_web"], "concurrency" => 2, "hostname" => a_kind_of(String))
      expect(json_get("/")["live_processes"]).to be >= 1

      psql("SELECT pgmq.send('tasker_ns_spec_web', '\"<b>not a step</b>\"'::jsonb)")
      letter = eventually do
        json_get("/dead", namespace: "spec_web")["letters"].find do |l|
          l["message"] == '"<b>not a step</b>"'
        end
      end
      expect(letter["reason"]).to include("not a step message")
      get "/dead", namespace: "spec_web"
      expect(last_response.body).to include("&lt;b&gt;not a step&lt;/b&gt;").and include("not a step message")
      expect(json_get("/dead", namespace: "task_requests")["queue"]).to eq("tasker_task_requests")
      # A poison message nested deeper than JSON can be read back is shown as text, not a 500.
      psql("SELECT pgmq.send('tasker_task_requests', (repeat('[', 300) || repeat(']', 300))::jsonb)")
      deep = eventually { json_get("/dead", namespace: "task_requests")["letters"].find { |l| l["message"].start_with?("[[[") } }
      expect(deep["message"].size).to be <= 2000
      expect(deep["reason"]).to be_a(String)
      get "/dead", namespace: "Bad Name"
      expect(last_response.status).to eq(422)
      get "/dead", namespace: "spec_web", before: "x"
      expect(last_response.status).to eq(422)
      %w[/queues /breakers /processes /dead].each do |path|
        get path
        expect(last_response.status).to eq(200), path
      end
    end

    it "answers 404 and 405 plainly, and builds every link under its mount point" do
      get "/tasks/#{SecureRandom.uuid}"
      expect(last_response.status).to eq(404)
      get "/tasks/not-a-uuid"
      expect(last_response.status).to eq(404)
      get "/nowhere"
      expect(last_response.status).to eq(404)
      delete "/tasks"
      expect(last_response.status).to eq(405)
      task = failed_task
      get "/tasks/#{task.uuid}", {}, "SCRIPT_NAME" => "/ops/tasker"
      expect(last_response.body).to include(%(action="/ops/tasker/tasks/#{task.uuid}/steps/charge/retry"))
      expect(last_response.body).to include(%(href="/ops/tasker/tasks"))
    end
  end

  context "as read-only" do
    before { described_class.authorize { |_request| :read_only } }

    it "sees everything, draws no action, and is refused on every POST" do
      task = failed_task
      get "/tasks/#{task.uuid}"
      expect(last_response.status).to eq(200)
      expect(last_response.body).to include("charge")
      expect(last_response.body).not_to include('method="post"')
      post "/tasks/#{task.uuid}/steps/charge/retry", reason: "forged"
      expect(last_response.status).to eq(403)
      expect(last_response.body).to include("read-only")
      expect(TaskerCore::Client.find_task(task.uuid).step("charge").state).to eq("error")
    end
  end
end

RSpec.describe "the process heartbeat" do
  it "writes a row while the engine runs and removes it at stop" do
    with_engine(namespaces: []) do
      row = eventually do
        psql("SELECT namespaces, concurrency FROM tasker.processes WHERE pid = #{Process.pid}").then do |r|
          r.empty? ? nil : r
        end
      end
      expect(row).to eq("{}|2")
    end
    expect(psql("SELECT count(*) FROM tasker.processes WHERE pid = #{Process.pid}")).to eq("0")
  end
end
