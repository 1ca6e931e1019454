//! Append-only transition history: one inserted row per state change, never updated; rows are
//! ordered by `id`. The operator paths here (and `tasker.fail_exhausted_claim`) write through
//! the SQL functions `tasker.record_step_transition` / `tasker.record_task_transition`; the
//! set-based hot-path functions (`create_tasks`, `claim_steps`, `apply_step_results`,
//! `release_children`, `finalize_tasks`) insert their rows in bulk with the same columns.

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

/// Record transitions for distinct steps: one statement that applies
/// `tasker.record_step_transition` to each item.
pub(crate) async fn record_steps(conn: &mut PgConnection, items: &[StepTransition]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let uuids: Vec<Uuid> = items.iter().map(|t| t.step_uuid).collect();
    let tasks: Vec<Uuid> = items.iter().map(|t| t.task_uuid).collect();
    let froms: Vec<Option<&str>> = items
        .iter()
        .map(|t| t.from.map(StepState::as_str))
        .collect();
    let tos: Vec<&str> = items.iter().map(|t| t.to.as_str()).collect();
    let metas: Vec<&Value> = items.iter().map(|t| &t.metadata).collect();
    crate::store::query(
        "SELECT tasker.record_step_transition(s, t, f, o, m) \
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[]) AS i(s, t, f, o, m)",
    )
    .bind(&uuids)
    .bind(&tasks)
    .bind(&froms)
    .bind(&tos)
    .bind(&metas)
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
    crate::store::query("SELECT tasker.record_task_transition($1, $2, $3, $4)")
        .bind(task_uuid)
        .bind(from.map(TaskState::as_str))
        .bind(to.as_str())
        .bind(&metadata)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
