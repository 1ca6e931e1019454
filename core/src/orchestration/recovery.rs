//! Healing lost messages: a step that has been `enqueued` for a while with no message for it in
//! its namespace queue (the queue table was dropped and recreated, or a message was deleted by
//! hand) is sent again. Claims are idempotent, so a duplicate message is harmless.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;
use crate::messaging::{self, queue::QueueName, StepMessage};

const BATCH: i64 = 500;

/// Re-send the messages of steps of `namespace` that have been enqueued longer than `after`
/// without a message. Returns how many were sent.
pub(crate) async fn requeue_lost(pool: &PgPool, namespace: &str, after: Duration) -> Result<usize> {
    let queue = QueueName::for_namespace(namespace)?;
    let mut tx = pool.begin().await?;
    let lost: Vec<(Uuid, Uuid, Uuid, i16)> = sqlx::query_as(&format!(
        "SELECT s.step_uuid, s.task_uuid, t.correlation_id, t.priority \
         FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid) \
         WHERE s.state = 'enqueued' AND s.updated_at < now() - make_interval(secs => $2) \
           AND t.namespace = $1 \
           AND NOT EXISTS (SELECT 1 FROM pgmq.q_{q} m WHERE m.message->>'step_uuid' = s.step_uuid::text) \
         ORDER BY s.updated_at LIMIT $3 FOR UPDATE OF s SKIP LOCKED",
        q = queue.as_str()
    ))
    .bind(namespace)
    .bind(after.as_secs_f64())
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if lost.is_empty() {
        return Ok(0);
    }
    let steps: Vec<Uuid> = lost.iter().map(|l| l.0).collect();
    sqlx::query("UPDATE tasker.workflow_steps SET updated_at = now() WHERE step_uuid = ANY($1)")
        .bind(&steps)
        .execute(&mut *tx)
        .await?;
    let messages: Vec<StepMessage> = lost
        .iter()
        .map(
            |&(step_uuid, task_uuid, correlation_id, priority)| StepMessage {
                task_uuid,
                step_uuid,
                correlation_id,
                priority,
            },
        )
        .collect();
    messaging::send_batch(&mut tx, &queue, &messages, 0).await?;
    messaging::notify_wakeup(&mut tx, namespace).await?;
    tx.commit().await?;
    tracing::warn!(
        namespace,
        count = lost.len(),
        "re-sent enqueued steps whose message was lost"
    );
    Ok(lost.len())
}
