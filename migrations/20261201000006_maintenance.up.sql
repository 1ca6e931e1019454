-- Retention and upkeep (docs/operations.md, "Retention"): finished tasks and archived queue
-- messages are deleted in bounded batches once they are older than the configured windows,
-- by one process at a time (a lease row), and the hot tables vacuum at their own pace.

-- Who runs a periodic job now (`maintenance`): a row with a holder and an expiry, taken by an
-- upsert that succeeds only when the row is free, expired or already the taker's. Unlike a
-- session advisory lock it survives no connection and needs none (PgBouncer in transaction
-- mode), and a holder that died frees it by expiring.
CREATE TABLE tasker.leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Finished tasks by status and finishing time: what retention deletes, found without reading
-- the unfinished ones. completed_at is set once when a task finishes (and cleared if it
-- re-opens), and status is indexed already, so the index costs no HOT update.
CREATE INDEX tasks_finished_idx ON tasker.tasks (status, completed_at)
    WHERE completed_at IS NOT NULL;

-- Take the lease `p_name` for `p_seconds` (or extend it, if `p_holder` has it): true when
-- `p_holder` holds it now.
CREATE FUNCTION tasker.take_lease(p_name text, p_holder text, p_seconds double precision)
RETURNS boolean
LANGUAGE sql AS $$
    WITH taken AS (
        INSERT INTO tasker.leases AS l (name, holder, expires_at)
        VALUES (p_name, p_holder, now() + make_interval(secs => p_seconds))
        ON CONFLICT (name) DO UPDATE
        SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
        WHERE l.expires_at < now() OR l.holder = EXCLUDED.holder
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM taken)
$$;

-- Delete up to `p_limit` finished tasks of each kind, with their steps, edges and histories:
-- complete and cancelled ones finished before `p_completed_before`, errored ones before
-- `p_errored_before` (NULL: keep that kind). A task locked by another transaction (a manual
-- retry, a concurrent purge) is skipped, so two purges never delete a row twice and never
-- wait on each other; the lock timeout bounds any other wait.
CREATE FUNCTION tasker.purge_tasks(p_completed_before timestamptz, p_errored_before timestamptz,
                                   p_limit integer)
RETURNS TABLE (tasks bigint, steps bigint, transitions bigint)
LANGUAGE plpgsql
SET lock_timeout = '2s'
AS $$
DECLARE
    v_done   uuid[];
    v_failed uuid[];
    v_all    uuid[];
    v_n      bigint;
BEGIN
    tasks := 0; steps := 0; transitions := 0;
    IF p_completed_before IS NOT NULL THEN
        SELECT coalesce(array_agg(t.task_uuid), '{}') INTO v_done FROM (
            SELECT task_uuid FROM tasker.tasks
            WHERE status IN ('complete', 'cancelled') AND completed_at < p_completed_before
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED) t;
    END IF;
    IF p_errored_before IS NOT NULL THEN
        SELECT coalesce(array_agg(t.task_uuid), '{}') INTO v_failed FROM (
            SELECT task_uuid FROM tasker.tasks
            WHERE status = 'error' AND completed_at < p_errored_before
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED) t;
    END IF;
    v_all := coalesce(v_done, '{}') || coalesce(v_failed, '{}');
    IF cardinality(v_all) = 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;
    DELETE FROM tasker.workflow_step_transitions WHERE task_uuid = ANY (v_all);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    transitions := v_n;
    DELETE FROM tasker.task_transitions WHERE task_uuid = ANY (v_all);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    transitions := transitions + v_n;
    -- Edges go with their steps (ON DELETE CASCADE).
    DELETE FROM tasker.workflow_steps WHERE task_uuid = ANY (v_all);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    steps := v_n;
    DELETE FROM tasker.tasks WHERE task_uuid = ANY (v_all);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    tasks := v_n;
    RETURN NEXT;
END
$$;

-- Delete up to `p_limit` archived messages archived before `p_before` from each of tasker's
-- queues (the pgmq queues named tasker_*; other applications' queues are left alone), and the
-- cron fires of the same age. Returns one row per queue that had any.
CREATE FUNCTION tasker.purge_archive(p_before timestamptz, p_limit integer)
RETURNS TABLE (queue text, deleted bigint)
LANGUAGE plpgsql
SET lock_timeout = '2s'
AS $$
DECLARE
    v_queue text;
    v_n     bigint;
BEGIN
    FOR v_queue IN
        SELECT m.queue_name FROM pgmq.meta m WHERE m.queue_name LIKE 'tasker\_%' ORDER BY 1
    LOOP
        EXECUTE format(
            'WITH gone AS (DELETE FROM pgmq.%1$I WHERE msg_id IN ('
            '    SELECT msg_id FROM pgmq.%1$I WHERE archived_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) '
            '  RETURNING 1) '
            'SELECT count(*) FROM gone', 'a_' || v_queue)
        INTO v_n USING p_before, p_limit;
        IF v_n > 0 THEN
            queue := v_queue; deleted := v_n;
            RETURN NEXT;
        END IF;
    END LOOP;
    DELETE FROM tasker.schedule_fires WHERE (schedule, tick) IN (
        SELECT f.schedule, f.tick FROM tasker.schedule_fires f WHERE f.fired_at < p_before
        LIMIT p_limit FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        queue := 'schedule_fires'; deleted := v_n;
        RETURN NEXT;
    END IF;
END
$$;

-- Autovacuum at the pace of each table's churn (PostgreSQL's defaults wait for a fifth of a
-- table to be dead, which on a table of millions of rows is hundreds of thousands of dead rows
-- and the bloat that comes with them):
-- * steps and tasks are updated several times each in their first seconds: vacuum after 2 %
--   (and at least 1,000 rows) changed, so their pages are reused for HOT updates instead of
--   the table growing; analyze as often, so plans follow the backlog.
-- * histories are append-only until retention deletes old rows in batches: vacuum after
--   inserts of 5 % (so the visibility map stays current for index-only reads) and after 5 %
--   deleted.
-- * queue tables hold few live rows but every message is inserted and deleted once: vacuum
--   after a fixed 5,000 dead rows whatever the table size, without cost-based pauses (the
--   table is small); set here for existing queues, and by the engine on each queue it creates.
ALTER TABLE tasker.workflow_steps SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE tasker.tasks SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE tasker.workflow_step_transitions SET (autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05);
ALTER TABLE tasker.task_transitions SET (autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_insert_scale_factor = 0.05);

CREATE FUNCTION tasker.tune_queue_table(p_queue text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_queue !~ '^[a-z][a-z0-9_]{0,47}$' THEN
        RAISE EXCEPTION 'invalid queue name %', p_queue USING ERRCODE = '22023';
    END IF;
    EXECUTE format('ALTER TABLE pgmq.%I SET (autovacuum_vacuum_scale_factor = 0, '
                   'autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0)', 'q_' || p_queue);
END
$$;

SELECT tasker.tune_queue_table(queue_name) FROM pgmq.meta WHERE queue_name LIKE 'tasker\_%';
