//! Releasing steps whose backoff has elapsed: waiting_for_retry → enqueued, with a message.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::store::DbPool;
use serde_json::json;

use super::queue_writer::QueueWriter;
use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::state::StepState;
use crate::store::steps::{self, StepToSend};
use crate::store::transitions::{self, StepTransition};

const BATCH: i64 = 200;

/// Release due steps. Returns the namespaces that received work and how long until the next
/// step is due (None when nothing waits). Steps of a namespace whose queue breaker is open stay
/// waiting until it closes; a queue that fails the send leaves its steps enqueued without a
/// message, for the recovery loop.
pub(crate) async fn release_due(
    pool: &DbPool,
    writer: &QueueWriter,
) -> Result<(BTreeMap<String, usize>, Option<Duration>)> {
    let blocked = writer.blocked_namespaces();
    let mut tx = pool.begin().await?;
    let due = steps::take_due_retries(&mut tx, BATCH, &blocked).await?;
    let mut namespaces = BTreeMap::new();
    if !due.is_empty() {
        let items: Vec<StepTransition> = due
            .iter()
            .map(|d| StepTransition {
                step_uuid: d.step_uuid,
                task_uuid: d.task_uuid,
                from: Some(StepState::WaitingForRetry),
                to: StepState::Enqueued,
                metadata: json!({ "reason": "backoff elapsed" }),
            })
            .collect();
        transitions::record_steps(&mut tx, &items).await?;
        let all: BTreeSet<&str> = due.iter().map(|d| d.namespace.as_str()).collect();
        for ns in all {
            let queue = QueueName::for_namespace(ns)?;
            let messages: Vec<StepMessage> = due
                .iter()
                .filter(|d| d.namespace == ns)
                .map(StepToSend::message)
                .collect();
            if writer.send_guarded(&mut tx, &queue, ns, &messages).await? {
                namespaces.insert(ns.to_owned(), messages.len());
            }
        }
    }
    let next = steps::next_retry_in(&mut tx, &blocked).await?;
    tx.commit().await?;
    Ok((
        namespaces,
        next.map(|s| Duration::from_secs_f64(s.max(0.0))),
    ))
}
