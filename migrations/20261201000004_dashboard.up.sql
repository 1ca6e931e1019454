-- What the operator dashboard (TaskerCore::Web) reads, each list by keyset and each figure
-- bounded whatever the size of the tables.

-- The task list, newest first (and its keyset cursor): created_at never changes, so this index
-- costs an entry per task at creation and nothing on the task's later updates.
CREATE INDEX tasks_created_idx ON tasker.tasks (created_at, task_uuid);

-- Steps finished per minute over the last hour: history rows are appended in time order, so a
-- block-range index finds the last hour's blocks for a few pages of index.
CREATE INDEX workflow_step_transitions_created_brin ON tasker.workflow_step_transitions
    USING brin (created_at) WITH (autosummarize = on);
