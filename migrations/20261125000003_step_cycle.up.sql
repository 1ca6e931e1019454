-- The step cycle as functions, each defined once (ARCHITECTURE §5/§6, docs/architecture.md):
-- creating tasks, claiming steps, applying outcomes — each one round trip and one transaction,
-- many tasks, messages or outcomes at a time. Rust computes backoff (one authority) and
-- validates queue names before they reach these functions. Queue writes made while applying an
-- outcome cannot take the outcome down with them: a step's outcome commits even when its
-- namespace queue is locked, dropped or behind an open circuit breaker; children released by
-- it are then `enqueued` without a message, and the recovery loop sends them once the queue
-- works again. Step messages name the step's handler class, so that a worker can check that
-- handler's circuit breaker before it claims the step.

-- One history row (append-only: nothing earlier is touched). Helpers that run statements are
-- PL/pgSQL, which keeps its plans for the session (a SQL function's statements are planned on
-- every call); pure expressions (tasker.next_task_state, tasker.message_priority) stay SQL
-- functions, which the planner inlines.
CREATE FUNCTION tasker.record_step_transition(p_step uuid, p_task uuid, p_from text, p_to text, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, metadata)
    VALUES (p_step, p_task, p_from, p_to, coalesce(p_meta, '{}'));
END $$;

-- A task's history row and its current status, together.
CREATE FUNCTION tasker.record_task_transition(p_task uuid, p_from text, p_to text, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, metadata)
    VALUES (p_task, p_from, p_to, coalesce(p_meta, '{}'));
    UPDATE tasker.tasks
       SET status = p_to, updated_at = now(),
           completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled') THEN now() END
     WHERE task_uuid = p_task;
END $$;

-- The state a task moves to, from its current state and the counts of its steps that are
-- unfinished (not complete or resolved), active (enqueued, running or waiting to retry) and
-- failed; NULL when it stays. A finished or cancelled task stays; a pending one only starts.
CREATE FUNCTION tasker.next_task_state(p_current text, p_unfinished bigint, p_active bigint, p_failed bigint)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_current IN ('complete', 'cancelled') THEN NULL
                WHEN p_unfinished = 0 THEN CASE WHEN p_current = 'pending' THEN NULL ELSE 'complete' END
                WHEN p_active = 0 AND p_failed > 0 THEN CASE WHEN p_current IN ('error', 'pending') THEN NULL ELSE 'error' END
                WHEN p_current = 'in_progress' THEN NULL
                ELSE 'in_progress' END
$$;

-- Decide the state of tasks p_tasks from their steps (the callers hold the task rows' locks):
-- the one place a task's state follows from its steps (by tasker.next_task_state's rule). Each
-- task whose state changes gets it, its completion time and a history row; returns those
-- tasks and their new states. One notification per 200 tasks that became complete or error
-- (a payload holds under 8000 bytes) wakes the processes waiting for them.
CREATE FUNCTION tasker.finalize_tasks(p_tasks uuid[])
RETURNS TABLE (task_uuid uuid, status text)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    f_tasks uuid[];
    f_states text[];
    ended uuid[];
    chunk integer;
BEGIN
    WITH counts AS (
        SELECT ws.task_uuid AS t,
               count(*) FILTER (WHERE ws.state NOT IN ('complete', 'resolved_manually')) AS unfinished,
               count(*) FILTER (WHERE ws.state IN ('enqueued', 'in_progress', 'waiting_for_retry')) AS active,
               count(*) FILTER (WHERE ws.state = 'error') AS failed
          FROM unnest(p_tasks) AS m(t)
          JOIN LATERAL (SELECT * FROM tasker.workflow_steps w WHERE w.task_uuid = m.t) ws ON true
         GROUP BY 1),
    changed AS (
        SELECT c.*, tk.status AS cur, tasker.next_task_state(tk.status, c.unfinished, c.active, c.failed) AS nxt
          FROM counts c JOIN tasker.tasks tk ON tk.task_uuid = c.t AND tk.task_uuid = ANY (p_tasks)),
    upd AS (
        UPDATE tasker.tasks tk
           SET status = ch.nxt, updated_at = now(),
               completed_at = CASE WHEN ch.nxt IN ('complete', 'error', 'cancelled') THEN now() END
          FROM changed ch WHERE ch.nxt IS NOT NULL AND tk.task_uuid = ch.t AND tk.task_uuid = ANY (p_tasks)),
    hist AS (
        INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, metadata)
        SELECT ch.t, ch.cur, ch.nxt, jsonb_build_object('unfinished_steps', ch.unfinished, 'failed_steps', ch.failed)
          FROM changed ch WHERE ch.nxt IS NOT NULL ORDER BY ch.t)
    SELECT coalesce(array_agg(ch.t ORDER BY ch.t), '{}'), coalesce(array_agg(ch.nxt ORDER BY ch.t), '{}')
      INTO f_tasks, f_states
      FROM changed ch WHERE ch.nxt IS NOT NULL;
    ended := array(SELECT x.t FROM unnest(f_tasks, f_states) AS x(t, s) WHERE x.s IN ('complete', 'error'));
    FOR chunk IN SELECT g FROM generate_series(1, cardinality(ended), 200) AS g LOOP
        PERFORM pg_notify('tasker_task_finalized', array_to_string(ended[chunk:chunk + 199], ','));
    END LOOP;
    RETURN QUERY SELECT x.t, x.s FROM unnest(f_tasks, f_states) AS x(t, s);
END $$;

-- Send step messages to p_queue (a name the engine validated): the one statement by which the
-- step cycle enqueues. Each message is visible from its p_visible_at, or now when that is NULL
-- (a step claimed in the same transaction passes its claim's expiry: its message shows again
-- only if the claim lapses). Straight into the queue table (pgmq 1.x's layout, which the
-- engine's reads rely on too): pgmq.send_batch adds three PL/pgSQL layers and a name check.
CREATE FUNCTION tasker.send_step_messages(p_queue text, p_messages jsonb[], p_visible_at timestamptz[])
RETURNS TABLE (msg_id bigint, step_uuid uuid) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO pgmq.%I (vt, message) '
        'SELECT coalesce(x.v, clock_timestamp()), x.m FROM unnest($1, $2) WITH ORDINALITY AS x(m, v, k) ORDER BY x.k '
        'RETURNING msg_id, (message->>''step_uuid'')::uuid', 'q_' || p_queue)
      USING p_messages, p_visible_at;
END $$;

-- Delete a settled message (p_delete_msg, may be NULL) and send p_messages to p_queue (whose
-- name the engine validated), waiting
-- at most p_lock_timeout_ms for a lock on the queue table. Runs in a subtransaction: on failure
-- nothing of it remains and the error text is returned; NULL means done.
CREATE FUNCTION tasker.write_queue(p_queue text, p_namespace text, p_messages jsonb[],
                                   p_delete_msg bigint, p_lock_timeout_ms integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    previous text := current_setting('lock_timeout');
BEGIN
    BEGIN
        PERFORM set_config('lock_timeout', greatest(p_lock_timeout_ms, 1) || 'ms', true);
        IF p_delete_msg IS NOT NULL THEN
            EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', 'q_' || p_queue) USING p_delete_msg;
        END IF;
        IF coalesce(cardinality(p_messages), 0) > 0 THEN
            PERFORM tasker.send_step_messages(p_queue, p_messages, NULL);
            PERFORM pg_notify('tasker_wakeup', p_namespace);
        END IF;
        PERFORM set_config('lock_timeout', previous, true);
    EXCEPTION WHEN OTHERS THEN
        -- The subtransaction (and the lock_timeout set inside it) is rolled back.
        RETURN SQLERRM;
    END;
    RETURN NULL;
END $$;

-- Release the children of the completed steps p_done: the one place a step becomes ready.
-- Each child's pending_parents drops by the number of its parents in p_done (a join whose
-- parents complete together is released once), and a child reaching zero moves pending →
-- enqueued — or on to in_progress, claimed for p_worker (attempt 1, a new claim token, a claim
-- expiry of its timeout plus p_grace), when its task's queue is in p_claim_queues, its handler
-- is not in p_blocked, it has no flow limit, no template is paused, and fewer than p_capacity
-- were claimed before it. Each task's queue is
-- given as p_route_queues[i] for p_route_tasks[i]. The callers hold the task rows' locks.
-- Returns the released children (the step that released each, its queue, its step message,
-- and for a claimed one its claim expiry); their messages are the caller's to send.
CREATE FUNCTION tasker.release_children(p_done uuid[], p_route_tasks uuid[], p_route_queues text[],
                                        p_claim_queues text[], p_capacity integer, p_blocked text[],
                                        p_worker text, p_grace integer)
RETURNS TABLE (step_uuid uuid, task_uuid uuid, released_by uuid, queue text, message jsonb,
               claimed boolean, claim_expires_at timestamptz)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    -- A step under a flow limit, or any while a template is paused, is claimed by
    -- tasker.claim_steps only (where tasker.admit_flow decides).
    paused_any boolean := EXISTS (SELECT 1 FROM tasker.paused_templates);
BEGIN
    RETURN QUERY
    WITH parents AS (
        SELECT e.to_step_uuid AS child, count(*)::int AS n, max(e.from_step_uuid::text)::uuid AS last_parent
          FROM tasker.workflow_step_edges e WHERE e.from_step_uuid = ANY (p_done) GROUP BY 1),
    routes AS (
        SELECT DISTINCT ON (r.t) r.t, r.q FROM unnest(p_route_tasks, p_route_queues) AS r(t, q) ORDER BY r.t),
    candidates AS (
        SELECT c.step_uuid AS s, c.task_uuid AS t, c.handler_class AS h, p.n, p.last_parent,
               c.state = 'pending' AND c.pending_parents = p.n AS ready, r.q,
               r.q = ANY (coalesce(p_claim_queues, '{}')) AND NOT (c.handler_class = ANY (coalesce(p_blocked, '{}')))
                 AND c.flow IS NULL AND NOT paused_any
                 AS claimable
          FROM parents p
          JOIN LATERAL (SELECT * FROM tasker.workflow_steps w WHERE w.step_uuid = p.child) c ON true
          JOIN routes r ON r.t = c.task_uuid),
    ranked AS (
        SELECT cd.*, cd.ready AND cd.claimable
                     AND row_number() OVER (PARTITION BY cd.ready AND cd.claimable ORDER BY cd.t, cd.s)
                         <= greatest(coalesce(p_capacity, 0), 0)
                     AS claim
          FROM candidates cd),
    released AS (
        UPDATE tasker.workflow_steps c
           SET pending_parents = c.pending_parents - rk.n,
               state = CASE WHEN rk.claim THEN 'in_progress' WHEN rk.ready THEN 'enqueued' ELSE c.state END,
               attempts = c.attempts + CASE WHEN rk.claim THEN 1 ELSE 0 END,
               claim_token = CASE WHEN rk.claim THEN gen_random_uuid() ELSE c.claim_token END,
               claimed_by = CASE WHEN rk.claim THEN p_worker ELSE c.claimed_by END,
               claim_expires_at = CASE WHEN rk.claim THEN now() + make_interval(secs => c.timeout_seconds + p_grace)
                                       ELSE c.claim_expires_at END,
               next_retry_at = CASE WHEN rk.ready THEN NULL ELSE c.next_retry_at END,
               updated_at = now()
          FROM ranked rk
         WHERE c.step_uuid = rk.s AND c.step_uuid = ANY (array(SELECT p.child FROM parents p))
        RETURNING c.step_uuid, c.task_uuid, c.handler_class, c.claim_expires_at,
                  rk.ready, rk.claim, rk.q, rk.last_parent),
    history AS (
        INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, metadata)
        SELECT x.s, x.t, x.f, x.o, x.meta
          FROM (SELECT rl.step_uuid AS s, rl.task_uuid AS t, 1 AS n, 'pending' AS f, 'enqueued' AS o,
                       '{}'::jsonb AS meta
                  FROM released rl WHERE rl.ready
                UNION ALL
                SELECT rl.step_uuid, rl.task_uuid, 2, 'enqueued', 'in_progress',
                       jsonb_build_object('attempt', 1, 'worker', p_worker, 'fused', true)
                  FROM released rl WHERE rl.claim) x
         ORDER BY x.t, x.s, x.n)
    SELECT rl.step_uuid, rl.task_uuid, rl.last_parent, rl.q,
           jsonb_build_object('task_uuid', rl.task_uuid, 'step_uuid', rl.step_uuid,
                              'correlation_id', tk.correlation_id, 'priority', tk.priority,
                              'handler', rl.handler_class),
           rl.claim, CASE WHEN rl.claim THEN rl.claim_expires_at END
      FROM released rl
      JOIN tasker.tasks tk ON tk.task_uuid = rl.task_uuid AND tk.task_uuid = ANY (p_route_tasks)
     WHERE rl.ready
     ORDER BY rl.task_uuid, rl.step_uuid;
END $$;

-- A queue message's priority for ordering (the one definition: the queues' index and every
-- read use it). Total over any JSON a producer may send: a missing, non-numeric or huge
-- priority never makes a read fail.
CREATE FUNCTION tasker.message_priority(message jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(message->'priority') = 'number'
                THEN least(greatest((message->>'priority')::numeric, -32768), 32767) ELSE 0 END
$$;

-- What a claimed step's handler receives from the steps it depends on: [name, results] of
-- each ancestor (tasker.workflow_steps.ancestors), in step order. Found by name through the
-- (task_uuid, name) index, so its cost does not grow with the table.
CREATE FUNCTION tasker.dependency_results(p_task uuid, p_ancestors text[]) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF cardinality(p_ancestors) = 0 THEN
        RETURN '[]'::jsonb;
    END IF;
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_array(d.name, coalesce(d.results, 'null'::jsonb))
                                      ORDER BY d.position), '[]'::jsonb)
              FROM tasker.workflow_steps d
             WHERE d.task_uuid = p_task AND d.name = ANY (p_ancestors));
END $$;

-- Read up to p_qty visible messages of p_queue (highest priority first, then FIFO) and claim
-- their steps, in one transaction and one round trip, set-based (a fixed number of statements
-- whatever the batch): enqueued → in_progress (attempts + 1, a new claim token, an expiry of
-- timeout + p_grace), or take over an expired claim (crash recovery); the step rows are locked
-- in uuid order, and each claimed message stays hidden until its claim expires, so a crash
-- redelivers it. Every other message is settled here too: one whose step is claimed elsewhere
-- is hidden until that claim expires, one of a handler in p_blocked_handlers (breaker open)
-- for p_blocked_seconds with attempts untouched (of a handler in p_trial_handlers, a half-open
-- breaker's one trial, all but the first claimable one), a second message of a step claimed
-- in this batch stays hidden for the read's p_read_vt, and one whose step is finished,
-- unknown, or that is not a step message is archived with the reason. A claim of a step
-- under a flow limit, or of any step while a template is paused, is admitted by
-- tasker.admit_flow (flow_control migration): one held back keeps its attempts and its
-- message is hidden until it may start (kind 'postponed', with the reason). p_finishing: steps
-- whose handler returned in the calling process, their outcome not yet applied (their slots
-- do not count against this claim). A claim that expired on
-- the step's last attempt is left to tasker.fail_exhausted_claim (kind 'exhausted').
--
-- Rows: kind 'claimed' (what the handler needs), 'archived' (msg_id, reason), 'exhausted'
-- (msg_id, step, task), 'postponed' (msg_id).
CREATE FUNCTION tasker.claim_steps(p_queue text, p_qty integer, p_worker text, p_grace integer,
                                   p_read_vt integer, p_blocked_handlers text[],
                                   p_trial_handlers text[], p_blocked_seconds integer,
                                   p_finishing uuid[] DEFAULT NULL)
RETURNS TABLE (kind text, msg_id bigint, reason text, step_uuid uuid, task_uuid uuid, token uuid,
               priority smallint, attempts integer, max_attempts integer, timeout_seconds integer,
               step_name text, named_task_id bigint, context jsonb, correlation_id uuid,
               parent_correlation_id uuid, dependency_results jsonb, traceparent text)
LANGUAGE plpgsql
-- As tasker.apply_step_results: planned once per session, by index.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    uuid_format constant text := '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
    blocked text[] := coalesce(p_blocked_handlers, '{}');
    trials text[] := coalesce(p_trial_handlers, '{}');
    -- The messages read, in read order.
    r_ids bigint[];
    r_msgs jsonb[];
    r_steps uuid[];
    r_tasks uuid[];
    -- What each message gets: its action, a reason, and the step state it was claimed from.
    d_action text[];
    d_reason text[];
    d_until timestamptz[];
    -- Claimed steps, in read order, with their message and new claim.
    c_steps uuid[];
    c_ids bigint[];
    c_prev text[];
    c_prio smallint[];
    c_flowed boolean[];
    n_steps uuid[];
    n_until timestamptz[];
    -- Claims held back by a flow limit or a paused template, with until when and why.
    paused_any boolean := EXISTS (SELECT 1 FROM tasker.paused_templates);
    h_steps uuid[];
    h_until timestamptz[];
    h_reason text[];
BEGIN
    -- The read only locks its rows (other readers skip them); each gets its visibility once,
    -- below, when its fate is known: one update per message.
    EXECUTE format(
        'SELECT coalesce(array_agg(msg_id ORDER BY prio DESC, msg_id), ''{}''), '
        '  array_agg(message ORDER BY prio DESC, msg_id), '
        '  array_agg(CASE WHEN message->>''step_uuid'' ~ $2 THEN (message->>''step_uuid'')::uuid END ORDER BY prio DESC, msg_id), '
        '  array_agg(CASE WHEN message->>''task_uuid'' ~ $2 THEN (message->>''task_uuid'')::uuid END ORDER BY prio DESC, msg_id) '
        'FROM (SELECT msg_id, message, tasker.message_priority(message) AS prio FROM pgmq.%1$I WHERE vt <= clock_timestamp() '
        '      ORDER BY tasker.message_priority(message) DESC, msg_id LIMIT $1 FOR UPDATE SKIP LOCKED) next',
        'q_' || p_queue)
      INTO r_ids, r_msgs, r_steps, r_tasks
      USING p_qty, uuid_format;
    IF cardinality(r_ids) = 0 THEN
        RETURN;
    END IF;

    PERFORM 1 FROM tasker.workflow_steps ws
     WHERE ws.step_uuid = ANY (r_steps) ORDER BY ws.step_uuid FOR UPDATE;

    WITH m AS (
        SELECT x.k, x.id, x.msg, x.st, x.tk,
               CASE WHEN jsonb_typeof(x.msg) = 'object' THEN coalesce(x.msg->>'handler', '') ELSE '' END AS h
          FROM unnest(r_ids, r_msgs, r_steps, r_tasks) WITH ORDINALITY AS x(id, msg, st, tk, k)),
    seen AS (
        SELECT m.*, ws.step_uuid IS NOT NULL AS found, ws.state, ws.claim_expires_at AS expires,
               ws.attempts AS att, ws.max_attempts AS most, ws.flow IS NOT NULL AS flowed
          FROM m LEFT JOIN LATERAL (
              SELECT w.step_uuid, w.state, w.claim_expires_at, w.attempts, w.max_attempts, w.flow
                FROM tasker.workflow_steps w WHERE w.step_uuid = m.st AND w.task_uuid = m.tk) ws ON true),
    decided AS (
        SELECT s.*,
               CASE WHEN s.msg IS NULL OR jsonb_typeof(s.msg) <> 'object' THEN 'archive'
                    WHEN s.st IS NULL OR s.tk IS NULL THEN 'archive'
                    WHEN s.h = ANY (blocked) THEN 'postpone'
                    WHEN NOT s.found THEN 'archive'
                    WHEN s.state = 'in_progress' AND s.expires > now() THEN 'hide'
                    WHEN s.state NOT IN ('enqueued', 'in_progress') THEN 'archive'
                    WHEN s.state = 'in_progress' AND s.att >= s.most THEN 'exhausted'
                    ELSE 'claim' END AS action
          FROM seen s),
    -- A second message of a step claimed here stays as the read left it; a half-open breaker
    -- admits one trial.
    once AS (
        SELECT d.*,
               CASE WHEN d.action = 'claim'
                         AND row_number() OVER (PARTITION BY d.action = 'claim', d.st ORDER BY d.k) > 1
                    THEN 'keep' ELSE d.action END AS act1
          FROM decided d),
    trialed AS (
        SELECT o.*,
               CASE WHEN o.act1 = 'claim' AND o.h = ANY (trials)
                         AND row_number() OVER (PARTITION BY o.act1 = 'claim' AND o.h = ANY (trials), o.h
                                                ORDER BY o.k) > 1
                    THEN 'postpone' ELSE o.act1 END AS act
          FROM once o)
    SELECT array_agg(t.act ORDER BY t.k),
           array_agg(CASE WHEN t.act <> 'archive' THEN NULL
                          WHEN t.msg IS NULL OR jsonb_typeof(t.msg) <> 'object'
                               THEN 'not a step message: the message is ' || coalesce(jsonb_typeof(t.msg), 'NULL')
                          WHEN t.st IS NULL OR t.tk IS NULL
                               THEN 'not a step message: task_uuid and step_uuid must be UUIDs'
                          WHEN NOT t.found THEN 'unknown step'
                          ELSE 'step is ' || t.state || '; nothing to run' END ORDER BY t.k),
           array_agg(CASE WHEN t.act = 'hide' THEN t.expires
                          WHEN t.act = 'postpone' THEN clock_timestamp() + make_interval(secs => greatest(p_blocked_seconds, 1))
                          END ORDER BY t.k),
           coalesce(array_agg(t.st ORDER BY t.k) FILTER (WHERE t.act = 'claim'), '{}'),
           array_agg(t.id ORDER BY t.k) FILTER (WHERE t.act = 'claim'),
           array_agg(t.state ORDER BY t.k) FILTER (WHERE t.act = 'claim'),
           array_agg(tasker.message_priority(t.msg)::smallint ORDER BY t.k) FILTER (WHERE t.act = 'claim'),
           array_agg(t.flowed OR paused_any ORDER BY t.k) FILTER (WHERE t.act = 'claim')
      INTO d_action, d_reason, d_until, c_steps, c_ids, c_prev, c_prio, c_flowed
      FROM trialed t;

    -- Flow limits and paused templates: the claims admit_flow holds back are not claimed.
    IF true = ANY (c_flowed) THEN
        SELECT array_agg(a.step_uuid), array_agg(a.hold_until), array_agg(a.reason)
          INTO h_steps, h_until, h_reason
          FROM tasker.admit_flow(p_queue,
                   array(SELECT x.id FROM unnest(c_ids, c_flowed) WITH ORDINALITY AS x(id, f, k) WHERE x.f ORDER BY x.k),
                   array(SELECT x.s FROM unnest(c_steps, c_flowed) WITH ORDINALITY AS x(s, f, k) WHERE x.f ORDER BY x.k),
                   p_grace, p_finishing) a
         WHERE NOT a.admitted;
        IF cardinality(h_steps) > 0 THEN
            SELECT array_agg(CASE WHEN x.a = 'claim' AND h.s IS NOT NULL THEN 'hold' ELSE x.a END ORDER BY x.k),
                   array_agg(CASE WHEN x.a = 'claim' AND h.s IS NOT NULL THEN h.r ELSE x.r END ORDER BY x.k),
                   array_agg(CASE WHEN x.a = 'claim' AND h.s IS NOT NULL
                                  THEN coalesce(h.u, clock_timestamp() + interval '1 second') ELSE x.u END ORDER BY x.k)
              INTO d_action, d_reason, d_until
              FROM unnest(d_action, d_reason, d_until, r_steps) WITH ORDINALITY AS x(a, r, u, st, k)
              LEFT JOIN unnest(h_steps, h_until, h_reason) AS h(s, u, r) ON h.s = x.st;
            SELECT coalesce(array_agg(x.s ORDER BY x.k), '{}'), array_agg(x.id ORDER BY x.k),
                   array_agg(x.prev ORDER BY x.k), array_agg(x.prio ORDER BY x.k)
              INTO c_steps, c_ids, c_prev, c_prio
              FROM unnest(c_steps, c_ids, c_prev, c_prio) WITH ORDINALITY AS x(s, id, prev, prio, k)
             WHERE NOT (x.s = ANY (h_steps));
        END IF;
    END IF;

    IF cardinality(c_steps) > 0 THEN
        WITH claimed AS (
            UPDATE tasker.workflow_steps ws
               SET state = 'in_progress', attempts = ws.attempts + 1, claim_token = gen_random_uuid(),
                   claimed_by = p_worker, updated_at = now(),
                   claim_expires_at = now() + make_interval(secs => ws.timeout_seconds + p_grace)
              FROM unnest(c_steps, c_prev) WITH ORDINALITY AS x(s, prev, k)
             WHERE ws.step_uuid = x.s AND ws.step_uuid = ANY (c_steps)
            RETURNING ws.step_uuid, ws.task_uuid, ws.attempts, ws.claim_expires_at, x.prev, x.k),
        history AS (
            INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, metadata)
            SELECT c.step_uuid, c.task_uuid, c.prev, 'in_progress',
                   jsonb_build_object('attempt', c.attempts, 'worker', p_worker)
                   || CASE WHEN c.prev = 'in_progress' THEN '{"reclaimed": true}'::jsonb ELSE '{}'::jsonb END
              FROM claimed c ORDER BY c.k)
        SELECT array_agg(c.step_uuid ORDER BY c.k), array_agg(c.claim_expires_at ORDER BY c.k)
          INTO n_steps, n_until FROM claimed c;
    END IF;

    -- The rows read are locked by this transaction already: settling them cannot wait.
    -- Each read message counts a read; claimed ones hide until their claim expires, the
    -- claimed-elsewhere until that claim does, the postponed for p_blocked_seconds, and the
    -- rest (exhausted, a second message of a step claimed here) for p_read_vt.
    EXECUTE format('UPDATE pgmq.%I m SET vt = h.until, read_ct = m.read_ct + 1, last_read_at = clock_timestamp() '
                   'FROM unnest($1, $2) AS h(id, until) WHERE m.msg_id = h.id AND m.msg_id = ANY ($1)', 'q_' || p_queue)
      USING array(SELECT x.id FROM unnest(r_ids, d_action) WITH ORDINALITY AS x(id, a, k)
                   WHERE x.a <> 'archive' ORDER BY x.k),
            array(SELECT CASE WHEN x.a = 'claim' THEN n.u WHEN x.a IN ('hide', 'postpone', 'hold') THEN x.u
                              ELSE clock_timestamp() + make_interval(secs => p_read_vt) END
                    FROM unnest(r_ids, d_action, d_until, r_steps) WITH ORDINALITY AS x(id, a, u, st, k)
                    LEFT JOIN unnest(n_steps, n_until) AS n(s, u) ON x.a = 'claim' AND n.s = x.st
                   WHERE x.a <> 'archive' ORDER BY x.k);
    IF 'archive' = ANY (d_action) THEN
        EXECUTE format(
            'WITH moved AS (DELETE FROM pgmq.%1$I m USING unnest($1, $2) AS x(id, reason) '
            '  WHERE m.msg_id = x.id AND m.msg_id = ANY ($1) '
            '  RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.last_read_at, m.vt, m.message, m.headers, x.reason) '
            'INSERT INTO pgmq.%2$I (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers) '
            'SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, '
            '  coalesce(headers, ''{}''::jsonb) || jsonb_build_object(''tasker_archive_reason'', reason) FROM moved',
            'q_' || p_queue, 'a_' || p_queue)
          USING array(SELECT x.id FROM unnest(r_ids, d_action) AS x(id, a) WHERE x.a = 'archive'),
                array(SELECT x.r FROM unnest(d_action, d_reason) AS x(a, r) WHERE x.a = 'archive');
    END IF;

    RETURN QUERY
    SELECT 'claimed'::text, c.id, NULL::text, ws.step_uuid, ws.task_uuid, ws.claim_token, c.prio,
           ws.attempts, ws.max_attempts, ws.timeout_seconds, ws.name, tk.named_task_id, tk.context,
           tk.correlation_id, tk.parent_correlation_id,
           tasker.dependency_results(ws.task_uuid, ws.ancestors), tk.traceparent
      FROM unnest(c_steps, c_ids, c_prio) WITH ORDINALITY AS c(s, id, prio, k)
      JOIN tasker.workflow_steps ws ON ws.step_uuid = c.s AND ws.step_uuid = ANY (c_steps)
      JOIN tasker.tasks tk ON tk.task_uuid = ws.task_uuid AND tk.task_uuid = ANY (r_tasks)
    UNION ALL
    SELECT CASE x.a WHEN 'archive' THEN 'archived' WHEN 'postpone' THEN 'postponed' WHEN 'hold' THEN 'postponed'
                    ELSE 'exhausted' END,
           x.id, CASE WHEN x.a IN ('archive', 'hold') THEN x.r WHEN x.a = 'postpone' THEN 'handler circuit breaker open' END,
           CASE WHEN x.a <> 'archive' THEN x.st END, CASE WHEN x.a <> 'archive' THEN x.tk END, NULL::uuid,
           NULL::smallint, ws.attempts, ws.max_attempts, NULL::int, NULL::text, NULL::bigint, NULL::jsonb,
           NULL::uuid, NULL::uuid, NULL::jsonb, NULL::text
      FROM unnest(r_ids, d_action, d_reason, r_steps, r_tasks) AS x(id, a, r, st, tk)
      LEFT JOIN LATERAL (SELECT w.attempts, w.max_attempts FROM tasker.workflow_steps w
                          WHERE x.a = 'exhausted' AND w.step_uuid = x.st) ws ON true
     WHERE x.a IN ('archive', 'postpone', 'hold', 'exhausted');
END $$;

-- Fail a step whose claim expired on its last attempt (the process running it died or lost
-- its connection): in_progress → error with a recorded reason, its message deleted, the task
-- finalized. Locks the task, then the step, like apply_step_result; re-checks everything.
-- Returns the task's new state when it changed, NULL otherwise (also when nothing was done).
CREATE FUNCTION tasker.fail_exhausted_claim(p_task uuid, p_step uuid, p_queue text, p_namespace text,
                                            p_msg_id bigint, p_lock_timeout_ms integer)
RETURNS TABLE (failed boolean, task_state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    s record;
    failure jsonb;
BEGIN
    PERFORM 1 FROM tasker.tasks tk WHERE tk.task_uuid = p_task FOR UPDATE;
    SELECT ws.state, ws.attempts, ws.max_attempts, ws.claim_expires_at, ws.claimed_by INTO s
      FROM tasker.workflow_steps ws WHERE ws.step_uuid = p_step AND ws.task_uuid = p_task FOR UPDATE;
    IF NOT FOUND OR s.state <> 'in_progress' OR s.claim_expires_at > now() OR s.attempts < s.max_attempts THEN
        RETURN QUERY SELECT false, NULL::text;
        RETURN;
    END IF;
    failure := jsonb_build_object(
        'error_class', 'TaskerCore::Errors::StepTimeoutError',
        'message', format('the claim of attempt %s of %s expired without an outcome (the process running it, %s, '
                          'stopped or lost its connection); no attempts are left', s.attempts, s.max_attempts,
                          coalesce(s.claimed_by, 'unknown')),
        'backtrace', '[]'::jsonb, 'retryable', false, 'attempt', s.attempts,
        'error_code', 'claim_expired');
    UPDATE tasker.workflow_steps
       SET state = 'error', last_error = failure, claim_token = NULL, claim_expires_at = NULL, updated_at = now()
     WHERE step_uuid = p_step;
    PERFORM tasker.record_step_transition(p_step, p_task, 'in_progress', 'error',
        jsonb_build_object('attempt', s.attempts, 'error_class', failure->'error_class',
                           'message', failure->'message'));
    PERFORM tasker.write_queue(p_queue, p_namespace, '{}'::jsonb[], p_msg_id, p_lock_timeout_ms);
    RETURN QUERY SELECT true, (SELECT f.status FROM tasker.finalize_tasks(ARRAY[p_task]) f);
END $$;

-- Apply a batch of outcomes in one transaction, set-based: a fixed number of statements
-- whatever the batch size. Task rows are locked first, then step rows, each in uuid order
-- (the lock order every writer of tasks and steps follows, so concurrent batches cannot
-- deadlock). An outcome applies only with its step's current claim token (a step listed twice
-- applies once). Then, for each queue of the batch that the engine may write (p_queue_usable)
-- and that can be locked within p_lock_timeout_ms: the settled messages are deleted and the
-- released children are sent — those of a queue in p_claim_queues claimed at once for this
-- process, up to p_claim_capacity in all and except handler classes in p_blocked_handlers
-- (their breaker is open), their message hidden until the claim expires so that a crash
-- redelivers it. A join whose parents complete in one batch is released once. A queue that
-- cannot be written does not take the outcomes down: its children stay enqueued without a
-- message for the recovery loop, and its error is returned. Tasks are finalized once per
-- batch; one notification names the tasks that finished, one wake-up per namespace that got
-- visible messages, tagged with p_sender so the sending process ignores its own echo.
--
-- Rows: kind 'outcome' (one per input, in input order: step_uuid, outcome 'applied' or
-- 'discarded', step_state, enqueued_children, task_state, retry_in_ms), kind 'queue' (queue,
-- queue_error for each queue the engine asked to write) and kind 'claimed' (a claimed child,
-- with what its handler needs, as tasker.claim_steps returns it).
CREATE FUNCTION tasker.apply_step_results(
    p_tasks uuid[], p_steps uuid[], p_tokens uuid[], p_queues text[], p_msg_ids bigint[],
    p_namespaces text[], p_correlations uuid[], p_priorities smallint[], p_success boolean[],
    p_results jsonb[], p_metadata jsonb[], p_errors jsonb[], p_retryable boolean[],
    p_retry_ms double precision[], p_queue_usable boolean[],
    p_claim_queues text[], p_claim_capacity integer, p_blocked_handlers text[],
    p_worker text, p_grace integer, p_lock_timeout_ms integer, p_sender text)
RETURNS TABLE (kind text, step_uuid uuid, outcome text, step_state text, enqueued_children integer,
               task_state text, retry_in_ms double precision, queue text, queue_error text,
               task_uuid uuid, token uuid, msg_id bigint, priority smallint, attempts integer,
               max_attempts integer, timeout_seconds integer, step_name text, named_task_id bigint,
               context jsonb, correlation_id uuid, parent_correlation_id uuid,
               dependency_results jsonb, traceparent text)
LANGUAGE plpgsql
-- Planned once per session (re-planning per call costs more than running the statements),
-- and never by scanning a whole table: every row this touches is found through an index, so
-- plans made while the tables are small must not stay sequential scans as they grow.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    blocked text[] := coalesce(p_blocked_handlers, '{}');
    claim_queues text[] := coalesce(p_claim_queues, '{}');
    capacity integer := greatest(coalesce(p_claim_capacity, 0), 0);
    previous_lock_timeout text := current_setting('lock_timeout');
    -- Per input (by ordinal): the state it left its step in (NULL: discarded), the step's
    -- state when discarded, and whether its task was cancelled.
    o_to text[];
    o_seen text[];
    -- Tasks of the batch that were running when it began.
    running uuid[];
    -- Completed steps whose children are released.
    done uuid[];
    -- Queues asked for, and the ones locked for writing (their errors alongside).
    asked text[];
    writable text[] := '{}';
    q_names text[] := '{}';
    q_errors text[] := '{}';
    q text;
    -- Released children.
    r_steps uuid[];
    r_tasks uuid[];
    r_by uuid[];
    r_queues text[];
    r_messages jsonb[];
    r_claimed boolean[];
    r_expiry timestamptz[];
    -- Messages sent to the queues (id and step), to hand claimed children their message.
    sent_ids bigint[];
    sent_steps uuid[];
    m_ids bigint[] := '{}';
    m_steps uuid[] := '{}';
    -- Finalized tasks.
    f_tasks uuid[];
    f_states text[];
    -- Applied steps that held a concurrency slot.
    slotted uuid[];
BEGIN
    PERFORM 1 FROM tasker.tasks tk WHERE tk.task_uuid = ANY (p_tasks) ORDER BY tk.task_uuid FOR UPDATE;
    PERFORM 1 FROM tasker.workflow_steps ws WHERE ws.step_uuid = ANY (p_steps) ORDER BY ws.step_uuid FOR UPDATE;

    -- Decide every outcome, move its step and write its history row.
    WITH input AS (
        SELECT o, p_tasks[o] AS t, p_steps[o] AS s, p_tokens[o] AS tok, p_success[o] AS ok,
               p_retryable[o] AS may_retry, p_retry_ms[o] AS retry_ms, p_errors[o] AS err
          FROM unnest(p_steps) WITH ORDINALITY AS u(u_step, o)),
    checked AS (
        SELECT i.*, ws.state AS seen, ws.attempts AS att, ws.max_attempts AS most, ws.retryable AS step_retryable,
               tk.status AS task_status, ws.flow->'concurrency' IS NOT NULL AS slotted,
               ws.state = 'in_progress' AND ws.claim_token = i.tok AS current
          FROM input i
          LEFT JOIN LATERAL (SELECT * FROM tasker.workflow_steps w WHERE w.step_uuid = i.s AND w.task_uuid = i.t) ws ON true
          LEFT JOIN LATERAL (SELECT * FROM tasker.tasks t WHERE t.task_uuid = i.t) tk ON true),
    decided AS (
        SELECT c.*,
               CASE WHEN c.current IS NOT TRUE
                         OR c.o <> min(c.o) FILTER (WHERE c.current) OVER (PARTITION BY c.s) THEN NULL
                    WHEN c.ok THEN 'complete'
                    WHEN c.may_retry AND c.step_retryable AND c.att < c.most
                         AND c.task_status <> 'cancelled' THEN 'waiting_for_retry'
                    ELSE 'error' END AS to_state
          FROM checked c),
    moved AS (
        UPDATE tasker.workflow_steps ws
           SET state = d.to_state,
               results = CASE WHEN d.ok THEN p_results[d.o] ELSE ws.results END,
               result_metadata = CASE WHEN d.ok THEN p_metadata[d.o] ELSE ws.result_metadata END,
               last_error = CASE WHEN d.ok THEN NULL ELSE d.err END,
               next_retry_at = CASE WHEN d.to_state = 'waiting_for_retry'
                                    THEN now() + make_interval(secs => d.retry_ms / 1000.0) END,
               claim_token = NULL, claim_expires_at = NULL, updated_at = now()
          FROM decided d
         WHERE d.to_state IS NOT NULL AND ws.step_uuid = d.s AND ws.step_uuid = ANY (p_steps)),
    history AS (
        INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, metadata)
        SELECT d.s, d.t, 'in_progress', d.to_state,
               CASE WHEN d.ok THEN jsonb_build_object('attempt', d.att)
                    ELSE jsonb_build_object('attempt', d.att, 'error_class', d.err->'error_class',
                                            'message', d.err->'message')
                         || CASE WHEN d.to_state = 'waiting_for_retry'
                                 THEN jsonb_build_object('retry_in_ms', round(d.retry_ms)::bigint)
                                 ELSE '{}'::jsonb END END
          FROM decided d WHERE d.to_state IS NOT NULL ORDER BY d.o)
    SELECT array_agg(d.to_state ORDER BY d.o), array_agg(d.seen ORDER BY d.o),
           coalesce(array_agg(d.s ORDER BY d.o) FILTER (WHERE d.to_state = 'complete'
                                                         AND d.task_status <> 'cancelled'), '{}'),
           coalesce(array_agg(DISTINCT d.t) FILTER (WHERE d.task_status = 'in_progress'), '{}'),
           coalesce(array_agg(d.s) FILTER (WHERE d.to_state IS NOT NULL AND d.slotted), '{}')
      INTO o_to, o_seen, done, running, slotted
      FROM decided d;

    -- The queues to write, each locked (waiting at most p_lock_timeout_ms) or reported.
    asked := array(SELECT DISTINCT p_queues[o] FROM unnest(p_steps) WITH ORDINALITY AS u(u_step, o)
                    WHERE p_queue_usable[o] ORDER BY 1);
    FOREACH q IN ARRAY asked LOOP
        BEGIN
            PERFORM set_config('lock_timeout', greatest(p_lock_timeout_ms, 1) || 'ms', true);
            EXECUTE format('LOCK TABLE pgmq.%I IN ROW EXCLUSIVE MODE', 'q_' || q);
            PERFORM set_config('lock_timeout', previous_lock_timeout, true);
            writable := writable || q;
            q_names := q_names || q;
            q_errors := q_errors || NULL::text;
        EXCEPTION WHEN OTHERS THEN
            q_names := q_names || q;
            q_errors := q_errors || SQLERRM;
        END;
    END LOOP;

    -- Release the children of completed steps, once each (a join with several parents in this
    -- batch counts them all), and claim the released ones of writable queues this process
    -- serves, as capacity allows — all in one update of the child rows.
    IF cardinality(done) > 0 THEN
        SELECT array_agg(rl.step_uuid), array_agg(rl.task_uuid), array_agg(rl.released_by), array_agg(rl.queue),
               array_agg(rl.message), array_agg(rl.claimed), array_agg(rl.claim_expires_at)
          INTO r_steps, r_tasks, r_by, r_queues, r_messages, r_claimed, r_expiry
          FROM tasker.release_children(done, p_tasks, p_queues,
                   array(SELECT unnest(writable) INTERSECT SELECT unnest(claim_queues)),
                   capacity, blocked, p_worker, p_grace) rl;
    END IF;
    r_steps := coalesce(r_steps, '{}');

    -- Each writable queue once: settled messages out, released children in (claimed ones
    -- hidden until their claim expires, the rest visible now). The queue is locked already.
    FOREACH q IN ARRAY writable LOOP
        EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = ANY ($1)', 'q_' || q)
          USING array(SELECT p_msg_ids[o] FROM unnest(p_steps) WITH ORDINALITY AS u(u_step, o)
                       WHERE p_queues[o] = q AND o_to[o] IS NOT NULL AND p_msg_ids[o] IS NOT NULL);
        IF q = ANY (r_queues) THEN
            SELECT array_agg(s.msg_id), array_agg(s.step_uuid) INTO sent_ids, sent_steps
              FROM tasker.send_step_messages(q,
                       array(SELECT x.m FROM unnest(r_queues, r_messages) WITH ORDINALITY AS x(rq, m, k)
                              WHERE x.rq = q ORDER BY x.k),
                       array(SELECT CASE WHEN x.c THEN x.e END
                               FROM unnest(r_queues, r_claimed, r_expiry) WITH ORDINALITY AS x(rq, c, e, k)
                              WHERE x.rq = q ORDER BY x.k)) s;
            m_ids := m_ids || coalesce(sent_ids, '{}');
            m_steps := m_steps || coalesce(sent_steps, '{}');
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(r_queues, r_claimed) AS x(rq, c) WHERE x.rq = q AND NOT x.c) THEN
            PERFORM pg_notify('tasker_wakeup',
                              (SELECT p_namespaces[o] FROM unnest(p_steps) WITH ORDINALITY AS u(u_step, o)
                                WHERE p_queues[o] = q LIMIT 1) || '|' || coalesce(p_sender, ''));
        END IF;
    END LOOP;

    -- A running task that got a step to retry or a released child stays running: only the
    -- others are counted.
    -- Mid-chain no task is left to count, and finalize_tasks is not called at all.
    f_tasks := array(
        SELECT DISTINCT p_tasks[o] FROM unnest(p_steps) WITH ORDINALITY AS u(u_step, o) WHERE o_to[o] IS NOT NULL
        EXCEPT
        SELECT x.t FROM (SELECT p_tasks[o] AS t FROM unnest(p_steps) WITH ORDINALITY AS u(u_step, o)
                          WHERE o_to[o] = 'waiting_for_retry'
                         UNION ALL SELECT unnest(r_tasks)) x
         WHERE x.t = ANY (running));
    -- Concurrency slots of the applied steps are freed, waking a waiting step per slot.
    IF cardinality(slotted) > 0 THEN
        PERFORM tasker.free_slots(slotted);
    END IF;

    f_states := '{}';
    IF cardinality(f_tasks) > 0 THEN
        SELECT coalesce(array_agg(f.task_uuid ORDER BY f.task_uuid), '{}'),
               coalesce(array_agg(f.status ORDER BY f.task_uuid), '{}')
          INTO f_tasks, f_states
          FROM tasker.finalize_tasks(f_tasks) f;
    END IF;

    RETURN QUERY
    SELECT 'outcome'::text, p_steps[o], CASE WHEN o_to[o] IS NULL THEN 'discarded' ELSE 'applied' END,
           coalesce(o_to[o], o_seen[o]),
           (SELECT count(*)::int FROM unnest(r_by) AS b WHERE b = p_steps[o] AND o_to[o] IS NOT NULL),
           (SELECT f.s FROM unnest(f_tasks, f_states) AS f(t, s) WHERE f.t = p_tasks[o] AND o_to[o] IS NOT NULL),
           CASE WHEN o_to[o] = 'waiting_for_retry' THEN p_retry_ms[o] END, NULL::text, NULL::text,
           NULL::uuid, NULL::uuid, NULL::bigint, NULL::smallint, NULL::int, NULL::int, NULL::int,
           NULL::text, NULL::bigint, NULL::jsonb, NULL::uuid, NULL::uuid, NULL::jsonb, NULL::text
      FROM unnest(p_steps) WITH ORDINALITY AS u(u_step, o) ORDER BY o;
    RETURN QUERY
    SELECT 'queue'::text, NULL::uuid, NULL::text, NULL::text, NULL::int, NULL::text, NULL::float8, x.q, x.e,
           NULL::uuid, NULL::uuid, NULL::bigint, NULL::smallint, NULL::int, NULL::int, NULL::int, NULL::text,
           NULL::bigint, NULL::jsonb, NULL::uuid, NULL::uuid, NULL::jsonb, NULL::text
      FROM unnest(q_names, q_errors) AS x(q, e);
    RETURN QUERY
    SELECT 'claimed'::text, ws.step_uuid, NULL::text, 'in_progress'::text, NULL::int, NULL::text,
           NULL::float8, x.rq, NULL::text, ws.task_uuid, ws.claim_token, m.msg_id, tk.priority,
           ws.attempts, ws.max_attempts, ws.timeout_seconds, ws.name, tk.named_task_id, tk.context,
           tk.correlation_id, tk.parent_correlation_id, tasker.dependency_results(ws.task_uuid, ws.ancestors),
           tk.traceparent
      FROM unnest(r_steps, r_queues, r_claimed) AS x(s, rq, c)
      JOIN tasker.workflow_steps ws ON ws.step_uuid = x.s AND ws.step_uuid = ANY (r_steps)
      JOIN tasker.tasks tk ON tk.task_uuid = ws.task_uuid AND tk.task_uuid = ANY (p_tasks)
      JOIN unnest(m_ids, m_steps) AS m(msg_id, s) ON m.s = x.s
     WHERE x.c;
END $$;

-- Create tasks in one transaction and one round trip: the tasks (an idempotency key already
-- used for the same template returns that task instead), their steps, edges and first
-- transitions, and their root steps' messages. Roots of a queue in p_claim_queues are claimed
-- at once for this process, up to p_claim_capacity in all (their message is sent hidden until
-- the claim expires), except those of handler classes in p_blocked_handlers, those under a
-- flow limit (p_step_flows) and all while a template is paused. Per task i, its
-- steps are the entries of the step arrays whose p_step_tasks is i, its edges those of the
-- edge arrays whose p_edge_tasks is i. A queue that cannot be written (locked past
-- p_lock_timeout_ms, dropped) fails the whole call with SQLSTATE TQ001: nothing is written.
-- One wake-up per namespace that got visible messages, tagged with p_sender.
--
-- Rows: kind 'task' (task_index, task_uuid, correlation_id, parent_correlation_id, status,
-- created) for every input, and kind 'claimed' for each claimed root (as claim_steps returns).
CREATE FUNCTION tasker.create_tasks(
    p_named_task_ids bigint[], p_namespaces text[], p_queues text[], p_task_uuids uuid[],
    p_contexts jsonb[], p_correlations uuid[], p_parent_correlations uuid[], p_idempotency_keys text[],
    p_priorities smallint[], p_traceparents text[], p_run_ats timestamptz[],
    p_step_tasks integer[], p_step_uuids uuid[], p_step_names text[], p_step_positions integer[],
    p_step_handlers text[], p_step_max_attempts integer[], p_step_retryable boolean[],
    p_step_backoff_base_ms integer[], p_step_max_backoff_ms integer[], p_step_timeouts integer[],
    p_step_pending integer[], p_step_ancestors text[], p_step_flows jsonb[],
    p_edge_tasks integer[], p_edge_from uuid[], p_edge_to uuid[],
    p_claim_queues text[], p_claim_capacity integer, p_blocked_handlers text[],
    p_worker text, p_grace integer, p_lock_timeout_ms integer, p_sender text)
RETURNS TABLE (kind text, task_index integer, task_uuid uuid, correlation_id uuid,
               parent_correlation_id uuid, status text, created boolean, msg_id bigint,
               step_uuid uuid, token uuid, priority smallint, attempts integer, max_attempts integer,
               timeout_seconds integer, step_name text, named_task_id bigint, context jsonb,
               dependency_results jsonb, traceparent text)
LANGUAGE plpgsql
-- As tasker.apply_step_results: planned once per session, by index.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    inserted uuid[];
    capacity integer := greatest(coalesce(p_claim_capacity, 0), 0);
    claim_queues text[] := coalesce(p_claim_queues, '{}');
    blocked text[] := coalesce(p_blocked_handlers, '{}');
    previous_lock_timeout text := current_setting('lock_timeout');
    paused_any boolean := EXISTS (SELECT 1 FROM tasker.paused_templates);
    q text;
    ns text;
    -- Root steps of the inserted tasks, in (task, step) order, with their message and whether
    -- they are claimed here (and the claim's expiry).
    r_steps uuid[];
    r_tasks integer[];
    r_queues text[];
    r_messages jsonb[];
    r_claimed boolean[];
    r_expiry timestamptz[];
    sent_ids bigint[];
    sent_steps uuid[];
    m_ids bigint[] := '{}';
    m_steps uuid[] := '{}';
    -- Roots of scheduled tasks (a run_at still ahead): they wait as waiting_for_retry with
    -- next_retry_at = run_at, unsent, and the retry loop releases them when it comes.
    s_steps uuid[];
    s_tasks integer[];
BEGIN
    WITH ins AS (
        INSERT INTO tasker.tasks AS tk (task_uuid, named_task_id, namespace, status, context, correlation_id,
                                       parent_correlation_id, idempotency_key, priority, traceparent)
        SELECT * FROM unnest(p_task_uuids, p_named_task_ids, p_namespaces,
                             array_fill('in_progress'::text, ARRAY[cardinality(p_task_uuids)]), p_contexts,
                             p_correlations, p_parent_correlations, p_idempotency_keys, p_priorities,
                             p_traceparents)
        ON CONFLICT (named_task_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING tk.task_uuid)
    SELECT coalesce(array_agg(ins.task_uuid), '{}') INTO inserted FROM ins;

    IF cardinality(inserted) > 0 THEN
        -- Which roots this process claims at once: of a queue it serves, a handler whose breaker
        -- is closed, as many as its free slots, in (task, step) order.
        WITH roots AS (
            SELECT x.st, x.su, x.sh, x.stt, p_queues[x.st] AS q,
                   p_queues[x.st] = ANY (claim_queues) AND NOT (x.sh = ANY (blocked))
                     AND x.sf IS NULL AND NOT paused_any AS claimable
              FROM unnest(p_step_tasks, p_step_uuids, p_step_handlers, p_step_pending, p_step_timeouts, p_step_flows)
                   AS x(st, su, sh, spp, stt, sf)
             WHERE x.spp = 0 AND p_task_uuids[x.st] = ANY (inserted)
               AND NOT coalesce(p_run_ats[x.st] > now(), false)),
        ranked AS (
            SELECT r.*, r.claimable AND row_number() OVER (PARTITION BY r.claimable ORDER BY r.st, r.su) <= capacity AS claim
              FROM roots r)
        SELECT array_agg(r.su ORDER BY r.st, r.su), array_agg(r.st ORDER BY r.st, r.su),
               array_agg(r.q ORDER BY r.st, r.su),
               array_agg(jsonb_build_object('task_uuid', p_task_uuids[r.st], 'step_uuid', r.su,
                                            'correlation_id', p_correlations[r.st], 'priority', p_priorities[r.st],
                                            'handler', r.sh) ORDER BY r.st, r.su),
               array_agg(r.claim ORDER BY r.st, r.su),
               array_agg(CASE WHEN r.claim THEN now() + make_interval(secs => r.stt + p_grace) END ORDER BY r.st, r.su)
          INTO r_steps, r_tasks, r_queues, r_messages, r_claimed, r_expiry
          FROM ranked r;
        SELECT array_agg(x.su ORDER BY x.st, x.su), array_agg(x.st ORDER BY x.st, x.su)
          INTO s_steps, s_tasks
          FROM unnest(p_step_tasks, p_step_uuids, p_step_pending) AS x(st, su, spp)
         WHERE x.spp = 0 AND p_task_uuids[x.st] = ANY (inserted) AND p_run_ats[x.st] > now();

        -- Steps are inserted in their first state: pending, enqueued, or claimed here.
        INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, position, handler_class, state,
                                           attempts, max_attempts, retryable, backoff_base_ms, max_backoff_ms,
                                           timeout_seconds, pending_parents, ancestors, flow, claim_token,
                                           claim_expires_at, claimed_by, next_retry_at)
        SELECT x.su, p_task_uuids[x.st], x.sn, x.sp, x.sh,
               CASE WHEN c.claimed THEN 'in_progress'
                    WHEN x.spp = 0 AND p_run_ats[x.st] > now() THEN 'waiting_for_retry'
                    WHEN x.spp = 0 THEN 'enqueued' ELSE 'pending' END,
               CASE WHEN c.claimed THEN 1 ELSE 0 END, x.sma, x.sr, x.sb, x.smb, x.stt, x.spp,
               string_to_array(x.sa, ','), x.sf,
               CASE WHEN c.claimed THEN gen_random_uuid() END, c.expiry,
               CASE WHEN c.claimed THEN p_worker END,
               CASE WHEN x.spp = 0 AND p_run_ats[x.st] > now() THEN p_run_ats[x.st] END
          FROM unnest(p_step_tasks, p_step_uuids, p_step_names, p_step_positions, p_step_handlers,
                      p_step_max_attempts, p_step_retryable, p_step_backoff_base_ms, p_step_max_backoff_ms,
                      p_step_timeouts, p_step_pending, p_step_ancestors, p_step_flows)
               AS x(st, su, sn, sp, sh, sma, sr, sb, smb, stt, spp, sa, sf)
          LEFT JOIN unnest(r_steps, r_claimed, r_expiry) AS c(s, claimed, expiry) ON c.s = x.su
         WHERE p_task_uuids[x.st] = ANY (inserted);
        INSERT INTO tasker.workflow_step_edges (from_step_uuid, to_step_uuid)
        SELECT ef, et FROM unnest(p_edge_tasks, p_edge_from, p_edge_to) AS x(et_task, ef, et)
         WHERE p_task_uuids[et_task] = ANY (inserted);
        -- History: every step starts pending; roots move on to enqueued at once, and those
        -- claimed here on to in_progress (fused).
        INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, metadata)
        SELECT h.su, h.t, h.f, h.o, h.meta
          FROM (SELECT x.su, p_task_uuids[x.st] AS t, x.st, 1 AS n, NULL::text AS f, 'pending' AS o, '{}'::jsonb AS meta
                  FROM unnest(p_step_tasks, p_step_uuids) AS x(st, su)
                 WHERE p_task_uuids[x.st] = ANY (inserted)
                UNION ALL
                SELECT r.s, p_task_uuids[r.st], r.st, 2, 'pending', 'enqueued', '{}'::jsonb
                  FROM unnest(r_steps, r_tasks) AS r(s, st)
                UNION ALL
                SELECT r.s, p_task_uuids[r.st], r.st, 2, 'pending', 'waiting_for_retry',
                       jsonb_build_object('scheduled_for', p_run_ats[r.st])
                  FROM unnest(s_steps, s_tasks) AS r(s, st)
                UNION ALL
                SELECT r.s, p_task_uuids[r.st], r.st, 3, 'enqueued', 'in_progress',
                       jsonb_build_object('attempt', 1, 'worker', p_worker, 'fused', true)
                  FROM unnest(r_steps, r_tasks, r_claimed) AS r(s, st, c) WHERE r.c) h
         ORDER BY h.st, h.su, h.n;
        INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, metadata)
        SELECT t.u, t.f, t.o, t.meta
          FROM (SELECT u, k, 1 AS n, NULL::text AS f, 'pending' AS o, '{}'::jsonb AS meta
                  FROM unnest(inserted) WITH ORDINALITY AS i(u, k)
                UNION ALL
                SELECT u, k, 2, 'pending', 'in_progress',
                       jsonb_build_object('enqueued_steps', (SELECT count(*) FROM unnest(p_step_tasks, p_step_pending) AS y(st, spp)
                                                              WHERE spp = 0 AND p_task_uuids[st] = u
                                                                AND NOT coalesce(p_run_ats[st] > now(), false)))
                  FROM unnest(inserted) WITH ORDINALITY AS i(u, k)) t
         ORDER BY t.k, t.n;

        -- Each queue once: its roots' messages (claimed ones hidden until the claim expires).
        -- A failure fails the whole call.
        FOR q, ns IN SELECT DISTINCT x.rq, p_namespaces[x.st] FROM unnest(r_queues, r_tasks) AS x(rq, st) ORDER BY 1 LOOP
            BEGIN
                PERFORM set_config('lock_timeout', greatest(p_lock_timeout_ms, 1) || 'ms', true);
                SELECT array_agg(s.msg_id), array_agg(s.step_uuid) INTO sent_ids, sent_steps
                  FROM tasker.send_step_messages(q,
                           array(SELECT x.m FROM unnest(r_queues, r_messages) WITH ORDINALITY AS x(rq, m, k)
                                  WHERE x.rq = q ORDER BY x.k),
                           array(SELECT x.e FROM unnest(r_queues, r_expiry) WITH ORDINALITY AS x(rq, e, k)
                                  WHERE x.rq = q ORDER BY x.k)) s;
                PERFORM set_config('lock_timeout', previous_lock_timeout, true);
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'queue % could not be written: %', q, SQLERRM USING ERRCODE = 'TQ001';
            END;
            m_ids := m_ids || sent_ids;
            m_steps := m_steps || sent_steps;
            IF EXISTS (SELECT 1 FROM unnest(r_queues, r_claimed) AS x(rq, c) WHERE x.rq = q AND NOT x.c) THEN
                PERFORM pg_notify('tasker_wakeup', ns || '|' || coalesce(p_sender, ''));
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY
    SELECT 'task'::text, o::int, tk.task_uuid, tk.correlation_id, tk.parent_correlation_id, tk.status,
           p_task_uuids[o] = ANY (inserted), NULL::bigint, NULL::uuid, NULL::uuid, NULL::smallint, NULL::int,
           NULL::int, NULL::int, NULL::text, NULL::bigint, NULL::jsonb, NULL::jsonb, NULL::text
      FROM unnest(p_task_uuids) WITH ORDINALITY AS u(u_task, o)
      CROSS JOIN LATERAL (
          SELECT t.task_uuid, t.correlation_id, t.parent_correlation_id, t.status FROM tasker.tasks t
           WHERE p_task_uuids[o] = ANY (inserted) AND t.task_uuid = p_task_uuids[o]
          UNION ALL
          SELECT t.task_uuid, t.correlation_id, t.parent_correlation_id, t.status FROM tasker.tasks t
           WHERE NOT (p_task_uuids[o] = ANY (inserted)) AND t.named_task_id = p_named_task_ids[o]
             AND t.idempotency_key = p_idempotency_keys[o]
          LIMIT 1) tk
    UNION ALL
    SELECT 'claimed'::text, cl.st, p_task_uuids[cl.st], p_correlations[cl.st], p_parent_correlations[cl.st],
           'in_progress'::text, true, mm.id, cl.s, ws.claim_token, p_priorities[cl.st], 1, ws.max_attempts,
           ws.timeout_seconds, ws.name, p_named_task_ids[cl.st], p_contexts[cl.st], '[]'::jsonb,
           p_traceparents[cl.st]
      FROM unnest(r_steps, r_tasks, r_claimed) AS cl(s, st, c)
      JOIN unnest(m_ids, m_steps) AS mm(id, s) ON mm.s = cl.s
      JOIN tasker.workflow_steps ws ON ws.step_uuid = cl.s AND ws.step_uuid = ANY (r_steps)
     WHERE cl.c;
END $$;

-- The elements of a JSON array as text, in order (JSON null: NULL): tasker.create_tasks_json
-- casts them to each argument's type.
CREATE FUNCTION tasker.json_text_array(p jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(x.v ORDER BY x.k), '{}') FROM jsonb_array_elements_text(p) WITH ORDINALITY AS x(v, k)
$$;

-- The elements of a JSON array as jsonb, in order (JSON null: NULL).
CREATE FUNCTION tasker.json_jsonb_array(p jsonb) RETURNS jsonb[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(nullif(x.v, 'null'::jsonb) ORDER BY x.k), '{}') FROM jsonb_array_elements(p) WITH ORDINALITY AS x(v, k)
$$;

-- tasker.create_tasks with its arguments in one JSON document (the engine builds it: the keys
-- are create_tasks' parameters without their p_ prefix), on a connection of the caller's —
-- an application's own transaction (TaskerCore::Client.create_task(..., transaction:
-- :active_record)), so the tasks commit or roll back with the application's data. Nothing is
-- claimed; the wake-ups are untagged, so every process, the caller's included, hears them at
-- commit.
CREATE FUNCTION tasker.create_tasks_json(p jsonb)
RETURNS TABLE (kind text, task_index integer, task_uuid uuid, correlation_id uuid,
               parent_correlation_id uuid, status text, created boolean, msg_id bigint,
               step_uuid uuid, token uuid, priority smallint, attempts integer, max_attempts integer,
               timeout_seconds integer, step_name text, named_task_id bigint, context jsonb,
               dependency_results jsonb, traceparent text)
LANGUAGE sql AS $$
    SELECT * FROM tasker.create_tasks(
        tasker.json_text_array(p->'named_task_ids')::bigint[], tasker.json_text_array(p->'namespaces'),
        tasker.json_text_array(p->'queues'), tasker.json_text_array(p->'task_uuids')::uuid[],
        tasker.json_jsonb_array(p->'contexts'), tasker.json_text_array(p->'correlations')::uuid[],
        tasker.json_text_array(p->'parent_correlations')::uuid[], tasker.json_text_array(p->'idempotency_keys'),
        tasker.json_text_array(p->'priorities')::smallint[], tasker.json_text_array(p->'traceparents'),
        tasker.json_text_array(p->'run_ats')::timestamptz[],
        tasker.json_text_array(p->'step_tasks')::integer[], tasker.json_text_array(p->'step_uuids')::uuid[],
        tasker.json_text_array(p->'step_names'), tasker.json_text_array(p->'step_positions')::integer[],
        tasker.json_text_array(p->'step_handlers'), tasker.json_text_array(p->'step_max_attempts')::integer[],
        tasker.json_text_array(p->'step_retryable')::boolean[],
        tasker.json_text_array(p->'step_backoff_base_ms')::integer[],
        tasker.json_text_array(p->'step_max_backoff_ms')::integer[],
        tasker.json_text_array(p->'step_timeouts')::integer[], tasker.json_text_array(p->'step_pending')::integer[],
        tasker.json_text_array(p->'step_ancestors'), tasker.json_jsonb_array(p->'step_flows'),
        tasker.json_text_array(p->'edge_tasks')::integer[], tasker.json_text_array(p->'edge_from')::uuid[],
        tasker.json_text_array(p->'edge_to')::uuid[],
        '{}'::text[], 0, '{}'::text[], NULL, 0, coalesce((p->>'lock_timeout_ms')::integer, 2000), NULL)
$$;
