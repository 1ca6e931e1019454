//! Operator controls: cancel a task, retry a failed step, or resolve it by hand. Each is one
//! transaction that follows the state tables and records who did it and why.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::registry::Registry;
use super::results::{enqueue_steps, finalize, release_children, TaskRoute};
use crate::error::{Error, Result};
use crate::messaging::{self, queue::QueueName};
use crate::state::{StepState, TaskState};
use crate::store::transitions::{self, StepTransition};

/// Who asked for a change and why; stored in the transition metadata.
#[derive(Debug, Clone, Default)]
pub struct Intervention {
    pub actor: Option<String>,
    pub reason: Option<String>,
}

impl Intervention {
    fn metadata(&self, extra: Value) -> Value {
        let mut m = json!({ "actor": self.actor, "reason": self.reason, "operator": true });
        if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
            m.extend(extra);
        }
        m
    }
}

struct LockedTask {
    status: TaskState,
    route: TaskRoute,
    named_task_id: i64,
}

async fn lock_task(conn: &mut PgConnection, task_uuid: Uuid) -> Result<LockedTask> {
    let row: Option<(String, String, Uuid, i64, i16)> = sqlx::query_as(
        "SELECT status, namespace, correlation_id, named_task_id, priority FROM tasker.tasks \
         WHERE task_uuid = $1 FOR UPDATE",
    )
    .bind(task_uuid)
    .fetch_optional(&mut *conn)
    .await?;
    let (status, namespace, correlation_id, named_task_id, priority) =
        row.ok_or_else(|| Error::NotFound(format!("no task {task_uuid}")))?;
    Ok(LockedTask {
        status: status.parse()?,
        route: TaskRoute {
            task_uuid,
            correlation_id,
            queue: QueueName::for_namespace(&namespace)?,
            namespace: Arc::from(namespace),
            priority,
        },
        named_task_id,
    })
}

async fn lock_step(
    conn: &mut PgConnection,
    task_uuid: Uuid,
    step_name: &str,
) -> Result<(Uuid, StepState, i32, i32)> {
    let row: Option<(Uuid, String, i32, i32)> = sqlx::query_as(
        "SELECT step_uuid, state, attempts, max_attempts FROM tasker.workflow_steps \
         WHERE task_uuid = $1 AND name = $2 FOR UPDATE",
    )
    .bind(task_uuid)
    .bind(step_name)
    .fetch_optional(&mut *conn)
    .await?;
    let (uuid, state, attempts, max_attempts) = row.ok_or_else(|| {
        Error::NotFound(format!("task {task_uuid} has no step named {step_name:?}"))
    })?;
    Ok((uuid, state.parse()?, attempts, max_attempts))
}

/// Move a task that an operator touched out of `error` before deciding its state again.
async fn reopen(
    conn: &mut PgConnection,
    task: &LockedTask,
    who: &Intervention,
) -> Result<TaskState> {
    match task.status {
        TaskState::Error => {
            transitions::record_task(
                conn,
                task.route.task_uuid,
                Some(TaskState::Error),
                TaskState::InProgress,
                who.metadata(json!({})),
            )
            .await?;
            Ok(TaskState::InProgress)
        }
        TaskState::InProgress | TaskState::Pending => Ok(task.status),
        other => Err(Error::InvalidTransition(format!(
            "task {} is {other}; its steps cannot change",
            task.route.task_uuid
        ))),
    }
}

/// Cancel a task: no further step starts; steps waiting to run become `cancelled`; a running
/// step finishes and its result is recorded, but no child starts.
pub(crate) async fn cancel_task(
    pool: &PgPool,
    task_uuid: Uuid,
    who: &Intervention,
) -> Result<TaskState> {
    let mut tx = pool.begin().await?;
    let task = lock_task(&mut tx, task_uuid).await?;
    if !task.status.can_transition_to(TaskState::Cancelled) {
        return Err(Error::InvalidTransition(format!(
            "task {task_uuid} is {} and cannot be cancelled",
            task.status
        )));
    }
    let waiting: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE tasker.workflow_steps s SET state = 'cancelled', next_retry_at = NULL, updated_at = now() \
         FROM tasker.workflow_steps old \
         WHERE s.task_uuid = $1 AND old.step_uuid = s.step_uuid \
           AND s.state IN ('pending', 'enqueued', 'waiting_for_retry') \
         RETURNING s.step_uuid, old.state",
    )
    .bind(task_uuid)
    .fetch_all(&mut *tx)
    .await?;
    let items = waiting
        .into_iter()
        .map(|(step_uuid, from)| {
            Ok(StepTransition {
                step_uuid,
                task_uuid,
                from: Some(from.parse()?),
                to: StepState::Cancelled,
                metadata: who.metadata(json!({})),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    transitions::record_steps(&mut tx, &items).await?;
    transitions::record_task(
        &mut tx,
        task_uuid,
        Some(task.status),
        TaskState::Cancelled,
        who.metadata(json!({ "cancelled_steps": items.len() })),
    )
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(messaging::FINALIZED_CHANNEL)
        .bind(task_uuid.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(TaskState::Cancelled)
}

/// Run a step in `error` again, with a fresh attempt budget (the template's `max_attempts`
/// beyond the attempts already made).
pub(crate) async fn retry_step(
    pool: &PgPool,
    registry: &Registry,
    task_uuid: Uuid,
    step_name: &str,
    who: &Intervention,
    queue_lock_timeout: std::time::Duration,
) -> Result<TaskState> {
    let mut tx = pool.begin().await?;
    let task = lock_task(&mut tx, task_uuid).await?;
    let (step_uuid, state, attempts, max_attempts) =
        lock_step(&mut tx, task_uuid, step_name).await?;
    if state != StepState::Error {
        return Err(Error::InvalidTransition(format!(
            "step {step_name} is {state}; only a step in error can be retried"
        )));
    }
    let current = reopen(&mut tx, &task, who).await?;
    let reg = registry.by_id(pool, task.named_task_id).await?;
    let budget = reg
        .template
        .steps
        .iter()
        .find(|s| &*s.name == step_name)
        .map_or(1, |s| s.retry.max_attempts as i32);
    let new_max = attempts + budget;
    sqlx::query("UPDATE tasker.workflow_steps SET max_attempts = $2 WHERE step_uuid = $1")
        .bind(step_uuid)
        .bind(new_max)
        .execute(&mut *tx)
        .await?;
    enqueue_steps(
        &mut tx,
        &task.route,
        &[step_uuid],
        StepState::Error,
        who.metadata(json!({ "previous_max_attempts": max_attempts, "max_attempts": new_max })),
        queue_lock_timeout,
    )
    .await?;
    let decided = finalize(&mut tx, task_uuid, current).await?;
    tx.commit().await?;
    Ok(decided.unwrap_or(current))
}

/// Mark a step in `error` as resolved with an operator-supplied result; its children may run.
pub(crate) async fn resolve_step_manually(
    pool: &PgPool,
    task_uuid: Uuid,
    step_name: &str,
    result: &Value,
    who: &Intervention,
) -> Result<(TaskState, usize)> {
    let mut tx = pool.begin().await?;
    let task = lock_task(&mut tx, task_uuid).await?;
    let (step_uuid, state, _, _) = lock_step(&mut tx, task_uuid, step_name).await?;
    state.check_transition(StepState::ResolvedManually)?;
    let current = reopen(&mut tx, &task, who).await?;
    sqlx::query(
        "UPDATE tasker.workflow_steps SET state = 'resolved_manually', results = $2, updated_at = now() \
         WHERE step_uuid = $1",
    )
    .bind(step_uuid)
    .bind(result)
    .execute(&mut *tx)
    .await?;
    transitions::record_steps(
        &mut tx,
        &[StepTransition {
            step_uuid,
            task_uuid,
            from: Some(state),
            to: StepState::ResolvedManually,
            metadata: who.metadata(json!({})),
        }],
    )
    .await?;
    let released = release_children(&mut tx, &task.route, step_uuid).await?;
    let decided = finalize(&mut tx, task_uuid, current).await?;
    tx.commit().await?;
    Ok((decided.unwrap_or(current), released))
}
