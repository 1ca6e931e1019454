//! Applying step outcomes, in batches: one transaction records each result or failure, moves
//! its step, settles its message, releases children whose parents are now all done, finalizes
//! the task when nothing is left, and claims released children for the applying process. Task
//! rows are locked in task order, so sibling completions of one task apply one after another
//! (a join is released exactly once, finalization sees every step) and concurrent batches
//! cannot deadlock.

use std::time::Duration;

use crate::store::DbPool;
use serde_json::Value;
use uuid::Uuid;

use super::backoff;
use crate::error::Result;
use crate::state::{StepState, TaskState};
use crate::store::steps::{self, ClaimSettings, ClaimedStep, OutcomeRecord};
use crate::worker::{ClaimTicket, FailureKind, StepOutcome};

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

/// One outcome of a batch, with whether its queue may be written (its breaker admitted it).
pub(crate) struct BatchItem<'a> {
    pub ticket: &'a ClaimTicket,
    pub outcome: &'a StepOutcome,
    pub queue_usable: bool,
}

/// What [`apply_batch`] did: one report per item (in the items' order), each written queue's
/// error (None: written), and the children claimed for this process.
#[derive(Debug)]
pub(crate) struct BatchApplied {
    pub reports: Vec<ApplyReport>,
    pub queues: Vec<(String, Option<String>)>,
    pub claimed: Vec<ClaimedStep>,
}

/// Apply a batch of outcomes in one transaction and one round trip
/// (`tasker.apply_step_results`): each is checked against its claim token, recorded, its step
/// moved, its children released, its task finalized; each usable queue is written once, and
/// released children are claimed for this process as [`ClaimSettings`] allows. A late outcome
/// (stale token) is reported [`ApplyReport::Discarded`].
pub(crate) async fn apply_batch(
    pool: &DbPool,
    items: &[BatchItem<'_>],
    claims: &ClaimSettings<'_>,
    lock_timeout: Duration,
    sender: &str,
) -> Result<BatchApplied> {
    let n = items.len();
    let records: Vec<OutcomeRecord<'_>> = items.iter().map(record).collect();
    let rows = steps::apply_step_results(pool, &records, claims, lock_timeout, sender).await?;
    let mut reports: Vec<Option<ApplyReport>> = (0..n).map(|_| None).collect();
    let position: std::collections::HashMap<Uuid, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.step_uuid, i))
        .collect();
    let mut written = Vec::new();
    let mut claimed = Vec::new();
    for row in rows {
        match row.kind.as_str() {
            "outcome" => {
                let Some(&i) = row.claim.step_uuid.as_ref().and_then(|s| position.get(s)) else {
                    continue;
                };
                reports[i] = Some(if row.outcome.as_deref() == Some("applied") {
                    ApplyReport::Applied {
                        step_state: row.step_state.as_deref().unwrap_or("complete").parse()?,
                        enqueued_children: row.enqueued_children.unwrap_or(0).max(0) as usize,
                        task_state: row.task_state.as_deref().map(str::parse).transpose()?,
                        retry_in: row
                            .retry_in_ms
                            .map(|ms| crate::limits::clamped_seconds(ms / 1000.0, Duration::MAX)),
                    }
                } else {
                    tracing::info!(step_uuid = ?row.claim.step_uuid,
                        "discarding a result whose claim is no longer current");
                    ApplyReport::Discarded
                });
            }
            "queue" => written.push((row.queue.unwrap_or_default(), row.queue_error)),
            "claimed" => {
                if let Some(child) = row.claim.into_claimed(row.queue.unwrap_or_default()) {
                    claimed.push(child);
                }
            }
            _ => {}
        }
    }
    Ok(BatchApplied {
        reports: reports
            .into_iter()
            .map(|r| r.unwrap_or(ApplyReport::Discarded))
            .collect(),
        queues: written,
        claimed,
    })
}

/// An outcome as the store records it: a failure's backoff drawn now, its error as stored.
fn record<'a>(item: &BatchItem<'a>) -> OutcomeRecord<'a> {
    let t = item.ticket;
    let (success, result, metadata, error, retryable, retry_ms) = match item.outcome {
        StepOutcome::Success { result, metadata } => {
            (true, result, metadata, Value::Null, false, 0.0)
        }
        StepOutcome::Failure(f) => {
            let delay = backoff::delay_with_random_jitter(
                t.attempt,
                t.backoff_base_ms,
                t.max_backoff_ms,
                f.retry_after,
            );
            (
                false,
                &Value::Null,
                &Value::Null,
                f.recorded(t.attempt),
                f.kind == FailureKind::Retryable,
                delay.as_secs_f64() * 1000.0,
            )
        }
    };
    OutcomeRecord {
        task_uuid: t.task_uuid,
        step_uuid: t.step_uuid,
        token: t.token,
        queue: t.queue.as_str(),
        msg_id: t.msg_id,
        namespace: &t.namespace,
        correlation_id: t.correlation_id,
        priority: t.priority,
        success,
        result,
        metadata,
        error,
        retryable,
        retry_ms,
        queue_usable: item.queue_usable,
    }
}
