# frozen_string_literal: true

module TaskerCore
  module Web
    # One request to the dashboard: access, CSRF, routing, rendering. Made by {Web.call}.
    # @api private
    class App
      # Where the ERB views are.
      VIEWS = File.join(__dir__, "views")
      # The CSRF token's cookie (when the application has no session).
      CSRF_COOKIE = "tasker_core_csrf"
      # The CSRF token's key in a Rack session.
      CSRF_SESSION_KEY = "tasker_core.csrf"
      # The form field carrying the CSRF token.
      CSRF_FIELD = "authenticity_token"
      # Tasks on one page.
      PAGE_SIZE = 50
      # Most tasks one bulk retry touches.
      BULK_LIMIT = 200
      # Seconds without a heartbeat after which a process is shown as gone.
      PROCESS_SILENT_AFTER = 30
      # The `namespace` of the dead letters page that means the task requests queue.
      REQUESTS_QUEUE_PARAM = "task_requests"
      # Characters of a result shown before "show all".
      RESULT_PREVIEW = 2_000
      # The filters of the task list, as query parameters.
      FILTERS = %w[status namespace name version created_from created_to correlation_id idempotency_key
                   task_uuid].freeze
      # Task and step states, in the order the pages list them.
      TASK_STATES = %w[pending in_progress complete error cancelled].freeze
      # @see TASK_STATES
      STEP_STATES = %w[pending enqueued in_progress waiting_for_retry complete error cancelled resolved_manually].freeze
      # Compiled views, by name.
      TEMPLATES = {} # rubocop:disable Style/MutableConstant -- filled once per view, under a lock
      # Guards {TEMPLATES}.
      TEMPLATES_LOCK = Mutex.new
      # The pages (GET) by path.
      PAGES = { "/" => :overview, "/tasks" => :tasks, "/queues" => :queues, "/breakers" => :breakers,
                "/processes" => :processes, "/dead" => :dead }.freeze
      # A task or step uuid in a path.
      UUID = /\A\h{8}-\h{4}-\h{4}-\h{4}-\h{12}\z/

      # An answer other than a page: a status and a message (rendered as a small page or JSON).
      class Halt < StandardError
        # @return [Integer]
        attr_reader :status

        def initialize(status, message)
          super(message)
          @status = status
        end
      end

      # @return [Request]
      attr_reader :request
      # @return [Access, nil]
      attr_reader :access
      # @return [String] this response's CSP nonce
      attr_reader :nonce

      def initialize(env)
        @request = Request.new(env)
        @nonce = SecureRandom.base64(18)
        @headers = {}
      end

      # @return [Array(Integer, Hash, Array<String>)] the Rack response
      def response
        @access = Web.access_for(request)
        return challenge if @access == :challenge
        return closed unless @access

        status, body = route
        finish(status, body)
      rescue Halt => e
        failed(e.status, e.message)
      rescue Errors::ValidationError => e
        failed(422, e.message)
      rescue StandardError => e
        Logger.error("tasker_core dashboard: #{request.request_method} #{request.path} failed: " \
                     "#{StepExecution.describe(e)}")
        failed(500, "internal error (#{e.class}); the details are in the application's log")
      end

      # --- helpers for the views

      # @return [String] HTML-escaped text
      def h(text) = ERB::Util.html_escape(text.to_s)

      # @return [String] a path under the mount point, with `params` as its query (nil values left out)
      def url(path, params = {})
        query = params.compact.reject { |_, v| v.to_s.empty? }
        "#{request.prefix}#{path}#{query.empty? ? '' : "?#{URI.encode_www_form(query)}"}"
      end

      # @return [String] a hidden field with the CSRF token
      def csrf_field = %(<input type="hidden" name="#{CSRF_FIELD}" value="#{h(csrf_token)}">)

      # @return [String] pretty JSON of a value (for results, contexts, metadata)
      def pretty(value)
        JSON.pretty_generate(value)
      rescue JSON::GeneratorError, TypeError
        value.inspect
      end

      # @return [String, nil] what the last action did, from the redirect's query
      def notice
        step = request.query["step"].to_s[0, 200]
        case request.query["done"]
        when "cancel" then "Task cancelled."
        when "retry" then "Step #{step} will run again."
        when "resolve" then "Step #{step} resolved by hand."
        when "bulk"
          q = request.query
          "Retried #{q['steps'].to_i} failed step(s) of #{q['tasks'].to_i} task(s)" \
            "#{", #{q['refused'].to_i} refused" if q['refused'].to_i.positive?}" \
            "#{"; more tasks match: retry again for the next #{BULK_LIMIT}" if q['more']}."
        end
      end

      # @return [String] a short form of an ISO-8601 time
      def at(time) = time.to_s.sub("T", " ").sub(/\.\d+/, "").sub(/Z|\+00:00\z/, " UTC")

      # @return [String] the step's HTML id
      def anchor(name) = Dag.anchor(name)

      # @return [String] the CSRF token of this session (made on first use)
      def csrf_token
        @csrf_token ||= begin
          session = request.session
          existing = session ? session[CSRF_SESSION_KEY] : request.cookies[CSRF_COOKIE]
          if existing.is_a?(String) && existing.size >= 32
            existing
          else
            token = SecureRandom.urlsafe_base64(32)
            session ? session[CSRF_SESSION_KEY] = token : store_csrf_cookie(token)
            token
          end
        end
      end

      private

      def route
        path = request.path
        page = PAGES[path]
        return get? ? send(page) : not_allowed if page
        return post? ? act { bulk_retry } : not_allowed if path == "/tasks/retry"

        case path
        when %r{\A/tasks/([^/]+)\z} then get? ? task(Regexp.last_match(1)) : not_allowed
        when %r{\A/tasks/([^/]+)/cancel\z}
          uuid = Regexp.last_match(1)
          post? ? act { cancel(uuid) } : not_allowed
        when %r{\A/tasks/([^/]+)/steps/([^/]+)/(retry|resolve)\z}
          step_action(Regexp.last_match(1), URI.decode_www_form_component(Regexp.last_match(2)), Regexp.last_match(3))
        else raise Halt.new(404, "no page at #{path}")
        end
      end

      def step_action(uuid, step, action)
        not_allowed unless post?
        act { action == "retry" ? retry_step(uuid, step) : resolve(uuid, step) }
      end

      def get? = %w[GET HEAD].include?(request.request_method)

      def post? = request.request_method == "POST"

      def not_allowed = raise(Halt.new(405, "#{request.request_method} is not allowed here"))

      # --- pages

      def overview
        data = engine.dashboard_overview
        health = TaskerCore.health
        data["breakers"] = open_breakers(health)
        data["live_processes"] = engine.processes.count do |p|
          p["silent_seconds"] < PROCESS_SILENT_AFTER && !p["namespaces"].empty?
        end
        data["this_process"] = { "pid" => Process.pid, "handler_threads" => health["handler_threads"] }
        respond("overview", data, title: "Overview", refresh: true)
      end

      def queues
        all = engine.paused
        paused = all.reject { |p| p["template"] }.to_h { |p| [p["namespace"], p] }
        templates = all.select { |p| p["template"] }
        respond("queues", { "queues" => engine.dashboard_queues["queues"], "paused" => paused,
                            "paused_templates" => templates }, title: "Queues", refresh: true)
      end

      def breakers
        health = TaskerCore.health
        groups = { "named (CircuitBreaker.call)" => health["circuit_breakers"],
                   "queue (one per namespace)" => health["queue_breakers"],
                   "handler (one per handler class)" => health["handler_breakers"] }
        respond("breakers", { "groups" => groups.transform_values { |g| g || {} } }, title: "Circuit breakers", refresh: true)
      end

      def processes
        rows = engine.processes.map { |p| p.merge("alive" => p["silent_seconds"] < PROCESS_SILENT_AFTER) }
        data = { "processes" => rows, "silent_after" => PROCESS_SILENT_AFTER }
        respond("processes", data, title: "Processes", refresh: true)
      end

      def dead
        names = engine.namespaces # (no queue figures: this page shows none)
        chosen = presence(request.query["namespace"]) || names.first || REQUESTS_QUEUE_PARAM
        namespace = chosen == REQUESTS_QUEUE_PARAM ? nil : chosen
        page = engine.dead_letters(namespace, message_id(request.query["before"]), PAGE_SIZE)
        respond("dead", page.merge("namespace" => namespace, "namespaces" => names), title: "Dead letters")
      end

      def message_id(text)
        text = presence(text)
        text && Integer(text, 10)
      rescue ArgumentError
        raise Halt.new(422, "before must be a message id")
      end

      def tasks
        filter = task_filter
        page = engine.list_tasks(filter, presence(request.query["cursor"]), PAGE_SIZE)
        respond("tasks", page.merge("filter" => filter), title: "Tasks", refresh: true)
      end

      def task(uuid)
        task = find(uuid)
        respond("task", task, title: "Task #{uuid}", refresh: true)
      end

      # Every step in `error` of the tasks in `error` that match the list's filter (at most
      # BULK_LIMIT tasks, newest first) runs again; the answer says how many.
      def bulk_retry
        filter = task_filter_from(request.form).merge("status" => "error")
        page = engine.list_tasks(filter, nil, BULK_LIMIT)
        why = reason
        steps = 0
        refused = 0
        page["tasks"].each do |t|
          (engine.find_task(t["uuid"])&.fetch("steps") || []).select { |st| st["state"] == "error" }.each do |st|
            Client.retry_step(t["uuid"], st["name"], reason: why, actor: access.actor)
            steps += 1
          rescue Errors::InvalidTransitionError, Errors::NotFoundError
            refused += 1
          end
        end
        report = { "tasks" => page["tasks"].size, "steps" => steps, "refused" => refused, "more" => !page["next"].nil? }
        return [200, json_body(report.merge("ok" => true))] if request.json?

        contexts = request.form.select { |k, _| k.start_with?("context.") }
        back = filter.slice(*FILTERS).merge(contexts).merge("done" => "bulk", "tasks" => report["tasks"], "steps" => steps,
                                                            "refused" => refused, "more" => report["more"] ? 1 : nil)
        @headers["location"] = url("/tasks", back)
        [303, ""]
      end

      # --- actions (POST): access, origin and token are checked first; then a 303 to the task

      def act
        raise Halt.new(403, "read-only access: actions are not allowed") unless access.admin?

        check_origin!
        check_token!
        yield
      rescue Errors::InvalidTransitionError, Errors::NotFoundError => e
        raise Halt.new(409, e.message)
      end

      def cancel(uuid)
        find(uuid)
        Client.cancel_task(uuid, reason: reason, actor: access.actor)
        done(uuid, "cancel", nil)
      end

      def retry_step(uuid, step)
        find(uuid)
        Client.retry_step(uuid, step, reason: reason, actor: access.actor)
        done(uuid, "retry", step)
      end

      def resolve(uuid, step)
        find(uuid)
        text = request.form["result"].to_s
        result = begin
          JSON.parse(text)
        rescue JSON::ParserError => e
          raise Halt.new(422, "the result is not JSON: #{e.message[0, 200]}")
        end
        Client.resolve_step_manually(uuid, step, result: result, reason: reason, actor: access.actor)
        done(uuid, "resolve", step)
      end

      def done(uuid, action, step)
        return [200, json_body("ok" => true, "done" => action, "step" => step, "task" => engine.find_task(uuid))] if request.json?

        @headers["location"] = url("/tasks/#{uuid}", "done" => action, "step" => step)
        [303, ""]
      end

      def reason
        text = request.form["reason"].to_s.strip
        raise Halt.new(422, "give a reason (it is recorded with the action)") if text.empty?

        text[0, 1000]
      end

      # --- security

      # A cross-site request is refused whatever it carries: the browser says where it came from.
      def check_origin!
        site = request.header("Sec-Fetch-Site")
        raise Halt.new(403, "cross-site request refused") if site && !%w[same-origin none].include?(site)

        origin = request.header("Origin") # "null" (an opaque origin) is never ours
        raise Halt.new(403, "cross-origin request refused") if origin && origin != request.origin
      end

      def check_token!
        given = request.form[CSRF_FIELD] || request.header("X-CSRF-Token")
        expected = csrf_token
        ok = given.is_a?(String) && given.bytesize == expected.bytesize &&
             OpenSSL.fixed_length_secure_compare(given, expected)
        raise Halt.new(403, "missing or invalid CSRF token: reload the page and try again") unless ok
      end

      def store_csrf_cookie(token)
        secure = request.https? ? "; Secure" : ""
        path = request.prefix.empty? ? "/" : request.prefix
        @headers["set-cookie"] = "#{CSRF_COOKIE}=#{token}; Path=#{path}; HttpOnly; SameSite=Strict#{secure}"
      end

      def security_headers
        {
          "content-security-policy" => "default-src 'none'; script-src 'nonce-#{nonce}'; style-src 'nonce-#{nonce}'; " \
                                       "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
          "x-content-type-options" => "nosniff",
          "x-frame-options" => "DENY",
          "referrer-policy" => "same-origin",
          "cache-control" => "no-store"
        }
      end

      def closed
        @access = nil
        message = "The tasker_core dashboard is closed until access is configured. In an initializer: " \
                  "TaskerCore::Web.authorize { |request| ... } returning :admin or :read_only, or " \
                  "TaskerCore::Web.basic_auth(user, password); or set TASKER_WEB_USER and TASKER_WEB_PASSWORD. " \
                  "See docs/web.md."
        failed(403, message, title: "Access not configured")
      end

      def challenge
        @access = nil
        @headers["www-authenticate"] = 'Basic realm="tasker_core", charset="UTF-8"'
        failed(401, "Authentication required.")
      end

      # --- data

      def engine
        TaskerCore.engine
      rescue Errors::NotStartedError
        raise Halt.new(503, "TaskerCore is not started in this process (a web process starts it in mode :client: " \
                            "TaskerCore.start with no namespaces)")
      end

      def find(uuid)
        raise Halt.new(404, "not a task uuid") unless UUID.match?(uuid)

        engine.find_task(uuid) || raise(Halt.new(404, "no task #{uuid}"))
      end

      def task_filter = task_filter_from(request.query)

      # The list's filter from query (or form) parameters, ready for the engine.
      def task_filter_from(q)
        filter = FILTERS.to_h { |k| [k, presence(q[k])] }.compact
        %w[created_from created_to].each { |k| filter[k] = time_param(k, filter[k]) if filter[k] }
        context = q.select { |k, _| k.start_with?("context.") && k.size > 8 }
                   .to_h { |k, v| [k.delete_prefix("context."), json_scalar(v)] }
        filter["context"] = nest(context) unless context.empty?
        filter
      rescue Errors::ValidationError => e
        raise Halt.new(422, e.message)
      end

      # `a.b=1` → {"a" => {"b" => 1}}: a JSON path of object keys.
      def nest(flat)
        flat.each_with_object({}) do |(path, value), out|
          keys = path.split(".")
          raise Halt.new(422, "bad context path #{path.inspect}") if keys.any?(&:empty?)

          leaf = keys[0..-2].reduce(out) { |node, key| node[key].is_a?(Hash) ? node[key] : (node[key] = {}) }
          leaf[keys.last] = value
        end
      end

      # A query value as the JSON scalar it spells (42, true, null), else the String.
      def json_scalar(text)
        value = JSON.parse(text)
        value.is_a?(Hash) || value.is_a?(Array) ? text : value
      rescue JSON::ParserError
        text
      end

      def time_param(name, text)
        Time.parse(text).utc.iso8601(6)
      rescue ArgumentError
        raise Halt.new(422, "#{name} is not a time: #{text[0, 64].inspect}")
      end

      def presence(text) = text.nil? || text.strip.empty? ? nil : text.strip

      def open_breakers(health)
        { "circuit breaker" => health["circuit_breakers"], "queue breaker" => health["queue_breakers"],
          "handler breaker" => health["handler_breakers"] }.flat_map do |kind, group|
          (group || {}).reject { |_, b| b["state"] == "closed" }.map { |name, b| b.merge("kind" => kind, "name" => name) }
        end
      end

      # --- rendering

      def respond(view, data, title:, refresh: false)
        return [200, json_body(data.merge("csrf_token" => csrf_token))] if request.json?

        [200, page(view, title: title, data: data, refresh: refresh)]
      end

      def page(view, title:, refresh: false, **locals)
        body = render(view, **locals)
        render("layout", title: title, body: body, refresh: refresh)
      end

      def render(view, **locals)
        template = TEMPLATES[view] || TEMPLATES_LOCK.synchronize do
          TEMPLATES[view] ||= ERB.new(File.read(File.join(VIEWS, "#{view}.erb")), trim_mode: "-")
        end
        template.result(view_binding(locals))
      end

      # A binding of this object with the view's locals (and nothing else) defined.
      def view_binding(locals)
        scope = binding
        locals.each { |name, value| scope.local_variable_set(name, value) }
        scope
      end

      def json_body(data) = JSON.generate(data)

      def finish(status, body)
        type = request.json? ? "application/json" : "text/html; charset=utf-8"
        headers = security_headers.merge("content-type" => type).merge(@headers)
        [status, headers, [body]]
      end

      def failed(status, message, title: status_title(status))
        finish(status, request.json? ? json_body("error" => message) : page("message", title: title, message: message))
      end

      def status_title(status)
        { 401 => "Sign in", 403 => "Forbidden", 404 => "Not found", 405 => "Not allowed", 409 => "Not possible now",
          422 => "Not understood", 503 => "Not started" }.fetch(status, "Error")
      end
    end
  end
end
