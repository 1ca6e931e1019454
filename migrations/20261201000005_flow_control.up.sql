-- Flow control: what every process consults before it claims work.

-- Paused namespaces: no process claims their steps (their messages stay queued) until resumed.
-- Each engine reads this table once per poll interval.
CREATE TABLE tasker.paused_namespaces (
    namespace  text PRIMARY KEY REFERENCES tasker.task_namespaces (name) ON DELETE CASCADE,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    actor      text,
    reason     text
);
