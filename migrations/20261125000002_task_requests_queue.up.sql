-- Asynchronous task creation: any producer (even plain SQL) sends a JSON task request with
-- pgmq.send('tasker_task_requests', '{"namespace": ..., "name": ..., "version": ..., "context": {...}}').
SELECT pgmq.create('tasker_task_requests');
