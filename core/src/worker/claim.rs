//! Claiming steps from a queue: many messages read and their steps moved enqueued →
//! in_progress (or an expired claim taken over) in one statement, with what each handler needs.

use serde_json::Value;
use uuid::Uuid;

use super::event::{build_event, ClaimedRow, StepEvent};
use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::runtime::Shared;

/// Where a claim happens: the engine's shared state and the queue the messages come from.
pub(crate) struct ClaimSite<'a> {
    pub shared: &'a Shared,
    pub queue: &'a QueueName,
}

/// What the handler breakers allow for one batch of claims.
pub(crate) struct HandlerGate<'a> {
    /// Handlers whose breaker is open: their steps are postponed, attempts untouched.
    pub blocked: &'a [String],
    /// Handlers whose half-open breaker admitted one trial: one step each.
    pub trials: &'a [String],
    /// How long a postponed message stays hidden.
    pub postpone_seconds: i32,
}

/// What [`claim_batch`] did with the messages it read.
#[derive(Debug, Default)]
pub(crate) struct ClaimedBatch {
    pub events: Vec<StepEvent>,
    /// Messages archived, with the reason.
    pub archived: Vec<(i64, String)>,
    /// Claims that expired on their step's last attempt: (msg_id, message).
    pub exhausted: Vec<(i64, StepMessage)>,
    pub postponed: usize,
}

/// The columns every claiming function returns for a claimed step (`tasker.claim_steps`,
/// `tasker.apply_step_results`, `tasker.create_tasks`): the one place they become a
/// [`ClaimedChild`].
#[derive(sqlx::FromRow, Debug)]
pub(crate) struct ClaimColumns {
    pub task_uuid: Option<Uuid>,
    pub step_uuid: Option<Uuid>,
    pub token: Option<Uuid>,
    pub msg_id: Option<i64>,
    pub priority: Option<i16>,
    pub attempts: Option<i32>,
    pub max_attempts: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub step_name: Option<String>,
    pub named_task_id: Option<i64>,
    pub context: Option<Value>,
    pub correlation_id: Option<Uuid>,
    pub parent_correlation_id: Option<Uuid>,
    pub dependency_results: Option<Value>,
    pub traceparent: Option<String>,
}

/// A step claimed for this process, as the database returned it.
#[derive(Debug)]
pub(crate) struct ClaimedChild {
    pub queue: String,
    pub named_task_id: i64,
    pub parent_trace: Option<String>,
    pub row: ClaimedRow,
}

impl ClaimColumns {
    /// The claimed step of a 'claimed' row (None if the row lacks what a claim must have).
    pub fn into_child(self, queue: String) -> Option<ClaimedChild> {
        Some(ClaimedChild {
            queue,
            named_task_id: self.named_task_id?,
            parent_trace: self.traceparent,
            row: ClaimedRow {
                parent_trace: None,
                task_uuid: self.task_uuid?,
                step_uuid: self.step_uuid?,
                token: self.token?,
                msg_id: self.msg_id?,
                correlation_id: self.correlation_id?,
                parent_correlation_id: self.parent_correlation_id,
                priority: self.priority.unwrap_or(0),
                step_name: self.step_name?,
                attempts: self.attempts? as u32,
                max_attempts: self.max_attempts? as u32,
                timeout_seconds: self.timeout_seconds? as u32,
                context: self.context.unwrap_or(Value::Null),
                dependency_results: dependency_pairs(self.dependency_results),
            },
        })
    }
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    kind: String,
    reason: Option<String>,
    #[sqlx(flatten)]
    claim: ClaimColumns,
}

/// Read up to `qty` messages of the site's queue and claim their steps, in one statement
/// (`tasker.claim_steps`, which also settles every message it cannot claim), on the queue pool.
pub(crate) async fn claim_batch(
    site: &ClaimSite<'_>,
    qty: usize,
    gate: &HandlerGate<'_>,
    read_visibility_seconds: i32,
) -> Result<ClaimedBatch> {
    let shared = site.shared;
    let rows: Vec<ClaimRow> =
        sqlx::query_as("SELECT * FROM tasker.claim_steps($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(site.queue.as_str())
            .bind(qty.min(i32::MAX as usize) as i32)
            .bind(&shared.worker_id)
            .bind(shared.claim_grace_seconds)
            .bind(read_visibility_seconds)
            .bind(gate.blocked)
            .bind(gate.trials)
            .bind(gate.postpone_seconds)
            // The queue pool: its statements wait at most queue_lock_timeout for a lock, so a
            // locked queue table fails fast (and opens that queue's breaker).
            .fetch_all(&shared.queue_pool)
            .await?;
    let mut out = ClaimedBatch::default();
    for row in rows {
        let msg_id = row.claim.msg_id.unwrap_or_default();
        match row.kind.as_str() {
            "archived" => out.archived.push((msg_id, row.reason.unwrap_or_default())),
            "postponed" => out.postponed += 1,
            "exhausted" => {
                if let (Some(step_uuid), Some(task_uuid)) =
                    (row.claim.step_uuid, row.claim.task_uuid)
                {
                    out.exhausted.push((
                        msg_id,
                        StepMessage {
                            task_uuid,
                            step_uuid,
                            correlation_id: Uuid::nil(),
                            priority: 0,
                            handler: None,
                        },
                    ));
                }
            }
            "claimed" => {
                let Some(child) = row.claim.into_child(site.queue.as_str().to_owned()) else {
                    continue;
                };
                let reg = shared
                    .registry
                    .by_id(&shared.pool, child.named_task_id)
                    .await?;
                let mut claimed = child.row;
                claimed.parent_trace = child
                    .parent_trace
                    .as_deref()
                    .and_then(crate::telemetry::parse_traceparent);
                out.events
                    .push(build_event(Some(&shared.names), &reg, site.queue, claimed));
            }
            _ => {}
        }
    }
    Ok(out)
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
