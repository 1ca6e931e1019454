//! Healing lost messages: a step that has been `enqueued` for a while with no message for it in
//! its namespace queue (the queue table was dropped and recreated, or a message was deleted by
//! hand) is sent again. Claims are idempotent, so a duplicate message is harmless.

use uuid::Uuid;

use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::resilience::CircuitState;
use crate::runtime::Shared;

const BATCH: i64 = 500;

/// Re-send the messages of steps of `namespace` that have been enqueued longer than `after`
/// without a message. Returns how many were sent.
pub(crate) async fn requeue_lost(shared: &Shared, namespace: &str) -> Result<usize> {
    let queue = QueueName::for_namespace(namespace)?;
    // Nothing to do for a queue whose breaker is open: its poller is paused too.
    if shared.queue_breakers.get(queue.as_str()).state() == CircuitState::Open {
        return Ok(0);
    }
    let after = shared.requeue_after;
    let mut tx = shared.pool.begin().await?;
    // The lookup reads the queue table: a locked table must not hold this connection.
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!(
            "{}ms",
            shared.queue_lock_timeout.as_millis().max(1)
        ))
        .execute(&mut *tx)
        .await?;
    let lost: Vec<(Uuid, Uuid, Uuid, i16, String)> = sqlx::query_as(&format!(
        "SELECT s.step_uuid, s.task_uuid, t.correlation_id, t.priority, s.handler_class \
         FROM tasker.tasks t JOIN tasker.workflow_steps s USING (task_uuid) \
         WHERE t.status = 'in_progress' AND t.namespace = $1 \
           AND s.state = 'enqueued' AND s.updated_at < now() - make_interval(secs => $2) \
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
        .map(|l| StepMessage {
            task_uuid: l.1,
            step_uuid: l.0,
            correlation_id: l.2,
            priority: l.3,
            handler: Some(l.4.clone()),
        })
        .collect();
    if !shared
        .send_guarded(&mut tx, &queue, namespace, &messages)
        .await?
    {
        return Ok(0);
    }
    tx.commit().await?;
    tracing::warn!(
        namespace,
        count = lost.len(),
        "re-sent enqueued steps whose message was lost"
    );
    Ok(lost.len())
}
