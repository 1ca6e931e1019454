//! Operator controls: cancel a task, retry a failed step, or resolve it by hand. Each is one
//! transaction that follows the state tables and records who did it and why.

use std::time::Duration;

use crate::store::DbPool;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::registry::Registry;
use crate::error::{Error, Result};
use crate::messaging::StepMessage;
use crate::state::{StepState, TaskState};
use crate::store::tasks::{self, LockedTask, TaskRoute};
use crate::store::transitions::{self, StepTransition};
use crate::store::{queues, steps};

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

async fn lock_step(
    conn: &mut PgConnection,
    task_uuid: Uuid,
    step_name: &str,
) -> Result<(Uuid, StepState, i32, i32)> {
    let row = steps::lock_step(conn, task_uuid, step_name)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!("task {task_uuid} has no step named {step_name:?}"))
        })?;
    Ok((
        row.step_uuid,
        row.state.parse()?,
        row.attempts,
        row.max_attempts,
    ))
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
    pool: &DbPool,
    task_uuid: Uuid,
    who: &Intervention,
) -> Result<TaskState> {
    let mut tx = pool.begin().await?;
    let task = tasks::lock_task(&mut tx, task_uuid).await?;
    if !task.status.can_transition_to(TaskState::Cancelled) {
        return Err(Error::InvalidTransition(format!(
            "task {task_uuid} is {} and cannot be cancelled",
            task.status
        )));
    }
    let waiting = steps::cancel_waiting(&mut tx, task_uuid).await?;
    let items = waiting
        .into_iter()
        .map(|moved| {
            Ok(StepTransition {
                step_uuid: moved.step_uuid,
                task_uuid,
                from: Some(moved.from_state.parse()?),
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
    tasks::notify_finalized(&mut tx, task_uuid).await?;
    tx.commit().await?;
    Ok(TaskState::Cancelled)
}

/// Run a step in `error` again, with a fresh attempt budget (the template's `max_attempts`
/// beyond the attempts already made).
pub(crate) async fn retry_step(
    pool: &DbPool,
    registry: &Registry,
    task_uuid: Uuid,
    step_name: &str,
    who: &Intervention,
    queue_lock_timeout: Duration,
) -> Result<TaskState> {
    let mut tx = pool.begin().await?;
    let task = tasks::lock_task(&mut tx, task_uuid).await?;
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
    steps::set_max_attempts(&mut tx, step_uuid, new_max).await?;
    enqueue_steps(
        &mut tx,
        &task.route,
        &[step_uuid],
        StepState::Error,
        who.metadata(json!({ "previous_max_attempts": max_attempts, "max_attempts": new_max })),
        queue_lock_timeout,
    )
    .await?;
    let decided = tasks::finalize(&mut tx, task_uuid).await?;
    tx.commit().await?;
    Ok(decided.unwrap_or(current))
}

/// Mark a step in `error` as resolved with an operator-supplied result; its children may run.
pub(crate) async fn resolve_step_manually(
    pool: &DbPool,
    task_uuid: Uuid,
    step_name: &str,
    result: &Value,
    who: &Intervention,
    lock_timeout: Duration,
) -> Result<(TaskState, usize)> {
    let mut tx = pool.begin().await?;
    let task = tasks::lock_task(&mut tx, task_uuid).await?;
    let (step_uuid, state, _, _) = lock_step(&mut tx, task_uuid, step_name).await?;
    state.check_transition(StepState::ResolvedManually)?;
    let current = reopen(&mut tx, &task, who).await?;
    steps::mark_resolved(&mut tx, step_uuid, result).await?;
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
    let released = steps::release_children(&mut tx, &task.route, step_uuid).await?;
    send(&mut tx, &task.route, &released, lock_timeout).await?;
    let decided = tasks::finalize(&mut tx, task_uuid).await?;
    tx.commit().await?;
    Ok((decided.unwrap_or(current), released.len()))
}

/// `from` → enqueued for `steps` (all of the route's task), with their history and messages.
async fn enqueue_steps(
    conn: &mut PgConnection,
    route: &TaskRoute,
    step_uuids: &[Uuid],
    from: StepState,
    metadata: Value,
    lock_timeout: Duration,
) -> Result<()> {
    if step_uuids.is_empty() {
        return Ok(());
    }
    from.check_transition(StepState::Enqueued)?;
    let handlers = steps::mark_enqueued(conn, step_uuids).await?;
    let items: Vec<StepTransition> = step_uuids
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
        .map(|h| StepMessage {
            task_uuid: route.task_uuid,
            step_uuid: h.step_uuid,
            correlation_id: route.correlation_id,
            priority: route.priority,
            handler: Some(h.handler_class),
        })
        .collect();
    send(conn, route, &messages, lock_timeout).await
}

/// Send an operator change's step messages: a queue that cannot be written fails the request
/// (nothing is committed).
async fn send(
    conn: &mut PgConnection,
    route: &TaskRoute,
    messages: &[StepMessage],
    lock_timeout: Duration,
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    match queues::write_queue(
        conn,
        &route.queue,
        &route.namespace,
        messages,
        None,
        lock_timeout,
    )
    .await?
    {
        None => Ok(()),
        Some(message) => Err(Error::Queue {
            queue: route.queue.as_str().to_owned(),
            message,
        }),
    }
}
