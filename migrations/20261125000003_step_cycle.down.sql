-- Undo 20261125000003: the step cycle's functions. CASCADE takes with them the priority indexes
-- of the namespace queues (built on tasker.message_priority); an engine recreates those when it
-- starts on the schema again.
DROP FUNCTION tasker.create_tasks_json, tasker.json_jsonb_array, tasker.json_text_array,
    tasker.create_tasks, tasker.apply_step_results, tasker.fail_exhausted_claim,
    tasker.claim_steps, tasker.dependency_results, tasker.release_children, tasker.write_queue,
    tasker.send_step_messages, tasker.finalize_tasks, tasker.next_task_state,
    tasker.record_task_transition, tasker.record_step_transition;
DROP FUNCTION tasker.message_priority CASCADE;
