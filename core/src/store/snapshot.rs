//! Read models: a task with its steps and transition history, as operators and specs see it.

use crate::store::DbPool;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::Result;
use crate::state::TaskState;

/// One transition row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TransitionView {
    pub from_state: Option<String>,
    pub to_state: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

/// A step with its state, attempts, result and history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepView {
    pub uuid: Uuid,
    pub name: String,
    pub handler_class: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub result: Option<Value>,
    pub metadata: Option<Value>,
    pub error: Option<Value>,
    pub next_retry_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub dependencies: Vec<String>,
    #[sqlx(skip)]
    pub transitions: Vec<TransitionView>,
}

/// A task with everything an operator needs to see.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TaskView {
    pub uuid: Uuid,
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub status: String,
    pub context: Value,
    pub correlation_id: Uuid,
    pub parent_correlation_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub priority: i16,
    /// The task's W3C trace context (its trace id is the second field).
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub steps: Vec<StepView>,
    #[sqlx(skip)]
    pub transitions: Vec<TransitionView>,
}

/// A dependency edge: the child step and its parent's name.
#[derive(sqlx::FromRow)]
struct EdgeRow {
    to_step_uuid: Uuid,
    parent_name: String,
}

/// A step transition with the step it belongs to.
#[derive(sqlx::FromRow)]
struct StepTransitionRow {
    step_uuid: Uuid,
    #[sqlx(flatten)]
    transition: TransitionView,
}

/// Load a task with its steps (in template order) and both histories.
pub async fn find_task(pool: &DbPool, task_uuid: Uuid) -> Result<Option<TaskView>> {
    let task: Option<TaskView> = crate::store::query_as(
        "SELECT t.task_uuid AS uuid, t.namespace, n.name, n.version, t.status, t.context, \
                t.correlation_id, t.parent_correlation_id, t.idempotency_key, t.priority, \
                t.traceparent, t.created_at, t.updated_at, t.completed_at \
         FROM tasker.tasks t JOIN tasker.named_tasks n USING (named_task_id) \
         WHERE t.task_uuid = $1",
    )
    .bind(task_uuid)
    .fetch_optional(pool)
    .await?;
    let Some(mut task) = task else {
        return Ok(None);
    };
    let mut steps: Vec<StepView> = crate::store::query_as(
        "SELECT step_uuid AS uuid, name, handler_class, state, attempts, max_attempts, \
                results AS result, result_metadata AS metadata, last_error AS error, next_retry_at \
         FROM tasker.workflow_steps WHERE task_uuid = $1 ORDER BY position",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;
    let edges: Vec<EdgeRow> = crate::store::query_as(
        "SELECT e.to_step_uuid, p.name AS parent_name FROM tasker.workflow_step_edges e \
         JOIN tasker.workflow_steps p ON p.step_uuid = e.from_step_uuid \
         WHERE p.task_uuid = $1 ORDER BY p.position",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;
    let step_transitions: Vec<StepTransitionRow> = crate::store::query_as(
        "SELECT step_uuid, from_state, to_state, metadata, created_at \
         FROM tasker.workflow_step_transitions WHERE task_uuid = $1 \
         ORDER BY step_uuid, id",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;
    task.transitions = crate::store::query_as(
        "SELECT from_state, to_state, metadata, created_at FROM tasker.task_transitions \
         WHERE task_uuid = $1 ORDER BY id",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;
    for step in &mut steps {
        step.dependencies = edges
            .iter()
            .filter(|e| e.to_step_uuid == step.uuid)
            .map(|e| e.parent_name.clone())
            .collect();
        step.transitions = step_transitions
            .iter()
            .filter(|t| t.step_uuid == step.uuid)
            .map(|t| t.transition.clone())
            .collect();
    }
    task.steps = steps;
    Ok(Some(task))
}

/// The current status of a task, if it exists.
pub async fn task_status(pool: &DbPool, task_uuid: Uuid) -> Result<Option<TaskState>> {
    let status: Option<String> =
        crate::store::query_scalar("SELECT status FROM tasker.tasks WHERE task_uuid = $1")
            .bind(task_uuid)
            .fetch_optional(pool)
            .await?;
    status.map(|s| s.parse()).transpose()
}

/// A task without its steps, for listings.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TaskSummary {
    pub uuid: Uuid,
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub status: String,
    pub correlation_id: Uuid,
    pub parent_correlation_id: Option<Uuid>,
    pub priority: i16,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Tasks sharing a correlation id and/or a parent correlation id (a chain of workflows),
/// oldest first.
pub async fn find_tasks(
    pool: &DbPool,
    correlation_id: Option<Uuid>,
    parent_correlation_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TaskSummary>> {
    if correlation_id.is_none() && parent_correlation_id.is_none() {
        return Err(crate::Error::InvalidInput(
            "give a correlation_id and/or a parent_correlation_id".into(),
        ));
    }
    let rows = crate::store::query_as(
        "SELECT t.task_uuid AS uuid, t.namespace, n.name, n.version, t.status, t.correlation_id, \
                t.parent_correlation_id, t.priority, t.created_at, t.completed_at \
         FROM tasker.tasks t JOIN tasker.named_tasks n USING (named_task_id) \
         WHERE ($1::uuid IS NULL OR t.correlation_id = $1) \
           AND ($2::uuid IS NULL OR t.parent_correlation_id = $2) \
         ORDER BY t.created_at, t.task_uuid LIMIT $3",
    )
    .bind(correlation_id)
    .bind(parent_correlation_id)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
