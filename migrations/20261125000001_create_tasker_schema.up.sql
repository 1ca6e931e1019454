-- Schema of the tasker workflow engine. pgmq is installed separately (same locked run) and
-- keeps its own `pgmq` schema; this file only owns `tasker`.
CREATE SCHEMA IF NOT EXISTS tasker;

CREATE TABLE tasker.task_namespaces (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,29}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasker.named_tasks (
    named_task_id  bigserial PRIMARY KEY,
    namespace      text NOT NULL REFERENCES tasker.task_namespaces (name),
    name           text NOT NULL,
    version        text NOT NULL,
    description    text,
    template       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name, version)
);

CREATE TABLE tasker.tasks (
    task_uuid              uuid PRIMARY KEY,
    named_task_id          bigint NOT NULL REFERENCES tasker.named_tasks (named_task_id),
    namespace              text NOT NULL,
    status                 text NOT NULL,
    context                jsonb NOT NULL,
    correlation_id         uuid NOT NULL,
    parent_correlation_id  uuid,
    idempotency_key        text,
    priority               smallint NOT NULL DEFAULT 0,
    -- The task's W3C trace context (its task span, or the caller's when the creating process
    -- exported no traces): step attempts join the task's trace in any process.
    traceparent            text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    completed_at           timestamptz
)
-- As workflow_steps: room for HOT updates (a task row changes as its steps finish).
WITH (fillfactor = 80);
CREATE UNIQUE INDEX tasks_idempotency_idx ON tasker.tasks (named_task_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_correlation_idx ON tasker.tasks (correlation_id);
CREATE INDEX tasks_parent_correlation_idx ON tasker.tasks (parent_correlation_id)
    WHERE parent_correlation_id IS NOT NULL;
CREATE INDEX tasks_status_idx ON tasker.tasks (status, created_at);

CREATE TABLE tasker.workflow_steps (
    step_uuid         uuid PRIMARY KEY,
    task_uuid         uuid NOT NULL REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE,
    name              text NOT NULL,
    position          integer NOT NULL,
    handler_class     text NOT NULL,
    state             text NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL,
    retryable         boolean NOT NULL,
    backoff_base_ms   integer NOT NULL,
    max_backoff_ms    integer NOT NULL,
    timeout_seconds   integer NOT NULL,
    pending_parents   integer NOT NULL,
    -- Names of every ancestor step (from the template): a claim reads the results this step
    -- depends on through the (task_uuid, name) index instead of walking the edges.
    ancestors         text[] NOT NULL DEFAULT '{}',
    -- The step's concurrency and rate limits with their keys resolved from the task's context
    -- ({"concurrency": {"key", "limit"}, "rate": {"key", "limit", "per"}}), NULL without
    -- limits: read by tasker.admit_flow when the step is claimed (flow_control migration).
    flow              jsonb,
    results           jsonb,
    result_metadata   jsonb,
    last_error        jsonb,
    next_retry_at     timestamptz,
    claim_token       uuid,
    claim_expires_at  timestamptz,
    claimed_by        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_uuid, name)
)
-- Room on each page for the new versions of its rows: a step row is updated four or five
-- times in its life, and an update that stays on its page without touching an indexed column
-- writes no index entry (a HOT update). So no index of this table names `state`,
-- `updated_at`, the claim columns or the results, not even in a predicate.
WITH (fillfactor = 70);
-- Steps waiting for their backoff to elapse (next_retry_at is set only while waiting).
CREATE INDEX workflow_steps_retry_idx ON tasker.workflow_steps (next_retry_at)
    WHERE next_retry_at IS NOT NULL;

CREATE TABLE tasker.workflow_step_edges (
    from_step_uuid  uuid NOT NULL REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE,
    to_step_uuid    uuid NOT NULL REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE,
    PRIMARY KEY (from_step_uuid, to_step_uuid)
);
CREATE INDEX workflow_step_edges_to_idx ON tasker.workflow_step_edges (to_step_uuid);

-- Append-only histories: a row is inserted per state change and never updated (no "current"
-- flag to flip, so writing history is one index-friendly INSERT). Order is `id` (the writers of
-- one task or step hold its row lock, so its rows are numbered in the order they happened);
-- the current state is on the task or step row itself. No foreign keys: history is written on
-- every state change and read only through its task, and it is deleted with its task.
CREATE TABLE tasker.task_transitions (
    id          bigserial PRIMARY KEY,
    task_uuid   uuid NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX task_transitions_task_idx ON tasker.task_transitions (task_uuid);

CREATE TABLE tasker.workflow_step_transitions (
    id          bigserial PRIMARY KEY,
    step_uuid   uuid NOT NULL,
    task_uuid   uuid NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX workflow_step_transitions_task_idx ON tasker.workflow_step_transitions (task_uuid);
