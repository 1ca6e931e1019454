//! Read models: a task with its steps and transition history, as operators and specs see it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;
use crate::state::TaskState;

/// One transition row.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionView {
    pub from_state: Option<String>,
    pub to_state: String,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

/// A step with its state, attempts, result and history.
#[derive(Debug, Clone, Serialize)]
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
    pub dependencies: Vec<String>,
    pub transitions: Vec<TransitionView>,
}

/// A task with everything an operator needs to see.
#[derive(Debug, Clone, Serialize)]
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepView>,
    pub transitions: Vec<TransitionView>,
}

type TaskRow = (
    Uuid,
    String,
    String,
    String,
    String,
    Value,
    Uuid,
    Option<Uuid>,
    Option<String>,
    i16,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

type StepRow = (
    Uuid,
    String,
    String,
    String,
    i32,
    i32,
    Option<Value>,
    Option<Value>,
    Option<Value>,
    Option<DateTime<Utc>>,
);

type StepTransitionRow = (Uuid, Option<String>, String, Value, DateTime<Utc>);

/// Load a task with its steps (in template order) and both histories.
pub async fn find_task(pool: &PgPool, task_uuid: Uuid) -> Result<Option<TaskView>> {
    let row: Option<TaskRow> = sqlx::query_as(
        "SELECT t.task_uuid, t.namespace, n.name, n.version, t.status, t.context, t.correlation_id, \
                t.parent_correlation_id, t.idempotency_key, t.priority, t.created_at, t.updated_at, \
                t.completed_at \
         FROM tasker.tasks t JOIN tasker.named_tasks n USING (named_task_id) \
         WHERE t.task_uuid = $1",
    )
    .bind(task_uuid)
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };

    let steps: Vec<StepRow> = sqlx::query_as(
        "SELECT step_uuid, name, handler_class, state, attempts, max_attempts, results, \
                result_metadata, last_error, next_retry_at \
         FROM tasker.workflow_steps WHERE task_uuid = $1 ORDER BY position",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;
    let edges: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT e.to_step_uuid, p.name FROM tasker.workflow_step_edges e \
         JOIN tasker.workflow_steps p ON p.step_uuid = e.from_step_uuid \
         WHERE p.task_uuid = $1 ORDER BY p.position",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;
    let step_transitions: Vec<StepTransitionRow> = sqlx::query_as(
        "SELECT step_uuid, from_state, to_state, metadata, created_at \
             FROM tasker.workflow_step_transitions WHERE task_uuid = $1 \
             ORDER BY step_uuid, id",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;
    let task_transitions: Vec<(Option<String>, String, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT from_state, to_state, metadata, created_at FROM tasker.task_transitions \
         WHERE task_uuid = $1 ORDER BY id",
    )
    .bind(task_uuid)
    .fetch_all(pool)
    .await?;

    let steps = steps
        .into_iter()
        .map(|s| StepView {
            dependencies: edges
                .iter()
                .filter(|(to, _)| *to == s.0)
                .map(|(_, n)| n.clone())
                .collect(),
            transitions: step_transitions
                .iter()
                .filter(|t| t.0 == s.0)
                .map(|t| TransitionView {
                    from_state: t.1.clone(),
                    to_state: t.2.clone(),
                    metadata: t.3.clone(),
                    created_at: t.4,
                })
                .collect(),
            uuid: s.0,
            name: s.1,
            handler_class: s.2,
            state: s.3,
            attempts: s.4,
            max_attempts: s.5,
            result: s.6,
            metadata: s.7,
            error: s.8,
            next_retry_at: s.9,
        })
        .collect();

    Ok(Some(TaskView {
        uuid: r.0,
        namespace: r.1,
        name: r.2,
        version: r.3,
        status: r.4,
        context: r.5,
        correlation_id: r.6,
        parent_correlation_id: r.7,
        idempotency_key: r.8,
        priority: r.9,
        created_at: r.10,
        updated_at: r.11,
        completed_at: r.12,
        steps,
        transitions: task_transitions
            .into_iter()
            .map(|t| TransitionView {
                from_state: t.0,
                to_state: t.1,
                metadata: t.2,
                created_at: t.3,
            })
            .collect(),
    }))
}

/// The current status of a task, if it exists.
pub async fn task_status(pool: &PgPool, task_uuid: Uuid) -> Result<Option<TaskState>> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM tasker.tasks WHERE task_uuid = $1")
            .bind(task_uuid)
            .fetch_optional(pool)
            .await?;
    status.map(|s| s.parse()).transpose()
}

/// A task without its steps, for listings.
#[derive(Debug, Clone, Serialize)]
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

type SummaryRow = (
    Uuid,
    String,
    String,
    String,
    String,
    Uuid,
    Option<Uuid>,
    i16,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// Tasks sharing a correlation id and/or a parent correlation id (a chain of workflows),
/// oldest first.
pub async fn find_tasks(
    pool: &PgPool,
    correlation_id: Option<Uuid>,
    parent_correlation_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TaskSummary>> {
    if correlation_id.is_none() && parent_correlation_id.is_none() {
        return Err(crate::Error::InvalidInput(
            "give a correlation_id and/or a parent_correlation_id".into(),
        ));
    }
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT t.task_uuid, t.namespace, n.name, n.version, t.status, t.correlation_id, \
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
    Ok(rows
        .into_iter()
        .map(|r| TaskSummary {
            uuid: r.0,
            namespace: r.1,
            name: r.2,
            version: r.3,
            status: r.4,
            correlation_id: r.5,
            parent_correlation_id: r.6,
            priority: r.7,
            created_at: r.8,
            completed_at: r.9,
        })
        .collect())
}
