//! One poller per served namespace: takes the free handler slots, reads as many messages,
//! claims their steps concurrently and hands the events to the executor channel. Poison messages are archived with a
//! reason; a message whose step is still claimed elsewhere is hidden until that claim expires.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::claim::{self, ClaimRefusal};
use crate::messaging::{self, queue::QueueName, ReadMessage, StepMessage};
use crate::resilience::OwnedPermit;
use crate::runtime::{Dispatch, Shared};

/// How long a read message stays hidden before its claim sets the real deadline (the claim's
/// expiry); only a process dying between read and claim makes this matter.
const READ_VISIBILITY_SECONDS: i32 = 30;

/// Most messages read (and claimed concurrently) at once.
const MAX_BATCH: usize = 16;

pub(crate) struct Poller {
    pub shared: Arc<Shared>,
    pub namespace: String,
    pub queue: QueueName,
    /// [`messaging::read_sql`] for this queue, built once.
    pub read_sql: String,
    pub wake: Arc<Notify>,
    pub slots: Arc<Semaphore>,
    pub out: crossbeam_channel::Sender<Dispatch>,
    pub stop: watch::Receiver<bool>,
}

impl Poller {
    pub async fn run(mut self) {
        let mut error_backoff = Duration::from_millis(50);
        let this = Arc::new(PollerCtx {
            shared: self.shared.clone(),
            namespace: self.namespace.clone(),
            queue: self.queue.clone(),
            out: self.out.clone(),
        });
        let mut claims = JoinSet::new();
        loop {
            // One free handler slot at least, and as many more as are free right now: each
            // message read is claimed only for a slot that can run it at once.
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = self.stop.changed() => break,
            };
            if *self.stop.borrow() {
                break;
            }
            let mut permits = vec![first];
            while permits.len() < MAX_BATCH {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A failing queue stops being polled (with backoff) while the breaker is open;
            // the other namespaces' pollers are unaffected.
            let breaker = self.shared.queue_breakers.get(self.queue.as_str());
            let guard = match breaker.try_acquire() {
                Ok(guard) => guard,
                Err(retry_after) => {
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(retry_after.clamp(Duration::from_millis(50), Duration::from_secs(1))) => {}
                        _ = self.stop.changed() => break,
                    }
                    continue;
                }
            };
            let read = messaging::read(
                &self.shared.queue_pool,
                &self.read_sql,
                READ_VISIBILITY_SECONDS,
                permits.len() as i32,
            )
            .await;
            match &read {
                Ok(_) => guard.success(),
                // No connection to be had is the database's trouble, not this queue's: no
                // verdict (the breaker isolates one failing queue from the others).
                Err(e) if crate::trouble::is_connection_trouble(e) => guard.release(),
                Err(_) => guard.failure(),
            }
            match read {
                Ok(msgs) if !msgs.is_empty() => {
                    error_backoff = Duration::from_millis(50);
                    for (msg, permit) in msgs.into_iter().zip(permits.drain(..)) {
                        let ctx = this.clone();
                        claims.spawn(async move {
                            if let Some((event, admission, trace)) = ctx.handle(msg).await {
                                let _ =
                                    ctx.out.send(Dispatch::new(event, permit, admission, trace));
                            }
                        });
                    }
                    drop(permits);
                    while claims.try_join_next().is_some() {}
                }
                Ok(_) => {
                    drop(permits);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.shared.poll_interval) => {}
                        _ = self.stop.changed() => break,
                    }
                }
                Err(e) => {
                    drop(permits);
                    if !self.shared.trouble.note("reading a queue", &e) {
                        tracing::warn!(namespace = %self.namespace, error = %e, "reading the queue failed; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(error_backoff) => {}
                        _ = self.stop.changed() => break,
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Claims in flight finish (their events still reach the channel before it closes).
        while claims.join_next().await.is_some() {}
        tracing::debug!(namespace = %self.namespace, "poller stopped");
    }
}

/// What a claim needs, shared by the claims a poller runs concurrently.
struct PollerCtx {
    shared: Arc<Shared>,
    namespace: String,
    queue: QueueName,
    out: crossbeam_channel::Sender<Dispatch>,
}

impl PollerCtx {
    /// Claim the message's step, or settle the message when it cannot be claimed. A step whose
    /// handler's breaker is open is not claimed (its attempts are untouched): its message is
    /// hidden until the breaker admits a trial.
    async fn handle(
        &self,
        msg: ReadMessage,
    ) -> Option<(
        crate::worker::StepEvent,
        Option<OwnedPermit>,
        Option<crate::telemetry::StepTrace>,
    )> {
        let msg_id = msg.msg_id;
        let step_msg: StepMessage = match msg.decode() {
            Ok(m) => m,
            Err(why) => {
                self.archive(msg_id, &format!("not a step message: {why}"))
                    .await;
                return None;
            }
        };
        let admission = match &step_msg.handler {
            // Only handlers registered by this process's templates have breakers: a string
            // from a message never creates one.
            Some(handler) if self.shared.handler_classes.contains(handler.as_str()) => match self
                .shared
                .handler_breakers
                .get(handler)
                .try_acquire_owned()
            {
                Ok(admission) => Some(admission),
                Err(retry_after) => {
                    // Looked at again within seconds: the breaker may be reconfigured or
                    // forced closed meanwhile.
                    let secs = retry_after.as_secs_f64().ceil().clamp(1.0, 5.0) as i32;
                    tracing::debug!(step_uuid = %step_msg.step_uuid, handler, secs,
                        "handler circuit breaker open; step left enqueued");
                    self.postpone(msg_id, secs).await;
                    return None;
                }
            },
            _ => None,
        };
        let site = claim::ClaimSite {
            shared: &self.shared,
            queue: &self.queue,
        };
        let started = self
            .shared
            .telemetry
            .as_ref()
            .map(|_| (std::time::Instant::now(), std::time::SystemTime::now()));
        let refusal = match claim::claim(&site, msg_id, &step_msg).await {
            Ok(Ok(event)) => {
                let trace = match (&self.shared.telemetry, started) {
                    (Some(t), Some((at, at_wall))) => Some(t.claimed(&event, at, at_wall)),
                    _ => None,
                };
                return Some((event, admission, trace));
            }
            Ok(Err(refusal)) => Some(refusal),
            Err(e) => {
                // The message stays invisible until its visibility timeout, then comes back.
                if !self.shared.trouble.note("claiming a step", &e) {
                    tracing::warn!(step_uuid = %step_msg.step_uuid, correlation_id = %step_msg.correlation_id,
                        error = %e, "claiming a step failed; it will be redelivered");
                }
                None
            }
        };
        // No attempt was made: no verdict for the handler's breaker.
        if let Some(a) = admission {
            a.release();
        }
        match refusal {
            Some(ClaimRefusal::Missing) => self.archive(msg_id, "unknown step").await,
            Some(ClaimRefusal::Stale(state)) => {
                self.archive(msg_id, &format!("step is {state}; nothing to run"))
                    .await
            }
            Some(ClaimRefusal::Busy(secs)) => self.postpone(msg_id, secs.max(1)).await,
            Some(ClaimRefusal::Exhausted) => {
                match claim::fail_exhausted(&site, &self.namespace, msg_id, &step_msg).await {
                    Ok(state) if state.is_some_and(crate::state::TaskState::is_terminal) => {
                        self.shared.task_finished(step_msg.task_uuid)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !self.shared.trouble.note("failing an exhausted step", &e) {
                            tracing::warn!(step_uuid = %step_msg.step_uuid, error = %e,
                                "failing a step whose last claim expired failed; it is tried again");
                        }
                    }
                }
            }
            None => {}
        }
        None
    }

    /// Hide a message for `secs` (through the queue's breaker; when that is open the message
    /// simply reappears after its read visibility timeout).
    async fn postpone(&self, msg_id: i64, secs: i32) {
        let breaker = self.shared.queue_breakers.get(self.queue.as_str());
        let Ok(permit) = breaker.try_acquire() else {
            return;
        };
        match messaging::set_vt(&self.shared.queue_pool, &self.queue, msg_id, secs).await {
            Ok(()) => permit.success(),
            Err(e) if crate::trouble::is_connection_trouble(&e) => {
                permit.release();
                self.shared.trouble.note("postponing a message", &e);
            }
            Err(e) => {
                permit.failure();
                tracing::warn!(queue = %self.queue, msg_id, error = %e, "could not postpone a message");
            }
        }
    }

    /// Archive a message that cannot be processed (through the queue's breaker; when that is
    /// open the message comes back later and is archived then).
    async fn archive(&self, msg_id: i64, reason: &str) {
        tracing::warn!(queue = %self.queue, msg_id, reason, "archiving a message that cannot be processed");
        let breaker = self.shared.queue_breakers.get(self.queue.as_str());
        let Ok(permit) = breaker.try_acquire() else {
            return;
        };
        match messaging::archive_poison(&self.shared.queue_pool, &self.queue, msg_id, reason).await
        {
            Ok(_) => permit.success(),
            Err(e) if crate::trouble::is_connection_trouble(&e) => {
                permit.release();
                self.shared.trouble.note("archiving a poison message", &e);
            }
            Err(e) => {
                permit.failure();
                tracing::error!(queue = %self.queue, msg_id, error = %e, "archiving a poison message failed");
            }
        }
    }
}
