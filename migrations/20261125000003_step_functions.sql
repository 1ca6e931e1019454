-- The hot path as functions: claiming a step and applying its result are one round trip each.
-- The semantics are those of ARCHITECTURE §5/§6 (and docs/operations.md); Rust computes the
-- backoff (one authority) and validates queue names before they reach these functions.

CREATE FUNCTION tasker.record_step_transition(p_step uuid, p_task uuid, p_from text, p_to text, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    previous integer;
BEGIN
    UPDATE tasker.workflow_step_transitions SET most_recent = false
     WHERE step_uuid = p_step AND most_recent
    RETURNING sort_key INTO previous;
    INSERT INTO tasker.workflow_step_transitions
        (step_uuid, task_uuid, from_state, to_state, metadata, sort_key, most_recent)
    VALUES (p_step, p_task, p_from, p_to, coalesce(p_meta, '{}'), coalesce(previous, 0) + 1, true);
END $$;

CREATE FUNCTION tasker.record_task_transition(p_task uuid, p_from text, p_to text, p_meta jsonb)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    previous integer;
BEGIN
    UPDATE tasker.task_transitions SET most_recent = false
     WHERE task_uuid = p_task AND most_recent
    RETURNING sort_key INTO previous;
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, metadata, sort_key, most_recent)
    VALUES (p_task, p_from, p_to, coalesce(p_meta, '{}'), coalesce(previous, 0) + 1, true);
    UPDATE tasker.tasks
       SET status = p_to, updated_at = now(),
           completed_at = CASE WHEN p_to IN ('complete', 'error', 'cancelled') THEN now() END
     WHERE task_uuid = p_task;
END $$;

-- Decrement the unfinished-parent count of each child of p_step; enqueue (and send) those
-- that reach zero. Returns how many were enqueued. The caller holds the task row lock.
CREATE FUNCTION tasker.release_children(p_task uuid, p_step uuid, p_queue text, p_namespace text,
                                        p_correlation uuid, p_priority smallint)
RETURNS integer LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ready uuid[];
    child uuid;
BEGIN
    WITH dec AS (
        UPDATE tasker.workflow_steps c SET pending_parents = c.pending_parents - 1, updated_at = now()
          FROM tasker.workflow_step_edges e
         WHERE e.from_step_uuid = p_step AND c.step_uuid = e.to_step_uuid
        RETURNING c.step_uuid, c.pending_parents, c.state)
    SELECT array_agg(step_uuid ORDER BY step_uuid) INTO ready
      FROM dec WHERE pending_parents = 0 AND state = 'pending';
    IF ready IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE tasker.workflow_steps SET state = 'enqueued', next_retry_at = NULL, updated_at = now()
     WHERE step_uuid = ANY (ready);
    FOREACH child IN ARRAY ready LOOP
        PERFORM tasker.record_step_transition(child, p_task, 'pending', 'enqueued', '{}');
    END LOOP;
    PERFORM pgmq.send_batch(p_queue, array(
        SELECT jsonb_build_object('task_uuid', p_task, 'step_uuid', u, 'correlation_id', p_correlation,
                                  'priority', p_priority)
          FROM unnest(ready) AS u), 0);
    PERFORM pg_notify('tasker_wakeup', p_namespace);
    RETURN cardinality(ready);
END $$;

-- Decide the task's state from its steps (caller holds the task row lock). Returns the new
-- state when it changed, else NULL; notifies waiters when it became terminal.
CREATE FUNCTION tasker.finalize_task(p_task uuid, p_current text)
RETURNS text LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    unfinished bigint;
    active bigint;
    failed bigint;
    next_state text;
BEGIN
    IF p_current IN ('complete', 'cancelled') THEN
        RETURN NULL;
    END IF;
    SELECT count(*) FILTER (WHERE state NOT IN ('complete', 'resolved_manually')),
           count(*) FILTER (WHERE state IN ('enqueued', 'in_progress', 'waiting_for_retry')),
           count(*) FILTER (WHERE state = 'error')
      INTO unfinished, active, failed
      FROM tasker.workflow_steps WHERE task_uuid = p_task;
    next_state := CASE WHEN unfinished = 0 THEN 'complete'
                       WHEN active = 0 AND failed > 0 THEN 'error'
                       ELSE 'in_progress' END;
    IF next_state = p_current OR (p_current = 'pending' AND next_state <> 'in_progress') THEN
        RETURN NULL;
    END IF;
    PERFORM tasker.record_task_transition(p_task, p_current, next_state,
        jsonb_build_object('unfinished_steps', unfinished, 'failed_steps', failed));
    IF next_state IN ('complete', 'error') THEN
        PERFORM pg_notify('tasker_task_finalized', p_task::text);
    END IF;
    RETURN next_state;
END $$;

-- Claim a delivered step: enqueued → in_progress (or take over an expired claim), hide its
-- message until the claim expires, and return what the handler needs.
-- outcome: 'claimed' | 'missing' | 'busy' (busy_seconds set) | 'stale' (state set).
CREATE FUNCTION tasker.claim_step(p_step uuid, p_task uuid, p_token uuid, p_worker text,
                                  p_grace integer, p_queue text, p_msg_id bigint)
RETURNS TABLE (outcome text, state text, busy_seconds double precision, attempts integer,
               max_attempts integer, timeout_seconds integer, step_name text, named_task_id bigint,
               context jsonb, correlation_id uuid, parent_correlation_id uuid,
               dependency_results jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    s record;
    c record;
    t record;
BEGIN
    SELECT ws.state, ws.task_uuid, ws.claim_expires_at INTO s
      FROM tasker.workflow_steps ws WHERE ws.step_uuid = p_step FOR UPDATE;
    IF NOT FOUND OR s.task_uuid <> p_task THEN
        RETURN QUERY SELECT 'missing'::text, NULL::text, NULL::float8, NULL::int, NULL::int, NULL::int,
                            NULL::text, NULL::bigint, NULL::jsonb, NULL::uuid, NULL::uuid, NULL::jsonb;
        RETURN;
    END IF;
    IF s.state = 'in_progress' AND s.claim_expires_at > now() THEN
        RETURN QUERY SELECT 'busy'::text, s.state, extract(epoch FROM s.claim_expires_at - now())::float8,
                            NULL::int, NULL::int, NULL::int, NULL::text, NULL::bigint, NULL::jsonb,
                            NULL::uuid, NULL::uuid, NULL::jsonb;
        RETURN;
    END IF;
    IF s.state NOT IN ('enqueued', 'in_progress') THEN
        RETURN QUERY SELECT 'stale'::text, s.state, NULL::float8, NULL::int, NULL::int, NULL::int,
                            NULL::text, NULL::bigint, NULL::jsonb, NULL::uuid, NULL::uuid, NULL::jsonb;
        RETURN;
    END IF;
    UPDATE tasker.workflow_steps ws
       SET state = 'in_progress', attempts = ws.attempts + 1, claim_token = p_token,
           claimed_by = p_worker, updated_at = now(),
           claim_expires_at = now() + make_interval(secs => ws.timeout_seconds + p_grace)
     WHERE ws.step_uuid = p_step
    RETURNING ws.attempts, ws.max_attempts, ws.timeout_seconds, ws.name, ws.claim_expires_at INTO c;
    EXECUTE format('UPDATE pgmq.%I SET vt = $1 WHERE msg_id = $2', 'q_' || p_queue)
      USING c.claim_expires_at, p_msg_id;
    PERFORM tasker.record_step_transition(p_step, p_task, s.state, 'in_progress',
        jsonb_build_object('attempt', c.attempts, 'worker', p_worker)
        || CASE WHEN s.state = 'in_progress' THEN '{"reclaimed": true}'::jsonb ELSE '{}'::jsonb END);
    SELECT tk.named_task_id, tk.context, tk.correlation_id, tk.parent_correlation_id INTO t
      FROM tasker.tasks tk WHERE tk.task_uuid = p_task;
    RETURN QUERY
    WITH RECURSIVE ancestors(step_uuid) AS (
        SELECT e.from_step_uuid FROM tasker.workflow_step_edges e WHERE e.to_step_uuid = p_step
        UNION
        SELECT e.from_step_uuid FROM tasker.workflow_step_edges e
          JOIN ancestors a ON e.to_step_uuid = a.step_uuid)
    SELECT 'claimed'::text, 'in_progress'::text, NULL::float8, c.attempts, c.max_attempts,
           c.timeout_seconds, c.name, t.named_task_id, t.context, t.correlation_id,
           t.parent_correlation_id,
           coalesce((SELECT jsonb_agg(jsonb_build_array(ws.name, coalesce(ws.results, 'null'::jsonb)))
                       FROM tasker.workflow_steps ws JOIN ancestors USING (step_uuid)), '[]'::jsonb);
END $$;

-- Apply an attempt's outcome with its claim token: record it, move the step, settle the
-- message, release children, finalize the task. p_retry_ms is the backoff Rust computed for a
-- retryable failure; whether the step runs again is decided here from its attempts.
-- outcome: 'applied' | 'discarded'.
CREATE FUNCTION tasker.apply_step_result(p_task uuid, p_step uuid, p_token uuid, p_queue text,
                                         p_msg_id bigint, p_namespace text, p_correlation uuid,
                                         p_priority smallint, p_success boolean, p_result jsonb,
                                         p_metadata jsonb, p_error jsonb, p_retryable boolean,
                                         p_retry_ms double precision)
RETURNS TABLE (outcome text, step_state text, enqueued_children integer, task_state text,
               retry_in_ms double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    task_status text;
    s record;
    children integer := 0;
    to_state text;
    new_task_state text;
    runs_again boolean;
BEGIN
    SELECT tk.status INTO task_status FROM tasker.tasks tk WHERE tk.task_uuid = p_task FOR UPDATE;
    SELECT ws.state, ws.claim_token, ws.attempts, ws.max_attempts, ws.retryable INTO s
      FROM tasker.workflow_steps ws WHERE ws.step_uuid = p_step FOR UPDATE;
    IF NOT FOUND OR s.state <> 'in_progress' OR s.claim_token IS DISTINCT FROM p_token THEN
        RETURN QUERY SELECT 'discarded'::text, s.state, 0, NULL::text, NULL::float8;
        RETURN;
    END IF;
    IF p_success THEN
        to_state := 'complete';
        UPDATE tasker.workflow_steps
           SET state = 'complete', results = p_result, result_metadata = p_metadata, last_error = NULL,
               claim_token = NULL, claim_expires_at = NULL, updated_at = now()
         WHERE step_uuid = p_step;
        PERFORM tasker.record_step_transition(p_step, p_task, 'in_progress', 'complete',
                                              jsonb_build_object('attempt', s.attempts));
        IF task_status <> 'cancelled' THEN
            children := tasker.release_children(p_task, p_step, p_queue, p_namespace, p_correlation, p_priority);
        END IF;
    ELSE
        runs_again := p_retryable AND s.retryable AND s.attempts < s.max_attempts
                      AND task_status <> 'cancelled';
        IF runs_again THEN
            to_state := 'waiting_for_retry';
            UPDATE tasker.workflow_steps
               SET state = 'waiting_for_retry', last_error = p_error,
                   next_retry_at = now() + make_interval(secs => p_retry_ms / 1000.0),
                   claim_token = NULL, claim_expires_at = NULL, updated_at = now()
             WHERE step_uuid = p_step;
        ELSE
            to_state := 'error';
            UPDATE tasker.workflow_steps
               SET state = 'error', last_error = p_error, claim_token = NULL, claim_expires_at = NULL,
                   updated_at = now()
             WHERE step_uuid = p_step;
        END IF;
        PERFORM tasker.record_step_transition(p_step, p_task, 'in_progress', to_state,
            jsonb_build_object('attempt', s.attempts, 'error_class', p_error->'error_class',
                               'message', p_error->'message')
            || CASE WHEN runs_again THEN jsonb_build_object('retry_in_ms', round(p_retry_ms)::bigint)
                    ELSE '{}'::jsonb END);
    END IF;
    EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', 'q_' || p_queue) USING p_msg_id;
    new_task_state := tasker.finalize_task(p_task, task_status);
    RETURN QUERY SELECT 'applied'::text, to_state, children, new_task_state,
                        CASE WHEN runs_again THEN p_retry_ms END;
END $$;
