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

pub(crate) async fn apply(
    pool: &PgPool,
    ticket: &ClaimTicket,
    outcome: &StepOutcome,
) -> Result<ApplyReport> {
    let mut tx = pool.begin().await?;
    let task_status: String =
        sqlx::query_scalar("SELECT status FROM tasker.tasks WHERE task_uuid = $1 FOR UPDATE")
            .bind(ticket.task_uuid)
            .fetch_one(&mut *tx)
            .await?;
    let task_status: TaskState = task_status.parse()?;
    type Row = (String, Option<Uuid>, i32, i32, bool, i32, i32);
    let row: Option<Row> = sqlx::query_as(
        "SELECT state, claim_token, attempts, max_attempts, retryable, backoff_base_ms, max_backoff_ms \
         FROM tasker.workflow_steps WHERE step_uuid = $1 FOR UPDATE",
    )
    .bind(ticket.step_uuid)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((state, token, attempts, max_attempts, retryable, base_ms, max_ms)) = row else {
        return Ok(ApplyReport::Discarded);
    };
    if state != StepState::InProgress.as_str() || token != Some(ticket.token) {
        tracing::info!(step_uuid = %ticket.step_uuid, correlation_id = %ticket.correlation_id,
            "discarding a result whose claim is no longer current");
        return Ok(ApplyReport::Discarded);
    }

    let mut enqueued_children = 0;
    let mut retry_in = None;
    let step_state = match outcome {
        StepOutcome::Success { result, metadata } => {
            sqlx::query(
                "UPDATE tasker.workflow_steps SET state = 'complete', results = $2, \
                   result_metadata = $3, last_error = NULL, claim_token = NULL, \
                   claim_expires_at = NULL, updated_at = now() \
                 WHERE step_uuid = $1",
            )
            .bind(ticket.step_uuid)
            .bind(result)
            .bind(metadata)
            .execute(&mut *tx)
            .await?;
            transitions::record_steps(
                &mut tx,
                &[StepTransition {
                    step_uuid: ticket.step_uuid,
                    task_uuid: ticket.task_uuid,
                    from: Some(StepState::InProgress),
                    to: StepState::Complete,
                    metadata: json!({ "attempt": attempts }),
                }],
            )
            .await?;
            if task_status != TaskState::Cancelled {
                enqueued_children =
                    release_children(&mut tx, &TaskRoute::of(ticket), ticket.step_uuid).await?;
            }
            StepState::Complete
        }
        StepOutcome::Failure(failure) => {
            let runs_again = failure.kind == FailureKind::Retryable
                && retryable
                && attempts < max_attempts
                && task_status != TaskState::Cancelled;
            let error = failure_json(failure, attempts);
            if runs_again {
                let delay = backoff::delay_with_random_jitter(
                    attempts as u32,
                    base_ms as u64,
                    max_ms as u64,
                    failure.retry_after,
                );
                retry_in = Some(delay);
                sqlx::query(
                    "UPDATE tasker.workflow_steps SET state = 'waiting_for_retry', last_error = $2, \
                       next_retry_at = now() + make_interval(secs => $3), claim_token = NULL, \
                       claim_expires_at = NULL, updated_at = now() \
                     WHERE step_uuid = $1",
                )
                .bind(ticket.step_uuid)
                .bind(&error)
                .bind(delay.as_secs_f64())
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query(
                    "UPDATE tasker.workflow_steps SET state = 'error', last_error = $2, \
                       claim_token = NULL, claim_expires_at = NULL, updated_at = now() \
                     WHERE step_uuid = $1",
                )
                .bind(ticket.step_uuid)
                .bind(&error)
                .execute(&mut *tx)
                .await?;
            }
            let to = if runs_again {
                StepState::WaitingForRetry
            } else {
                StepState::Error
            };
            let mut meta = json!({
                "attempt": attempts,
                "error_class": failure.error_class,
                "message": failure.message,
            });
            if let Some(d) = retry_in {
                meta["retry_in_ms"] = json!(d.as_millis() as u64);
            }
            transitions::record_steps(
                &mut tx,
                &[StepTransition {
                    step_uuid: ticket.step_uuid,
                    task_uuid: ticket.task_uuid,
                    from: Some(StepState::InProgress),
                    to,
                    metadata: meta,
                }],
            )
            .await?;
            to
        }
    };
    messaging::delete(&mut *tx, &ticket.queue, ticket.msg_id).await?;
    let task_state = finalize(&mut tx, ticket.task_uuid, task_status).await?;
    tx.commit().await?;
    Ok(ApplyReport::Applied {
        step_state,
        enqueued_children,
        task_state,
        retry_in,
    })
}

fn failure_json(f: &StepFailure, attempt: i32) -> Value {
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

impl TaskRoute {
    pub(crate) fn of(ticket: &ClaimTicket) -> Self {
        TaskRoute {
            task_uuid: ticket.task_uuid,
            correlation_id: ticket.correlation_id,
            queue: ticket.queue.clone(),
            namespace: ticket.namespace.clone(),
            priority: ticket.priority,
        }
    }
}

/// Decrement each child's count of unfinished parents; enqueue and send those that reach zero.
pub(crate) async fn release_children(
    conn: &mut PgConnection,
    route: &TaskRoute,
    step_uuid: Uuid,
) -> Result<usize> {
    let ready: Vec<Uuid> = sqlx::query_scalar(
        "WITH dec AS ( \
           UPDATE tasker.workflow_steps c SET pending_parents = c.pending_parents - 1, updated_at = now() \
           FROM tasker.workflow_step_edges e \
           WHERE e.from_step_uuid = $1 AND c.step_uuid = e.to_step_uuid \
           RETURNING c.step_uuid, c.pending_parents, c.state) \
         SELECT step_uuid FROM dec WHERE pending_parents = 0 AND state = 'pending' ORDER BY step_uuid",
    )
    .bind(step_uuid)
    .fetch_all(&mut *conn)
    .await?;
    enqueue_steps(conn, route, &ready, StepState::Pending, json!({})).await?;
    Ok(ready.len())
}

/// `from` → enqueued for `steps` (all of the route's task), with their messages.
pub(crate) async fn enqueue_steps(
    conn: &mut PgConnection,
    route: &TaskRoute,
    steps: &[Uuid],
    from: StepState,
    metadata: Value,
) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    from.check_transition(StepState::Enqueued)?;
    sqlx::query(
        "UPDATE tasker.workflow_steps SET state = 'enqueued', next_retry_at = NULL, updated_at = now() \
         WHERE step_uuid = ANY($1)",
    )
    .bind(steps)
    .execute(&mut *conn)
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
    let messages: Vec<StepMessage> = steps
        .iter()
        .map(|&step_uuid| StepMessage {
            task_uuid: route.task_uuid,
            step_uuid,
            correlation_id: route.correlation_id,
            priority: route.priority,
        })
        .collect();
    messaging::send_batch(conn, &route.queue, &messages, 0).await?;
    messaging::notify_wakeup(conn, &route.namespace).await?;
    Ok(())
}

/// Decide the task's state from its steps (the task row is locked by the caller).
pub(crate) async fn finalize(
    conn: &mut PgConnection,
    task_uuid: Uuid,
    current: TaskState,
) -> Result<Option<TaskState>> {
    if current.is_terminal() && current != TaskState::Error {
        return Ok(None);
    }
    let (unfinished, active, errored): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state NOT IN ('complete', 'resolved_manually')), \
                count(*) FILTER (WHERE state IN ('enqueued', 'in_progress', 'waiting_for_retry')), \
                count(*) FILTER (WHERE state = 'error') \
         FROM tasker.workflow_steps WHERE task_uuid = $1",
    )
    .bind(task_uuid)
    .fetch_one(&mut *conn)
    .await?;
    let next = if unfinished == 0 {
        TaskState::Complete
    } else if active == 0 && errored > 0 {
        TaskState::Error
    } else {
        TaskState::InProgress
    };
    if next == current || !current.can_transition_to(next) {
        return Ok(None);
    }
    transitions::record_task(
        conn,
        task_uuid,
        Some(current),
        next,
        json!({ "unfinished_steps": unfinished, "failed_steps": errored }),
    )
    .await?;
    if next.is_terminal() {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(messaging::FINALIZED_CHANNEL)
            .bind(task_uuid.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(next))
}
