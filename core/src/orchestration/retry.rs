//! Releasing steps whose backoff has elapsed: waiting_for_retry → enqueued, with a message.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::resilience::CircuitState;
use crate::runtime::Shared;
use crate::state::StepState;
use crate::store::transitions::{self, StepTransition};

const BATCH: i64 = 200;

/// Release due steps. Returns the namespaces that received work and how long until the next
/// step is due (None when nothing waits). Steps of a namespace whose queue breaker is open stay
/// waiting until it closes; a queue that fails the send leaves its steps enqueued without a
/// message, for the recovery loop.
pub(crate) async fn release_due(
    shared: &Shared,
) -> Result<(BTreeMap<String, usize>, Option<Duration>)> {
    let blocked: Vec<String> = shared
        .queue_breakers
        .all()
        .iter()
        .filter(|b| b.state() != CircuitState::Closed)
        .filter_map(|b| QueueName::namespace_of(b.name()).map(str::to_owned))
        .collect();
    let mut tx = shared.pool.begin().await?;
    let due: Vec<(Uuid, Uuid, String, Uuid, i16, String)> = sqlx::query_as(
        "WITH due AS ( \
           SELECT s.step_uuid FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid) \
           WHERE s.state = 'waiting_for_retry' AND s.next_retry_at <= now() \
             AND t.namespace <> ALL($2) \
           ORDER BY s.next_retry_at LIMIT $1 FOR UPDATE OF s SKIP LOCKED) \
         UPDATE tasker.workflow_steps s SET state = 'enqueued', next_retry_at = NULL, updated_at = now() \
         FROM due, tasker.tasks t \
         WHERE s.step_uuid = due.step_uuid AND t.task_uuid = s.task_uuid \
         RETURNING s.step_uuid, s.task_uuid, t.namespace, t.correlation_id, t.priority, s.handler_class",
    )
    .bind(BATCH)
    .bind(&blocked)
    .fetch_all(&mut *tx)
    .await?;
    let mut namespaces = BTreeMap::new();
    if !due.is_empty() {
        let items: Vec<StepTransition> = due
            .iter()
            .map(|d| StepTransition {
                step_uuid: d.0,
                task_uuid: d.1,
                from: Some(StepState::WaitingForRetry),
                to: StepState::Enqueued,
                metadata: json!({ "reason": "backoff elapsed" }),
            })
            .collect();
        transitions::record_steps(&mut tx, &items).await?;
        let all: BTreeSet<&str> = due.iter().map(|d| d.2.as_str()).collect();
        for ns in all {
            let queue = QueueName::for_namespace(ns)?;
            let messages: Vec<StepMessage> = due
                .iter()
                .filter(|d| d.2 == ns)
                .map(|d| StepMessage {
                    task_uuid: d.1,
                    step_uuid: d.0,
                    correlation_id: d.3,
                    priority: d.4,
                    handler: Some(d.5.clone()),
                })
                .collect();
            if shared.send_guarded(&mut tx, &queue, ns, &messages).await? {
                namespaces.insert(ns.to_owned(), messages.len());
            }
        }
    }
    // NULL when nothing waits (greatest() would turn that NULL into 0: a busy loop).
    let next: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(s.next_retry_at) - now())::float8 \
         FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid) \
         WHERE s.state = 'waiting_for_retry' AND t.namespace <> ALL($1)",
    )
    .bind(&blocked)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        namespaces,
        next.map(|s| Duration::from_secs_f64(s.max(0.0))),
    ))
}
