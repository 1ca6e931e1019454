//! Healing lost messages: a step that has been `enqueued` for a while with no message for it in
//! its namespace queue (the queue table was dropped and recreated, or a message was deleted by
//! hand) is sent again. Claims are idempotent, so a duplicate message is harmless.

use std::time::Duration;

use crate::store::DbPool;
use uuid::Uuid;

use super::queue_writer::QueueWriter;
use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::store::steps::{self, StepToSend};

const BATCH: i64 = 500;

/// Re-send the messages of steps of `namespace` that have been enqueued longer than `after`
/// without a message. Returns how many were sent.
pub(crate) async fn requeue_lost(
    pool: &DbPool,
    writer: &QueueWriter,
    namespace: &str,
    after: Duration,
) -> Result<usize> {
    let queue = QueueName::for_namespace(namespace)?;
    // Nothing to do for a queue whose breaker is open: its poller is paused too.
    if writer.is_open(&queue) {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let lost = steps::find_lost(
        &mut tx,
        &queue,
        namespace,
        after,
        BATCH,
        writer.lock_timeout,
    )
    .await?;
    if lost.is_empty() {
        return Ok(0);
    }
    let step_uuids: Vec<Uuid> = lost.iter().map(|l| l.step_uuid).collect();
    steps::touch(&mut tx, &step_uuids).await?;
    let messages: Vec<StepMessage> = lost.iter().map(StepToSend::message).collect();
    if !writer
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
