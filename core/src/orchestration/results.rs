//! Applying step outcomes, in batches: one transaction records each result or failure, moves
//! its step, settles its message, releases children whose parents are now all done, finalizes
//! the task when nothing is left, and claims released children for the applying process. Task
//! rows are locked in task order, so sibling completions of one task apply one after another
//! (a join is released exactly once, finalization sees every step) and concurrent batches
//! cannot deadlock.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::backoff;
use crate::error::Result;
use crate::messaging::{self, queue::QueueName, StepMessage};
use crate::state::{StepState, TaskState};
use crate::store::transitions::{self, StepTransition};
use crate::worker::{ClaimTicket, FailureKind, StepFailure, StepOutcome};

/// What applying an outcome did.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyReport {
    /// The claim was no longer current (timed out and re-claimed, or already settled).
    Discarded,
    Applied {
        step_state: StepState,
        /// Children that became ready and were sent to the queue.
        enqueued_children: usize,
        /// Set when the task reached a new state in this transaction.
        task_state: Option<TaskState>,
        /// When the step runs again (waiting_for_retry only).
        retry_in: Option<Duration>,
    },
}

/// One outcome of a batch, with whether its queue may be written (its breaker admitted it).
pub(crate) struct BatchItem<'a> {
    pub ticket: &'a ClaimTicket,
    pub outcome: &'a StepOutcome,
    pub queue_usable: bool,
}

/// Which released children the applying process claims for itself, in the same transaction.
pub(crate) struct FusedClaims<'a> {
    /// Queues this process serves.
    pub queues: &'a [String],
    /// Free handler slots: claim at most this many.
    pub capacity: usize,
    /// Handler classes whose breaker is open: their steps are left to the queue.
    pub blocked_handlers: &'a [String],
    pub worker_id: &'a str,
    pub claim_grace_seconds: i32,
}

pub(crate) use crate::worker::claim::ClaimedChild;

/// What [`apply_batch`] did: one report per item (in the items' order), each written queue's
/// error (None: written), and the children claimed for this process.
#[derive(Debug)]
pub(crate) struct BatchApplied {
    pub reports: Vec<ApplyReport>,
    pub queues: Vec<(String, Option<String>)>,
    pub claimed: Vec<ClaimedChild>,
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    kind: String,
    outcome: Option<String>,
    step_state: Option<String>,
    enqueued_children: Option<i32>,
    task_state: Option<String>,
    retry_in_ms: Option<f64>,
    queue: Option<String>,
    queue_error: Option<String>,
    #[sqlx(flatten)]
    claim: crate::worker::claim::ClaimColumns,
}

/// Apply a batch of outcomes in one transaction and one round trip
/// (`tasker.apply_step_results`): each is checked against its claim token, recorded, its step
/// moved, its children released, its task finalized; each usable queue is written once, and
/// released children are claimed for this process as [`FusedClaims`] allows. A late outcome
/// (stale token) is reported [`ApplyReport::Discarded`].
pub(crate) async fn apply_batch(
    pool: &PgPool,
    items: &[BatchItem<'_>],
    claims: &FusedClaims<'_>,
    lock_timeout: Duration,
    sender: &str,
) -> Result<BatchApplied> {
    let n = items.len();
    let mut tasks = Vec::with_capacity(n);
    let mut steps = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut queues = Vec::with_capacity(n);
    let mut msg_ids = Vec::with_capacity(n);
    let mut namespaces = Vec::with_capacity(n);
    let mut correlations = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut success = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut retryable = Vec::with_capacity(n);
    let mut retry_ms = Vec::with_capacity(n);
    let mut usable = Vec::with_capacity(n);
    for item in items {
        let t = item.ticket;
        tasks.push(t.task_uuid);
        steps.push(t.step_uuid);
        tokens.push(t.token);
        queues.push(t.queue.as_str());
        msg_ids.push(t.msg_id);
        namespaces.push(&*t.namespace);
        correlations.push(t.correlation_id);
        priorities.push(t.priority);
        usable.push(item.queue_usable);
        match item.outcome {
            StepOutcome::Success {
                result,
                metadata: meta,
            } => {
                success.push(true);
                results.push(result);
                metadata.push(meta);
                errors.push(Value::Null);
                retryable.push(false);
                retry_ms.push(0.0);
            }
            StepOutcome::Failure(f) => {
                let delay = backoff::delay_with_random_jitter(
                    t.attempt,
                    t.backoff_base_ms,
                    t.max_backoff_ms,
                    f.retry_after,
                );
                success.push(false);
                results.push(&Value::Null);
                metadata.push(&Value::Null);
                errors.push(failure_json(f, t.attempt));
                retryable.push(f.kind == FailureKind::Retryable);
                retry_ms.push(delay.as_secs_f64() * 1000.0);
            }
        }
    }
    let rows: Vec<BatchRow> = sqlx::query_as(
        "SELECT * FROM tasker.apply_step_results($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb[],            $11::jsonb[], $12::jsonb[], $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(&tasks)
    .bind(&steps)
    .bind(&tokens)
    .bind(&queues)
    .bind(&msg_ids)
    .bind(&namespaces)
    .bind(&correlations)
    .bind(&priorities)
    .bind(&success)
    .bind(&results)
    .bind(&metadata)
    .bind(&errors)
    .bind(&retryable)
    .bind(&retry_ms)
    .bind(&usable)
    .bind(claims.queues)
    .bind(claims.capacity.min(i32::MAX as usize) as i32)
    .bind(claims.blocked_handlers)
    .bind(claims.worker_id)
    .bind(claims.claim_grace_seconds)
    .bind(lock_timeout.as_millis().min(i32::MAX as u128) as i32)
    .bind(sender)
    .fetch_all(pool)
    .await?;
    let mut reports: Vec<Option<ApplyReport>> = (0..n).map(|_| None).collect();
    let position: std::collections::HashMap<Uuid, usize> =
        steps.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut written = Vec::new();
    let mut claimed = Vec::new();
    for row in rows {
        match row.kind.as_str() {
            "outcome" => {
                let Some(&i) = row.claim.step_uuid.as_ref().and_then(|s| position.get(s)) else {
                    continue;
                };
                reports[i] = Some(if row.outcome.as_deref() == Some("applied") {
                    ApplyReport::Applied {
                        step_state: row.step_state.as_deref().unwrap_or("complete").parse()?,
                        enqueued_children: row.enqueued_children.unwrap_or(0).max(0) as usize,
                        task_state: row.task_state.as_deref().map(str::parse).transpose()?,
                        retry_in: row
                            .retry_in_ms
                            .map(|ms| crate::limits::clamped_seconds(ms / 1000.0, Duration::MAX)),
                    }
                } else {
                    tracing::info!(step_uuid = ?row.claim.step_uuid,
                        "discarding a result whose claim is no longer current");
                    ApplyReport::Discarded
                });
            }
            "queue" => written.push((row.queue.unwrap_or_default(), row.queue_error)),
            "claimed" => {
                if let Some(child) = row.claim.into_child(row.queue.unwrap_or_default()) {
                    claimed.push(child);
                }
            }
            _ => {}
        }
    }
    Ok(BatchApplied {
        reports: reports
            .into_iter()
            .map(|r| r.unwrap_or(ApplyReport::Discarded))
            .collect(),
        queues: written,
        claimed,
    })
}

fn failure_json(f: &StepFailure, attempt: u32) -> Value {
    let mut v = json!({
        "error_class": f.error_class,
        "message": f.message,
        "backtrace": f.backtrace,
        "retryable": f.kind == FailureKind::Retryable,
        "attempt": attempt,
    });
    if let Some(code) = &f.error_code {
        v["error_code"] = json!(code);
    }
    if let Some(after) = f.retry_after {
        v["retry_after_seconds"] = json!(after.as_secs_f64());
    }
    v
}

/// Where a task's steps are sent.
pub(crate) struct TaskRoute {
    pub task_uuid: Uuid,
    pub correlation_id: Uuid,
    pub queue: QueueName,
    pub namespace: Arc<str>,
    pub priority: i16,
}

/// Decrement each child's count of unfinished parents; enqueue and send those that reach zero
/// (`tasker.release_children`, shared with result application).
pub(crate) async fn release_children(
    conn: &mut PgConnection,
    route: &TaskRoute,
    step_uuid: Uuid,
) -> Result<usize> {
    let n: i32 = sqlx::query_scalar("SELECT tasker.release_children($1, $2, $3, $4, $5, $6)")
        .bind(route.task_uuid)
        .bind(step_uuid)
        .bind(route.queue.as_str())
        .bind(&*route.namespace)
        .bind(route.correlation_id)
        .bind(route.priority)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n.max(0) as usize)
}

/// `from` → enqueued for `steps` (all of the route's task), with their messages.
pub(crate) async fn enqueue_steps(
    conn: &mut PgConnection,
    route: &TaskRoute,
    steps: &[Uuid],
    from: StepState,
    metadata: Value,
    lock_timeout: Duration,
) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    from.check_transition(StepState::Enqueued)?;
    let handlers: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE tasker.workflow_steps SET state = 'enqueued', next_retry_at = NULL, updated_at = now() \
         WHERE step_uuid = ANY($1) RETURNING step_uuid, handler_class",
    )
    .bind(steps)
    .fetch_all(&mut *conn)
    .await?;
    let items: Vec<StepTransition> = steps
        .iter()
        .map(|&step_uuid| StepTransition {
            step_uuid,
            task_uuid: route.task_uuid,
            from: Some(from),
            to: StepState::Enqueued,
            metadata: metadata.clone(),
        })
        .collect();
    transitions::record_steps(conn, &items).await?;
    let messages: Vec<StepMessage> = handlers
        .into_iter()
        .map(|(step_uuid, handler)| StepMessage {
            task_uuid: route.task_uuid,
            step_uuid,
            correlation_id: route.correlation_id,
            priority: route.priority,
            handler: Some(handler),
        })
        .collect();
    // An operator's request: a queue that cannot be written fails it (nothing is committed).
    match messaging::write_queue(
        conn,
        &route.queue,
        &route.namespace,
        &messages,
        None,
        lock_timeout,
    )
    .await?
    {
        None => Ok(()),
        Some(message) => Err(crate::Error::Queue {
            queue: route.queue.as_str().to_owned(),
            message,
        }),
    }
}

/// Decide the task's state from its steps (`tasker.finalize_task`; the caller holds the task
/// row lock). Returns the new state when it changed.
pub(crate) async fn finalize(
    conn: &mut PgConnection,
    task_uuid: Uuid,
    current: TaskState,
) -> Result<Option<TaskState>> {
    let next: Option<String> = sqlx::query_scalar("SELECT tasker.finalize_task($1, $2)")
        .bind(task_uuid)
        .bind(current.as_str())
        .fetch_one(&mut *conn)
        .await?;
    next.as_deref().map(str::parse).transpose()
}
