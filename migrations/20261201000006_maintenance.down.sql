DO $$
DECLARE
    v_queue text;
BEGIN
    FOR v_queue IN SELECT queue_name FROM pgmq.meta WHERE queue_name LIKE 'tasker\_%' LOOP
        EXECUTE format('ALTER TABLE pgmq.%I RESET (autovacuum_vacuum_scale_factor, '
                       'autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)', 'q_' || v_queue);
    END LOOP;
END
$$;
DROP FUNCTION IF EXISTS tasker.tune_queue_table(text);
ALTER TABLE tasker.task_transitions RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_insert_scale_factor);
ALTER TABLE tasker.workflow_step_transitions RESET (autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_insert_scale_factor);
ALTER TABLE tasker.tasks RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor);
ALTER TABLE tasker.workflow_steps RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor);
DROP FUNCTION IF EXISTS tasker.purge_archive(timestamptz, integer);
DROP FUNCTION IF EXISTS tasker.purge_tasks(timestamptz, timestamptz, integer);
DROP FUNCTION IF EXISTS tasker.take_lease(text, text, double precision);
DROP INDEX IF EXISTS tasker.tasks_finished_idx;
DROP TABLE IF EXISTS tasker.leases;
