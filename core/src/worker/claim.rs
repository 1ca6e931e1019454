//! Claiming a delivered message: enqueued → in_progress (or re-claiming an expired claim),
//! then loading what the handler needs.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::event::{build_event, ClaimedRow, StepEvent};
use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::runtime::Shared;
use crate::state::StepState;
use crate::store::transitions::{self, StepTransition};

/// Why a message did not produce a claim.
#[derive(Debug)]
pub(crate) enum ClaimRefusal {
    /// The step does not exist.
    Missing,
    /// The step is in a state that this message cannot advance (terminal, pending, …).
    Stale(StepState),
    /// Another worker holds a live claim; look again after this many seconds.
    Busy(i32),
}

/// Where a claim happens: the engine's shared state and the queue the message came from.
pub(crate) struct ClaimSite<'a> {
    pub shared: &'a Shared,
    pub queue: &'a QueueName,
    /// [`crate::messaging::hide_until_sql`] for the queue.
    pub hide_until_sql: &'a str,
}

pub(crate) async fn claim(
    site: &ClaimSite<'_>,
    msg_id: i64,
    msg: &StepMessage,
) -> Result<std::result::Result<StepEvent, ClaimRefusal>> {
    let (pool, registry, queue) = (&site.shared.pool, &site.shared.registry, site.queue);
    let worker_id = site.shared.worker_id.as_str();
    let mut tx = pool.begin().await?;
    let row: Option<(String, Option<f64>, Uuid)> = sqlx::query_as(
        "SELECT state, extract(epoch FROM claim_expires_at - now())::float8, task_uuid \
         FROM tasker.workflow_steps WHERE step_uuid = $1 FOR UPDATE",
    )
    .bind(msg.step_uuid)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((state, remaining, task_uuid)) = row else {
        return Ok(Err(ClaimRefusal::Missing));
    };
    if task_uuid != msg.task_uuid {
        return Ok(Err(ClaimRefusal::Missing));
    }
    let state: StepState = state.parse()?;
    match state {
        StepState::Enqueued => {}
        StepState::InProgress => match remaining {
            Some(r) if r > 0.0 => return Ok(Err(ClaimRefusal::Busy(r.ceil() as i32))),
            _ => {}
        },
        other => return Ok(Err(ClaimRefusal::Stale(other))),
    }

    let token = Uuid::now_v7();
    type Claimed = (i32, i32, i32, String, DateTime<Utc>);
    let (attempts, max_attempts, timeout_seconds, name, expires): Claimed = sqlx::query_as(
        "UPDATE tasker.workflow_steps SET state = 'in_progress', attempts = attempts + 1, \
           claim_token = $2, claimed_by = $3, updated_at = now(), \
           claim_expires_at = now() + make_interval(secs => timeout_seconds + $4) \
         WHERE step_uuid = $1 \
         RETURNING attempts, max_attempts, timeout_seconds, name, claim_expires_at",
    )
    .bind(msg.step_uuid)
    .bind(token)
    .bind(worker_id)
    .bind(site.shared.claim_grace_seconds)
    .fetch_one(&mut *tx)
    .await?;
    // The message reappears exactly when this claim expires: if this process dies, another
    // one takes the step over after the step's own timeout (plus grace), not a queue-wide one.
    sqlx::query(site.hide_until_sql)
        .bind(msg_id)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
    let mut metadata = json!({ "attempt": attempts, "worker": worker_id });
    if state == StepState::InProgress {
        metadata["reclaimed"] = json!(true);
    }
    transitions::record_steps(
        &mut tx,
        &[StepTransition {
            step_uuid: msg.step_uuid,
            task_uuid,
            from: Some(state),
            to: StepState::InProgress,
            metadata,
        }],
    )
    .await?;
    let (named_task_id, context, correlation_id, parent_correlation_id): (
        i64,
        serde_json::Value,
        Uuid,
        Option<Uuid>,
    ) = sqlx::query_as(
        "SELECT named_task_id, context, correlation_id, parent_correlation_id \
         FROM tasker.tasks WHERE task_uuid = $1",
    )
    .bind(task_uuid)
    .fetch_one(&mut *tx)
    .await?;
    let dependency_results: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "WITH RECURSIVE ancestors(step_uuid) AS ( \
           SELECT from_step_uuid FROM tasker.workflow_step_edges WHERE to_step_uuid = $1 \
           UNION \
           SELECT e.from_step_uuid FROM tasker.workflow_step_edges e \
             JOIN ancestors a ON e.to_step_uuid = a.step_uuid) \
         SELECT s.name, coalesce(s.results, 'null'::jsonb) \
         FROM tasker.workflow_steps s JOIN ancestors USING (step_uuid)",
    )
    .bind(msg.step_uuid)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    let reg = registry.by_id(pool, named_task_id).await?;
    let row = ClaimedRow {
        task_uuid,
        step_uuid: msg.step_uuid,
        token,
        msg_id,
        correlation_id,
        parent_correlation_id,
        priority: msg.priority,
        step_name: name,
        attempts: attempts as u32,
        max_attempts: max_attempts as u32,
        timeout_seconds: timeout_seconds as u32,
        context,
        dependency_results,
    };
    Ok(Ok(build_event(Some(&site.shared.names), &reg, queue, row)))
}
