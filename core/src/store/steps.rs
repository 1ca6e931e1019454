//! `tasker.workflow_steps`: claiming steps (from a queue, or fused into the transaction that
//! creates or releases them), applying outcomes, releasing children, retries, recovery and the
//! operator's changes. The hot paths are one call each of a function in
//! `migrations/…_step_cycle.up.sql`; this module binds their arguments and names their rows.

use std::time::Duration;

use crate::store::DbPool;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::tasks::TaskRoute;
use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::worker::ClaimedRow;

/// Milliseconds as the `int` the SQL functions take.
pub(crate) fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Which steps a creating or applying transaction claims for the calling process.
pub(crate) struct ClaimSettings<'a> {
    /// Queues this process serves.
    pub queues: &'a [String],
    /// Free handler slots: claim at most this many.
    pub capacity: usize,
    /// Handler classes whose breaker is open: their steps are left to the queue.
    pub blocked_handlers: &'a [String],
    pub worker_id: &'a str,
    pub claim_grace_seconds: i32,
}

impl ClaimSettings<'_> {
    /// Bind the claim settings, the queue lock timeout and the sender tag: the last seven
    /// arguments of `tasker.create_tasks` and `tasker.apply_step_results`, in their order.
    pub(crate) fn bind_last<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
        lock_timeout: Duration,
        sender: &'q str,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(self.queues)
            .bind(self.capacity.min(i32::MAX as usize) as i32)
            .bind(self.blocked_handlers)
            .bind(self.worker_id)
            .bind(self.claim_grace_seconds)
            .bind(millis(lock_timeout))
            .bind(sender)
    }
}

/// The columns every claiming function returns for a claimed step (`tasker.claim_steps`,
/// `tasker.apply_step_results`, `tasker.create_tasks`): the one place they become a
/// [`ClaimedStep`].
#[derive(sqlx::FromRow, Debug)]
pub(crate) struct ClaimColumns {
    pub task_uuid: Option<Uuid>,
    pub step_uuid: Option<Uuid>,
    pub token: Option<Uuid>,
    pub msg_id: Option<i64>,
    pub priority: Option<i16>,
    pub attempts: Option<i32>,
    pub max_attempts: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub step_name: Option<String>,
    pub named_task_id: Option<i64>,
    pub context: Option<Value>,
    pub correlation_id: Option<Uuid>,
    pub parent_correlation_id: Option<Uuid>,
    pub dependency_results: Option<Value>,
    pub traceparent: Option<String>,
}

/// A step claimed for this process, as the database returned it.
#[derive(Debug)]
pub(crate) struct ClaimedStep {
    pub queue: String,
    pub named_task_id: i64,
    pub parent_trace: Option<String>,
    pub row: ClaimedRow,
}

impl ClaimColumns {
    /// The claimed step of a 'claimed' row (None if the row lacks what a claim must have).
    pub fn into_claimed(self, queue: String) -> Option<ClaimedStep> {
        Some(ClaimedStep {
            queue,
            named_task_id: self.named_task_id?,
            parent_trace: self.traceparent,
            row: ClaimedRow {
                parent_trace: None,
                task_uuid: self.task_uuid?,
                step_uuid: self.step_uuid?,
                token: self.token?,
                msg_id: self.msg_id?,
                correlation_id: self.correlation_id?,
                parent_correlation_id: self.parent_correlation_id,
                priority: self.priority.unwrap_or(0),
                step_name: self.step_name?,
                attempts: self.attempts? as u32,
                max_attempts: self.max_attempts? as u32,
                timeout_seconds: self.timeout_seconds? as u32,
                context: self.context.unwrap_or(Value::Null),
                dependency_results: dependency_pairs(self.dependency_results),
            },
        })
    }
}

/// The `[[name, result], ...]` array the claim functions return, as pairs.
pub(crate) fn dependency_pairs(value: Option<Value>) -> Vec<(String, Value)> {
    match value {
        Some(Value::Array(pairs)) => pairs
            .into_iter()
            .filter_map(|pair| match pair {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let value = kv.pop()?;
                    match kv.pop()? {
                        Value::String(k) => Some((k, value)),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What the handler breakers allow for one read of a queue.
pub(crate) struct HandlerGate<'a> {
    /// Handlers whose breaker is open: their steps are postponed, attempts untouched.
    pub blocked: &'a [String],
    /// Handlers whose half-open breaker admitted one trial: one step each.
    pub trials: &'a [String],
    /// How long a postponed message stays hidden.
    pub postpone_seconds: i32,
    /// Steps whose handler returned in this process, outcome not applied yet (their
    /// concurrency slots are not counted against this claim).
    pub finishing: &'a [Uuid],
}

/// One row of `tasker.claim_steps`: `kind` is 'claimed', 'archived' (with `reason`),
/// 'exhausted' or 'postponed'.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub kind: String,
    pub reason: Option<String>,
    #[sqlx(flatten)]
    pub claim: ClaimColumns,
}

/// Read up to `qty` messages of `queue` and claim their steps in one statement
/// (`tasker.claim_steps`, which also settles every message it cannot claim). Run it on the
/// queue pool: its statements wait at most `queue_lock_timeout` for a lock, so a locked queue
/// table fails fast (and opens that queue's breaker).
pub(crate) async fn claim_steps(
    queue_pool: &DbPool,
    queue: &QueueName,
    qty: usize,
    worker_id: &str,
    claim_grace_seconds: i32,
    read_visibility_seconds: i32,
    gate: &HandlerGate<'_>,
) -> Result<Vec<ClaimRow>> {
    let rows = crate::store::query_as(
        "SELECT * FROM tasker.claim_steps($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(queue.as_str())
    .bind(qty.min(i32::MAX as usize) as i32)
    .bind(worker_id)
    .bind(claim_grace_seconds)
    .bind(read_visibility_seconds)
    .bind(gate.blocked)
    .bind(gate.trials)
    .bind(gate.postpone_seconds)
    .bind(gate.finishing)
    .fetch_all(queue_pool)
    .await?;
    Ok(rows)
}

/// What `tasker.fail_exhausted_claim` did.
#[derive(sqlx::FromRow)]
pub(crate) struct ExhaustedClaim {
    /// False when the step had moved on meanwhile (nothing was changed).
    pub failed: bool,
    pub task_state: Option<String>,
}

/// Fail a step whose claim expired on its last attempt, settling its message.
pub(crate) async fn fail_exhausted_claim(
    pool: &DbPool,
    message: &StepMessage,
    queue: &QueueName,
    namespace: &str,
    msg_id: i64,
    lock_timeout: Duration,
) -> Result<ExhaustedClaim> {
    let row =
        crate::store::query_as("SELECT * FROM tasker.fail_exhausted_claim($1, $2, $3, $4, $5, $6)")
            .bind(message.task_uuid)
            .bind(message.step_uuid)
            .bind(queue.as_str())
            .bind(namespace)
            .bind(msg_id)
            .bind(millis(lock_timeout))
            .fetch_one(pool)
            .await?;
    Ok(row)
}

/// One outcome to apply, as `tasker.apply_step_results` takes it.
pub(crate) struct OutcomeRecord<'a> {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub token: Uuid,
    pub queue: &'a str,
    pub msg_id: i64,
    pub namespace: &'a str,
    pub correlation_id: Uuid,
    pub priority: i16,
    pub success: bool,
    pub result: &'a Value,
    pub metadata: &'a Value,
    /// The failure as stored (`Value::Null` on success).
    pub error: Value,
    pub retryable: bool,
    /// Backoff before a retry, in milliseconds.
    pub retry_ms: f64,
    /// Whether the step's queue may be written (its breaker admitted it).
    pub queue_usable: bool,
}

/// One row of `tasker.apply_step_results`: `kind` is 'outcome' (one per record: `outcome` is
/// 'applied' or 'discarded'), 'queue' (one per queue written, with its error if any) or
/// 'claimed' (a released child claimed for the caller).
#[derive(sqlx::FromRow)]
pub(crate) struct ApplyRow {
    pub kind: String,
    pub outcome: Option<String>,
    pub step_state: Option<String>,
    pub enqueued_children: Option<i32>,
    pub task_state: Option<String>,
    pub retry_in_ms: Option<f64>,
    pub queue: Option<String>,
    pub queue_error: Option<String>,
    #[sqlx(flatten)]
    pub claim: ClaimColumns,
}

/// Apply outcomes in one transaction and one round trip (`tasker.apply_step_results`).
pub(crate) async fn apply_step_results(
    pool: &DbPool,
    records: &[OutcomeRecord<'_>],
    claims: &ClaimSettings<'_>,
    lock_timeout: Duration,
    sender: &str,
) -> Result<Vec<ApplyRow>> {
    fn column<'r, T>(
        records: &'r [OutcomeRecord<'_>],
        f: impl Fn(&'r OutcomeRecord<'_>) -> T,
    ) -> Vec<T> {
        records.iter().map(f).collect()
    }
    let query = crate::store::query_as(
        "SELECT * FROM tasker.apply_step_results($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb[], \
           $11::jsonb[], $12::jsonb[], $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(column(records, |r| r.task_uuid))
    .bind(column(records, |r| r.step_uuid))
    .bind(column(records, |r| r.token))
    .bind(column(records, |r| r.queue))
    .bind(column(records, |r| r.msg_id))
    .bind(column(records, |r| r.namespace))
    .bind(column(records, |r| r.correlation_id))
    .bind(column(records, |r| r.priority))
    .bind(column(records, |r| r.success))
    .bind(column(records, |r| r.result))
    .bind(column(records, |r| r.metadata))
    .bind(column(records, |r| &r.error))
    .bind(column(records, |r| r.retryable))
    .bind(column(records, |r| r.retry_ms))
    .bind(column(records, |r| r.queue_usable));
    let rows = claims
        .bind_last(query, lock_timeout, sender)
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

/// A child released by `tasker.release_children`, with its step message.
#[derive(sqlx::FromRow)]
struct ReleasedChild {
    message: Value,
}

/// Release the children of a step an operator resolved (`tasker.release_children`, the one
/// place a step becomes ready; none is claimed here). Returns their messages, for the caller
/// to send.
pub(crate) async fn release_children(
    conn: &mut PgConnection,
    route: &TaskRoute,
    step_uuid: Uuid,
) -> Result<Vec<StepMessage>> {
    let rows: Vec<ReleasedChild> = crate::store::query_as(
        "SELECT message FROM tasker.release_children(ARRAY[$1]::uuid[], ARRAY[$2]::uuid[], \
           ARRAY[$3]::text[], '{}', 0, '{}', NULL, 0)",
    )
    .bind(step_uuid)
    .bind(route.task_uuid)
    .bind(route.queue.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            serde_json::from_value(r.message)
                .map_err(|e| crate::Error::InvalidInput(format!("a released child's message: {e}")))
        })
        .collect()
}

/// A step and its handler class.
#[derive(sqlx::FromRow)]
pub(crate) struct StepHandler {
    pub step_uuid: Uuid,
    pub handler_class: String,
}

/// Move `steps` to `enqueued` (their history is the caller's to record).
pub(crate) async fn mark_enqueued(
    conn: &mut PgConnection,
    steps: &[Uuid],
) -> Result<Vec<StepHandler>> {
    let rows = crate::store::query_as(
        "UPDATE tasker.workflow_steps SET state = 'enqueued', next_retry_at = NULL, updated_at = now() \
         WHERE step_uuid = ANY($1) RETURNING step_uuid, handler_class",
    )
    .bind(steps)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// A step locked for an operator's change.
#[derive(sqlx::FromRow)]
pub(crate) struct LockedStep {
    pub step_uuid: Uuid,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
}

pub(crate) async fn lock_step(
    conn: &mut PgConnection,
    task_uuid: Uuid,
    step_name: &str,
) -> Result<Option<LockedStep>> {
    let row = crate::store::query_as(
        "SELECT step_uuid, state, attempts, max_attempts FROM tasker.workflow_steps \
         WHERE task_uuid = $1 AND name = $2 FOR UPDATE",
    )
    .bind(task_uuid)
    .bind(step_name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

pub(crate) async fn set_max_attempts(
    conn: &mut PgConnection,
    step_uuid: Uuid,
    max_attempts: i32,
) -> Result<()> {
    crate::store::query("UPDATE tasker.workflow_steps SET max_attempts = $2 WHERE step_uuid = $1")
        .bind(step_uuid)
        .bind(max_attempts)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Record an operator's result for a step and move it to `resolved_manually`.
pub(crate) async fn mark_resolved(
    conn: &mut PgConnection,
    step_uuid: Uuid,
    result: &Value,
) -> Result<()> {
    crate::store::query(
        "UPDATE tasker.workflow_steps SET state = 'resolved_manually', results = $2, updated_at = now() \
         WHERE step_uuid = $1",
    )
    .bind(step_uuid)
    .bind(result)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A step moved by a statement, with the state it left.
#[derive(sqlx::FromRow)]
pub(crate) struct MovedStep {
    pub step_uuid: Uuid,
    pub from_state: String,
}

/// Cancel the steps of a task that wait to run (pending, enqueued, waiting_for_retry); those
/// held back by a flow limit stop waiting for it.
pub(crate) async fn cancel_waiting(
    conn: &mut PgConnection,
    task_uuid: Uuid,
) -> Result<Vec<MovedStep>> {
    let rows = crate::store::query_as(
        "WITH moved AS (\
           UPDATE tasker.workflow_steps s SET state = 'cancelled', next_retry_at = NULL, updated_at = now() \
             FROM tasker.workflow_steps old \
            WHERE s.task_uuid = $1 AND old.step_uuid = s.step_uuid \
              AND s.state IN ('pending', 'enqueued', 'waiting_for_retry') \
            RETURNING s.step_uuid, old.state AS from_state), \
         unheld AS (DELETE FROM tasker.flow_waiters w USING moved WHERE w.step_uuid = moved.step_uuid) \
         SELECT step_uuid, from_state FROM moved",
    )
    .bind(task_uuid)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// An enqueued step whose message is to be sent.
#[derive(sqlx::FromRow)]
pub(crate) struct StepToSend {
    pub step_uuid: Uuid,
    pub task_uuid: Uuid,
    pub namespace: String,
    pub correlation_id: Uuid,
    pub priority: i16,
    pub handler_class: String,
}

impl StepToSend {
    pub fn message(&self) -> StepMessage {
        StepMessage {
            task_uuid: self.task_uuid,
            step_uuid: self.step_uuid,
            correlation_id: self.correlation_id,
            priority: self.priority,
            handler: Some(self.handler_class.clone()),
        }
    }
}

/// Move up to `limit` steps whose backoff has elapsed (outside `blocked_namespaces`) from
/// waiting_for_retry to enqueued, skipping rows another process holds.
pub(crate) async fn take_due_retries(
    conn: &mut PgConnection,
    limit: i64,
    blocked_namespaces: &[String],
) -> Result<Vec<StepToSend>> {
    let rows = crate::store::query_as(
        "WITH due AS ( \
           SELECT s.step_uuid FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid) \
           WHERE s.state = 'waiting_for_retry' AND s.next_retry_at <= now() \
             AND t.namespace <> ALL($2) \
           ORDER BY s.next_retry_at LIMIT $1 FOR UPDATE OF s SKIP LOCKED) \
         UPDATE tasker.workflow_steps s SET state = 'enqueued', next_retry_at = NULL, updated_at = now() \
         FROM due, tasker.tasks t \
         WHERE s.step_uuid = due.step_uuid AND t.task_uuid = s.task_uuid \
         RETURNING s.step_uuid, s.task_uuid, t.namespace, t.correlation_id, t.priority, s.handler_class",
    )
    .bind(limit)
    .bind(blocked_namespaces)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// Seconds until the next step outside `blocked_namespaces` is due for retry (None when none
/// waits; negative when one is overdue).
pub(crate) async fn next_retry_in(
    conn: &mut PgConnection,
    blocked_namespaces: &[String],
) -> Result<Option<f64>> {
    // In due order through the partial index on next_retry_at (set only while a step waits),
    // so the cost is that of the first waiting step outside the blocked namespaces, not of
    // every step: no row when nothing waits.
    let next = crate::store::query_scalar(
        "SELECT extract(epoch FROM s.next_retry_at - now())::float8 FROM tasker.workflow_steps s \
         WHERE s.next_retry_at IS NOT NULL AND s.state = 'waiting_for_retry' \
           AND NOT EXISTS (SELECT 1 FROM tasker.tasks t WHERE t.task_uuid = s.task_uuid AND t.namespace = ANY($1)) \
         ORDER BY s.next_retry_at LIMIT 1",
    )
    .bind(blocked_namespaces)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(next)
}

/// Steps of running tasks of `namespace` enqueued longer than `after` ago with no message in
/// `queue`, up to `limit`, locked (others' locks skipped). The lookup reads the queue table:
/// it waits at most `lock_timeout` for it.
pub(crate) async fn find_lost(
    conn: &mut PgConnection,
    queue: &QueueName,
    namespace: &str,
    after: Duration,
    limit: i64,
    lock_timeout: Duration,
) -> Result<Vec<StepToSend>> {
    crate::store::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
        .execute(&mut *conn)
        .await?;
    let rows = crate::store::query_as(&format!(
        "SELECT s.step_uuid, s.task_uuid, t.namespace, t.correlation_id, t.priority, s.handler_class \
         FROM tasker.tasks t JOIN tasker.workflow_steps s USING (task_uuid) \
         WHERE t.status = 'in_progress' AND t.namespace = $1 \
           AND s.state = 'enqueued' AND s.updated_at < now() - make_interval(secs => $2) \
           AND NOT EXISTS (SELECT 1 FROM pgmq.q_{q} m WHERE m.message->>'step_uuid' = s.step_uuid::text) \
         ORDER BY s.updated_at LIMIT $3 FOR UPDATE OF s SKIP LOCKED",
        q = queue.as_str()
    ))
    .bind(namespace)
    .bind(after.as_secs_f64())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// Restart the clock of enqueued steps (so that a re-sent step is not found lost at once).
pub(crate) async fn touch(conn: &mut PgConnection, steps: &[Uuid]) -> Result<()> {
    crate::store::query(
        "UPDATE tasker.workflow_steps SET updated_at = now() WHERE step_uuid = ANY($1)",
    )
    .bind(steps)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
