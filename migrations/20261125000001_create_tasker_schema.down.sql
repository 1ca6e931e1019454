-- Undo 20261125000001: the tasker schema and everything in it — every task, step and
-- transition. pgmq (installed before the migrations) and its queues stay.
DROP SCHEMA tasker CASCADE;
