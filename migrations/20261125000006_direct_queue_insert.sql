-- Queue writes insert into the namespace's queue table directly instead of going through
-- pgmq.send_batch (three PL/pgSQL layers and a table-name check per call, the largest single
-- cost of applying a result in the nested plans of benches/benches/sql_dataset.rs). The queue
-- name was validated by the engine before it reached SQL; the table layout is pgmq 1.x's, which
-- the engine's own read statement relies on as well.
CREATE OR REPLACE FUNCTION tasker.write_queue(p_queue text, p_namespace text, p_messages jsonb[],
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
            EXECUTE format('INSERT INTO pgmq.%I (vt, message) SELECT clock_timestamp(), m FROM unnest($1) AS m',
                           'q_' || p_queue) USING p_messages;
            PERFORM pg_notify('tasker_wakeup', p_namespace);
        END IF;
        PERFORM set_config('lock_timeout', previous, true);
    EXCEPTION WHEN OTHERS THEN
        -- The subtransaction (and the lock_timeout set inside it) is rolled back.
        RETURN SQLERRM;
    END;
    RETURN NULL;
END $$;
