//! Releasing steps whose backoff has elapsed: waiting_for_retry → enqueued, with a message.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;
use crate::messaging::{self, queue::QueueName, StepMessage};
use crate::state::StepState;
use crate::store::transitions::{self, StepTransition};

const BATCH: i64 = 200;

/// Release due steps. Returns the namespaces that received work and how long until the next
/// step is due (None when nothing waits).
pub(crate) async fn release_due(pool: &PgPool) -> Result<(BTreeSet<String>, Option<Duration>)> {
    let mut tx = pool.begin().await?;
    let due: Vec<(Uuid, Uuid, String, Uuid, i16)> = sqlx::query_as(
        "WITH due AS ( \
           SELECT step_uuid FROM tasker.workflow_steps \
           WHERE state = 'waiting_for_retry' AND next_retry_at <= now() \
           ORDER BY next_retry_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE tasker.workflow_steps s SET state = 'enqueued', next_retry_at = NULL, updated_at = now() \
         FROM due, tasker.tasks t \
         WHERE s.step_uuid = due.step_uuid AND t.task_uuid = s.task_uuid \
         RETURNING s.step_uuid, s.task_uuid, t.namespace, t.correlation_id, t.priority",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut namespaces = BTreeSet::new();
    if !due.is_empty() {
        let items: Vec<StepTransition> = due
            .iter()
            .map(|(step_uuid, task_uuid, _, _, _)| StepTransition {
                step_uuid: *step_uuid,
                task_uuid: *task_uuid,
                from: Some(StepState::WaitingForRetry),
                to: StepState::Enqueued,
                metadata: json!({ "reason": "backoff elapsed" }),
            })
            .collect();
        transitions::record_steps(&mut tx, &items).await?;
        for (_, _, ns, _, _) in &due {
            namespaces.insert(ns.clone());
        }
        for ns in &namespaces {
            let queue = QueueName::for_namespace(ns)?;
            let messages: Vec<StepMessage> = due
                .iter()
                .filter(|d| &d.2 == ns)
                .map(
                    |(step_uuid, task_uuid, _, correlation_id, priority)| StepMessage {
                        task_uuid: *task_uuid,
                        step_uuid: *step_uuid,
                        correlation_id: *correlation_id,
                        priority: *priority,
                    },
                )
                .collect();
            messaging::send_batch(&mut tx, &queue, &messages, 0).await?;
            messaging::notify_wakeup(&mut tx, ns).await?;
        }
    }
    // NULL when nothing waits (greatest() would turn that NULL into 0: a busy loop).
    let next: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM min(next_retry_at) - now())::float8 \
         FROM tasker.workflow_steps WHERE state = 'waiting_for_retry'",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((
        namespaces,
        next.map(|s| Duration::from_secs_f64(s.max(0.0))),
    ))
}
