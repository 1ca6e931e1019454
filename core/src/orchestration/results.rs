//! Applying a step's outcome: one transaction records the result or failure, moves the step,
//! settles its message, releases children whose parents are now all done, and finalizes the
//! task when nothing is left. The task row is locked first, so sibling completions of one task
//! apply one after another: a join is released exactly once and finalization sees every step.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::backoff;
use crate::error::Result;
use crate::messaging::{self, queue::QueueName, StepMessage};
use crate::resilience::CircuitBreaker;
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

/// The namespace queue's side of applying an outcome: its breaker and how long a write may
/// wait for the queue table's lock.
pub(crate) struct QueueGuard<'a> {
    pub breaker: &'a CircuitBreaker,
    pub lock_timeout: Duration,
}

pub(crate) async fn apply(
    pool: &PgPool,
    ticket: &ClaimTicket,
    outcome: &StepOutcome,
    queue: QueueGuard<'_>,
) -> Result<ApplyReport> {
    let empty = Value::Object(Default::default());
    let (success, result, metadata, error, retryable, retry_ms) = match outcome {
        StepOutcome::Success { result, metadata } => (true, result, metadata, None, false, 0.0),
        StepOutcome::Failure(f) => {
            let delay = backoff::delay_with_random_jitter(
                ticket.attempt,
                ticket.backoff_base_ms,
                ticket.max_backoff_ms,
                f.retry_after,
            );
            (
                false,
                &empty,
                &empty,
                Some(failure_json(f, ticket.attempt)),
                f.kind == FailureKind::Retryable,
                delay.as_secs_f64() * 1000.0,
            )
        }
    };
    // An open breaker: the outcome still commits; the queue is left alone (see the migration).
    let permit = queue.breaker.try_acquire().ok();
    type Row = (
        String,
        Option<String>,
        i32,
        Option<String>,
        Option<f64>,
        Option<String>,
    );
    let row: Result<Row> = sqlx::query_as(
        "SELECT * FROM tasker.apply_step_result($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(ticket.task_uuid)
    .bind(ticket.step_uuid)
    .bind(ticket.token)
    .bind(ticket.queue.as_str())
    .bind(ticket.msg_id)
    .bind(&*ticket.namespace)
    .bind(ticket.correlation_id)
    .bind(ticket.priority)
    .bind(success)
    .bind(success.then_some(result))
    .bind(success.then_some(metadata))
    .bind(error)
    .bind(retryable)
    .bind(retry_ms)
    .bind(permit.is_some())
    .bind(queue.lock_timeout.as_millis().min(i32::MAX as u128) as i32)
    .fetch_one(pool)
    .await
    .map_err(Into::into);
    let row = match (row, permit) {
        (Ok(row), Some(permit)) => {
            match &row.5 {
                None => permit.success(),
                Some(e) => {
                    permit.failure();
                    tracing::warn!(queue = %ticket.queue, step_uuid = %ticket.step_uuid,
                        correlation_id = %ticket.correlation_id, error = %e,
                        "the step's outcome is recorded but its queue could not be written; \
                         released children are sent by the recovery loop");
                }
            }
            row
        }
        (Ok(row), None) => row,
        // Not the queue's fault (the database, the connection): no verdict on the queue.
        (Err(e), permit) => {
            if let Some(p) = permit {
                p.release();
            }
            return Err(e);
        }
    };
    if row.0 != "applied" {
        tracing::info!(step_uuid = %ticket.step_uuid, correlation_id = %ticket.correlation_id,
            "discarding a result whose claim is no longer current");
        return Ok(ApplyReport::Discarded);
    }
    Ok(ApplyReport::Applied {
        step_state: row.1.as_deref().unwrap_or("complete").parse()?,
        enqueued_children: row.2.max(0) as usize,
        task_state: row.3.as_deref().map(str::parse).transpose()?,
        retry_in: row.4.map(|ms| Duration::from_secs_f64(ms / 1000.0)),
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
