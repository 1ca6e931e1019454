//! Append-only transition history. The previous row loses `most_recent` before the new row is
//! inserted (two statements: a partial unique index guarantees one current row per entity).

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;
use crate::state::{StepState, TaskState};

/// One step transition to record.
pub(crate) struct StepTransition {
    pub step_uuid: Uuid,
    pub task_uuid: Uuid,
    pub from: Option<StepState>,
    pub to: StepState,
    pub metadata: Value,
}

/// Record transitions for distinct steps.
pub(crate) async fn record_steps(conn: &mut PgConnection, items: &[StepTransition]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let uuids: Vec<Uuid> = items.iter().map(|t| t.step_uuid).collect();
    let previous: Vec<(Uuid, i32)> = sqlx::query_as(
        "UPDATE tasker.workflow_step_transitions SET most_recent = false \
         WHERE step_uuid = ANY($1) AND most_recent RETURNING step_uuid, sort_key",
    )
    .bind(&uuids)
    .fetch_all(&mut *conn)
    .await?;
    let sort_keys: Vec<i32> = items
        .iter()
        .map(|t| {
            previous
                .iter()
                .find(|(u, _)| *u == t.step_uuid)
                .map_or(1, |(_, k)| k + 1)
        })
        .collect();
    let tasks: Vec<Uuid> = items.iter().map(|t| t.task_uuid).collect();
    let froms: Vec<Option<&str>> = items
        .iter()
        .map(|t| t.from.map(StepState::as_str))
        .collect();
    let tos: Vec<&str> = items.iter().map(|t| t.to.as_str()).collect();
    let metas: Vec<&Value> = items.iter().map(|t| &t.metadata).collect();
    sqlx::query(
        "INSERT INTO tasker.workflow_step_transitions \
           (step_uuid, task_uuid, from_state, to_state, metadata, sort_key, most_recent) \
         SELECT s, t, f, o, m, k, true \
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::int[]) \
           AS i(s, t, f, o, m, k)",
    )
    .bind(&uuids)
    .bind(&tasks)
    .bind(&froms)
    .bind(&tos)
    .bind(&metas)
    .bind(&sort_keys)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Record one task transition and update the task's current status
/// (`tasker.record_task_transition`: one definition, one round trip).
pub(crate) async fn record_task(
    conn: &mut PgConnection,
    task_uuid: Uuid,
    from: Option<TaskState>,
    to: TaskState,
    metadata: Value,
) -> Result<()> {
    sqlx::query("SELECT tasker.record_task_transition($1, $2, $3, $4)")
        .bind(task_uuid)
        .bind(from.map(TaskState::as_str))
        .bind(to.as_str())
        .bind(&metadata)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
