//! Claiming a delivered message: enqueued → in_progress (or re-claiming an expired claim),
//! then loading what the handler needs.

use serde_json::Value;
use uuid::Uuid;

use super::event::{build_event, ClaimedRow, StepEvent};
use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::runtime::Shared;
use crate::state::StepState;

/// Why a message did not produce a claim.
#[derive(Debug)]
pub(crate) enum ClaimRefusal {
    /// The step does not exist.
    Missing,
    /// The step is in a state that this message cannot advance (terminal, pending, …).
    Stale(StepState),
    /// Another worker holds a live claim; look again after this many seconds.
    Busy(i32),
    /// The claim expired on the step's last attempt: the step must fail, not run again.
    Exhausted,
}

/// Where a claim happens: the engine's shared state and the queue the message came from.
pub(crate) struct ClaimSite<'a> {
    pub shared: &'a Shared,
    pub queue: &'a QueueName,
}

pub(crate) async fn claim(
    site: &ClaimSite<'_>,
    msg_id: i64,
    msg: &StepMessage,
) -> Result<std::result::Result<StepEvent, ClaimRefusal>> {
    let shared = site.shared;
    type Row = (
        String,
        Option<String>,
        Option<f64>,
        Option<i32>,
        Option<i32>,
        Option<i32>,
        Option<String>,
        Option<i64>,
        Option<Value>,
        Option<Uuid>,
        Option<Uuid>,
        Option<Value>,
        Option<String>,
    );
    let token = Uuid::now_v7();
    let row: Row =
        sqlx::query_as("SELECT * FROM tasker.claim_step($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(msg.step_uuid)
            .bind(msg.task_uuid)
            .bind(token)
            .bind(&shared.worker_id)
            .bind(shared.claim_grace_seconds)
            .bind(site.queue.as_str())
            .bind(msg_id)
            .bind(shared.queue_lock_timeout.as_millis().min(i32::MAX as u128) as i32)
            .fetch_one(&shared.pool)
            .await?;
    let (outcome, state, busy, attempts, max_attempts, timeout, name, named_task_id) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7);
    match outcome.as_str() {
        "missing" => return Ok(Err(ClaimRefusal::Missing)),
        "exhausted" => return Ok(Err(ClaimRefusal::Exhausted)),
        "busy" => {
            return Ok(Err(ClaimRefusal::Busy(
                busy.unwrap_or(1.0).ceil().max(1.0) as i32
            )))
        }
        "stale" => {
            let state: StepState = state.as_deref().unwrap_or("pending").parse()?;
            return Ok(Err(ClaimRefusal::Stale(state)));
        }
        _ => {}
    }
    let (Some(attempts), Some(max_attempts), Some(timeout), Some(name), Some(named_task_id)) =
        (attempts, max_attempts, timeout, name, named_task_id)
    else {
        return Err(crate::Error::InvalidInput(
            "claim_step returned an incomplete row".into(),
        ));
    };
    let dependency_results = dependency_pairs(row.11);
    let reg = shared.registry.by_id(&shared.pool, named_task_id).await?;
    let parent_trace = row
        .12
        .as_deref()
        .and_then(crate::telemetry::parse_traceparent);
    let row = ClaimedRow {
        parent_trace,
        task_uuid: msg.task_uuid,
        step_uuid: msg.step_uuid,
        token,
        msg_id,
        correlation_id: row.9.unwrap_or(msg.correlation_id),
        parent_correlation_id: row.10,
        priority: msg.priority,
        step_name: name,
        attempts: attempts as u32,
        max_attempts: max_attempts as u32,
        timeout_seconds: timeout as u32,
        context: row.8.unwrap_or(Value::Null),
        dependency_results,
    };
    Ok(Ok(build_event(Some(&shared.names), &reg, site.queue, row)))
}

/// The `[[name, result], ...]` array the claim functions return, as pairs.
pub(crate) fn dependency_pairs(value: Option<Value>) -> Vec<(String, Value)> {
    match value {
        Some(Value::Array(pairs)) => pairs
            .into_iter()
            .filter_map(|pair| match pair {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let value = kv.pop()?;
                    match kv.pop()? {
                        Value::String(k) => Some((k, value)),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Fail a step whose claim expired on its last attempt (see [`ClaimRefusal::Exhausted`]).
/// Returns the task's new state when the step's failure changed it.
pub(crate) async fn fail_exhausted(
    site: &ClaimSite<'_>,
    namespace: &str,
    msg_id: i64,
    msg: &StepMessage,
) -> Result<Option<crate::state::TaskState>> {
    let shared = site.shared;
    let (failed, task_state): (bool, Option<String>) =
        sqlx::query_as("SELECT * FROM tasker.fail_exhausted_claim($1, $2, $3, $4, $5, $6)")
            .bind(msg.task_uuid)
            .bind(msg.step_uuid)
            .bind(site.queue.as_str())
            .bind(namespace)
            .bind(msg_id)
            .bind(shared.queue_lock_timeout.as_millis().min(i32::MAX as u128) as i32)
            .fetch_one(&shared.pool)
            .await?;
    if failed {
        tracing::warn!(step_uuid = %msg.step_uuid, correlation_id = %msg.correlation_id,
            "a step's claim expired on its last attempt; the step failed");
    }
    task_state.as_deref().map(str::parse).transpose()
}
