//! The engine's background loops, each holding only what it uses: releasing steps due for
//! retry, re-sending lost messages, turning task requests into tasks, refreshing the queue
//! depth gauges, and the process heartbeat.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::creator::Creator;
use super::db::Db;
use super::signals::Signals;
use crate::error::Result;
use crate::messaging::queue::QueueName;
use crate::orchestration::queue_writer::QueueWriter;
use crate::orchestration::requests::{self, RequestOutcome};
use crate::orchestration::{recovery, retry};
use crate::store::queues;
use crate::telemetry::Telemetry;

/// Move steps whose backoff elapsed back to their queues.
pub(super) async fn release_retries(
    db: Arc<Db>,
    writer: Arc<QueueWriter>,
    signals: Arc<Signals>,
    telemetry: Option<Arc<Telemetry>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = match retry::release_due(&db.pool, &writer).await {
            Ok((namespaces, next)) => {
                for (ns, count) in &namespaces {
                    signals.wake_namespace(ns);
                    if let Some(t) = &telemetry {
                        t.enqueued(ns, *count);
                    }
                }
                next.unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(5), Duration::from_secs(1))
            }
            Err(e) => {
                if !db.trouble.note("releasing steps due for retry", &e) {
                    tracing::warn!(error = %e, "releasing steps due for retry failed");
                }
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = signals.retries_changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Re-send enqueued steps whose message was lost, for every served namespace.
pub(super) async fn requeue_lost_messages(
    db: Arc<Db>,
    writer: Arc<QueueWriter>,
    signals: Arc<Signals>,
    telemetry: Option<Arc<Telemetry>>,
    requeue_after: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let every = (requeue_after / 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        for ns in signals.namespaces() {
            match recovery::requeue_lost(&db.pool, &writer, ns, requeue_after).await {
                Ok(n) if n > 0 => {
                    signals.wake_namespace(ns);
                    if let Some(t) = &telemetry {
                        t.enqueued(ns, n);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !db.trouble.note("looking for lost messages", &e) {
                        tracing::warn!(namespace = %ns, error = %e, "looking for lost messages failed")
                    }
                }
            }
        }
    }
}

/// Most task requests taken at once.
const REQUEST_BATCH: i32 = 20;
/// How long a request read stays hidden from other readers.
const REQUEST_VISIBILITY_SECONDS: i32 = 30;

/// Turn requests from the `tasker_task_requests` queue into tasks.
pub(super) async fn consume_task_requests(
    db: Arc<Db>,
    creator: Arc<Creator>,
    poll_interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let queue = requests::queue();
    let read_sql = queues::read_sql(&queue);
    loop {
        let busy = match take_requests(&db, &creator, &queue, &read_sql).await {
            Ok(n) => n > 0,
            Err(e) => {
                if !db.trouble.note("reading task requests", &e) {
                    tracing::warn!(error = %e, "reading task requests failed");
                }
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll_interval) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Read a batch of requests and settle each: created (deleted), archived with its reason, or
/// left to come back after its visibility timeout. Returns how many were read.
async fn take_requests(
    db: &Db,
    creator: &Creator,
    queue: &QueueName,
    read_sql: &str,
) -> Result<usize> {
    let pool = &db.pool;
    let messages = queues::read(pool, read_sql, REQUEST_VISIBILITY_SECONDS, REQUEST_BATCH).await?;
    for m in &messages {
        let outcome = match requests::to_request(m) {
            Err(reason) => RequestOutcome::Archived(reason),
            Ok(req) => match creator.create_tasks(std::slice::from_ref(&req)).await {
                Ok(mut tasks) => RequestOutcome::Created(tasks.remove(0).task_uuid),
                Err(e) => requests::after_failure(m.msg_id, m.read_ct, &e),
            },
        };
        match outcome {
            RequestOutcome::Created(_) => queues::delete(pool, queue, m.msg_id).await?,
            RequestOutcome::Archived(reason) => {
                tracing::warn!(msg_id = m.msg_id, reason = %reason, "archived a task request");
                queues::archive_poison(pool, queue, m.msg_id, &reason).await?;
            }
            RequestOutcome::Deferred => {}
        }
    }
    Ok(messages.len())
}

/// Keep the queue depth gauges current (read at export).
pub(super) async fn refresh_queue_depths(
    db: Arc<Db>,
    telemetry: Arc<Telemetry>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        for (ns, depth) in telemetry.queue_depths.iter() {
            let Ok(queue) = QueueName::for_namespace(ns) else {
                continue;
            };
            let length = queues::metrics(&db.queue_pool, &queue)
                .await
                .map_or(-1, |m| m.queue_length);
            depth.store(length, Ordering::Relaxed);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Keep this process's view of the paused namespaces current: once per poll interval (a read
/// that fails keeps the last view).
pub(super) async fn refresh_pauses(
    db: Arc<Db>,
    pauses: Arc<super::pauses::Pauses>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        match crate::store::pauses::list(&db.pool).await {
            Ok(rows) => pauses.replace(
                rows.into_iter()
                    .filter(|p| p.template.is_none())
                    .map(|p| p.namespace)
                    .collect(),
            ),
            Err(e) => {
                if !db.trouble.note("reading paused namespaces", &e) {
                    tracing::warn!(error = %e, "reading paused namespaces failed; retrying");
                }
            }
        }
    }
}

/// How often an engine writes its heartbeat row.
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What the heartbeat reports about this engine.
pub(super) struct Heartbeat {
    pub db: Arc<Db>,
    pub instance_id: Arc<str>,
    pub worker_id: String,
    pub namespaces: Vec<String>,
    pub concurrency: usize,
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// Write this engine's row in `tasker.processes` every [`HEARTBEAT_EVERY`] (busy = handler
/// slots taken); remove it at shutdown. A failed write is retried at the next beat.
pub(super) async fn heartbeat(h: Heartbeat, mut stop: watch::Receiver<bool>) {
    let hostname = super::hostname();
    loop {
        let busy = h.concurrency.saturating_sub(h.slots.available_permits());
        let beat = crate::store::processes::Beat {
            instance_id: &h.instance_id,
            worker_id: &h.worker_id,
            hostname: &hostname,
            pid: std::process::id() as i32,
            namespaces: &h.namespaces,
            concurrency: h.concurrency as i32,
            busy: busy as i32,
        };
        if let Err(e) = crate::store::processes::beat(&h.db.pool, &beat).await {
            if !h.db.trouble.note("writing the heartbeat", &e) {
                tracing::warn!(error = %e, "writing the process heartbeat failed; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    let _ = crate::store::processes::remove(&h.db.pool, &h.instance_id).await;
}
