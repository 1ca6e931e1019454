-- What the operator dashboard (TaskerCore::Web) reads, each list by keyset and each figure
-- bounded whatever the size of the tables.

-- The task list, newest first (and its keyset cursor): created_at never changes, so this index
-- costs an entry per task at creation and nothing on the task's later updates.
CREATE INDEX tasks_created_idx ON tasker.tasks (created_at, task_uuid);

-- Search inside the context (`?context.order_id=42`: `context @> '{"order_id": 42}'`). A
-- task's context never changes, so this costs one (batched, fastupdate) entry set per task at
-- creation; measured within noise of creation throughput (docs/benchmarks.md, rake bench:web).
CREATE INDEX tasks_context_idx ON tasker.tasks USING gin (context jsonb_path_ops);

-- Steps finished per minute over the last hour: history rows are appended in time order, so a
-- block-range index finds the last hour's blocks for a few pages of index.
CREATE INDEX workflow_step_transitions_created_brin ON tasker.workflow_step_transitions
    USING brin (created_at) WITH (autosummarize = on);

-- One row per running engine, refreshed every few seconds (the dashboard's Processes page):
-- removed at shutdown; a row whose heartbeat stopped is a process that died (kept a day).
CREATE TABLE tasker.processes (
    instance_id   text PRIMARY KEY,
    worker_id     text NOT NULL,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    namespaces    text[] NOT NULL,
    concurrency   integer NOT NULL,
    busy          integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);
