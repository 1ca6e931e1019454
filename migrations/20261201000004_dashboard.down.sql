DROP TABLE IF EXISTS tasker.processes;
DROP INDEX IF EXISTS tasker.workflow_step_transitions_created_brin;
DROP INDEX IF EXISTS tasker.tasks_context_idx;
DROP INDEX IF EXISTS tasker.tasks_created_idx;
