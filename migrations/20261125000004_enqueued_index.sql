-- Finds steps that are enqueued but whose message is gone (a queue table dropped and
-- recreated, a failed send): the recovery loop re-sends them.
CREATE INDEX workflow_steps_enqueued_idx ON tasker.workflow_steps (updated_at)
    WHERE state = 'enqueued';
