-- Undo 20261125000002: the task requests queue, with any request still in it.
SELECT pgmq.drop_queue('tasker_task_requests');
