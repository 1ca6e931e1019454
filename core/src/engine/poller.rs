//! One poller per served namespace: takes the free handler slots and claims as many steps from
//! its queue in one statement (`tasker.claim_steps`), then hands the events to the executor
//! channel. That statement also settles what it cannot claim: poison messages are archived with
//! a reason, a message whose step is still claimed elsewhere is hidden until that claim expires,
//! a step whose handler's breaker is open is postponed with its attempts untouched.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify, OwnedSemaphorePermit};

use uuid::Uuid;

use super::claims::Claimer;
use super::db::Db;
use super::signals::Signals;
use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::orchestration::queue_writer::QueueWriter;
use crate::resilience::{CircuitState, OwnedPermit};
use crate::store::steps::{self, HandlerGate};
use crate::worker::StepEvent;

use super::dispatch::Dispatch;

/// How long a read message stays hidden before its claim sets the real deadline (the claim's
/// expiry); it matters only for a message that is not claimed (exhausted, awaiting its fate).
const READ_VISIBILITY_SECONDS: i32 = 30;

/// Most messages read (and claimed) at once.
const MAX_BATCH: usize = 64;

/// How long a step of a handler whose breaker is open stays hidden: the breaker may be
/// reconfigured or forced closed meanwhile, so it is looked at again within seconds.
const POSTPONE_SECONDS: i32 = 2;

/// What one read of a queue did with the messages it read.
#[derive(Debug, Default)]
struct ClaimedBatch {
    events: Vec<StepEvent>,
    /// Messages archived, with the reason.
    archived: Vec<(i64, String)>,
    /// Claims that expired on their step's last attempt: (msg_id, message).
    exhausted: Vec<(i64, StepMessage)>,
    postponed: usize,
}

pub(crate) struct Poller {
    pub db: Arc<Db>,
    pub writer: Arc<QueueWriter>,
    pub claimer: Arc<Claimer>,
    pub signals: Arc<Signals>,
    pub poll_interval: Duration,
    pub namespace: String,
    pub queue: QueueName,
    pub wake: Arc<Notify>,
    /// The engine's handler slots in all.
    pub concurrency: usize,
    pub out: crossbeam_channel::Sender<Dispatch>,
    pub stop: watch::Receiver<bool>,
}

impl Poller {
    pub async fn run(mut self) {
        let mut error_backoff = Duration::from_millis(50);
        // Whether the last read took all it asked for (more is waiting), and how long it took.
        let mut backlog = false;
        let mut last_read = Duration::ZERO;
        loop {
            // A paused namespace is not read at all; its messages wait in the queue.
            if self.claimer.pauses.contains(&self.namespace) {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    _ = self.stop.changed() => break,
                }
                continue;
            }
            // One free handler slot at least, and as many more as are free right now: each
            // step claimed runs in one of them at once.
            let first = tokio::select! {
                p = self.claimer.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = self.stop.changed() => break,
            };
            if *self.stop.borrow() {
                break;
            }
            let mut permits = vec![first];
            self.gather(&mut permits, backlog, last_read).await;
            // A failing queue stops being polled (with backoff) while the breaker is open;
            // the other namespaces' pollers are unaffected.
            let breaker = self.writer.breakers.get(self.queue.as_str());
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
            let (blocked, mut trials) = self.handler_gate();
            let trial_names: Vec<String> = trials.iter().map(|(h, _)| h.clone()).collect();
            let finishing = self.claimer.finishing_now();
            let gate = HandlerGate {
                blocked: &blocked,
                trials: &trial_names,
                postpone_seconds: POSTPONE_SECONDS,
                finishing: &finishing,
            };
            let started = (Instant::now(), SystemTime::now());
            let asked = permits.len();
            let claimed = self.claim(asked, &gate).await;
            last_read = started.0.elapsed();
            backlog = matches!(&claimed, Ok(b) if b.events.len() + b.archived.len() + b.exhausted.len() + b.postponed >= asked);
            match &claimed {
                Ok(_) => guard.success(),
                // No connection to be had is the database's trouble, not this queue's: no
                // verdict (the breaker isolates one failing queue from the others).
                Err(e) if crate::trouble::is_connection_trouble(e) => guard.release(),
                Err(_) => guard.failure(),
            }
            match claimed {
                Ok(batch) => {
                    error_backoff = Duration::from_millis(50);
                    // A read that found fewer messages than it asked for emptied the queue:
                    // the next read waits for a wake-up or the poll interval (and leaves the
                    // free slots meanwhile to the claims made in create and apply transactions).
                    let idle = !backlog;
                    self.settle(batch, &mut permits, &mut trials, started).await;
                    drop(permits);
                    for (_, admission) in trials {
                        admission.release();
                    }
                    if idle {
                        tokio::select! {
                            _ = self.wake.notified() => {}
                            _ = tokio::time::sleep(self.poll_interval) => {}
                            _ = self.stop.changed() => break,
                        }
                    }
                }
                Err(e) => {
                    drop(permits);
                    for (_, admission) in trials {
                        admission.release();
                    }
                    if !self.db.trouble.note("claiming steps", &e) {
                        tracing::warn!(namespace = %self.namespace, error = %e, "claiming steps failed; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(error_backoff) => {}
                        _ = self.stop.changed() => break,
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::debug!(namespace = %self.namespace, "poller stopped");
    }

    /// Add the slots free now to `permits` (one is held already). While a backlog waits, a read
    /// for one freed slot would cost a whole round trip per step: then the poller waits, at
    /// most as long as its last read took, until half the slots are free, so that one read
    /// claims many. Idle, it reads at once for whatever is free.
    async fn gather(
        &self,
        permits: &mut Vec<OwnedSemaphorePermit>,
        backlog: bool,
        last_read: Duration,
    ) {
        let take_free = |permits: &mut Vec<OwnedSemaphorePermit>| {
            while permits.len() < MAX_BATCH {
                match self.claimer.slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
        };
        take_free(permits);
        let want = (self.concurrency / 2).clamp(1, MAX_BATCH);
        if !backlog || permits.len() >= want {
            return;
        }
        let deadline = tokio::time::Instant::now() + last_read.min(Duration::from_millis(50));
        while permits.len() < want {
            match tokio::time::timeout_at(deadline, self.claimer.slots.clone().acquire_owned())
                .await
            {
                Ok(Ok(p)) => {
                    permits.push(p);
                    take_free(permits);
                }
                _ => break,
            }
        }
    }

    /// The handler breakers' say for one batch: handlers whose breaker admits nothing now, and
    /// those whose half-open breaker admitted its one trial (the admission is held for it).
    /// Only handler classes the loaded templates name have breakers.
    fn handler_gate(&self) -> (Vec<String>, Vec<(String, OwnedPermit)>) {
        let mut blocked = Vec::new();
        let mut trials = Vec::new();
        for breaker in self.claimer.handler_breakers.all() {
            if breaker.state() == CircuitState::Closed {
                continue;
            }
            let name = breaker.name().to_owned();
            match breaker.try_acquire_owned() {
                Ok(admission) if admission.is_trial() => trials.push((name, admission)),
                Ok(admission) => admission.release(),
                Err(_) => blocked.push(name),
            }
        }
        (blocked, trials)
    }

    /// Hand out the claimed steps (each in one of `permits`), log what was archived, and fail
    /// the steps whose last claim expired.
    async fn settle(
        &self,
        batch: ClaimedBatch,
        permits: &mut Vec<OwnedSemaphorePermit>,
        trials: &mut Vec<(String, OwnedPermit)>,
        at: (Instant, SystemTime),
    ) {
        for (msg_id, reason) in &batch.archived {
            tracing::warn!(queue = %self.queue, msg_id, reason, "archived a message that cannot be processed");
        }
        for event in batch.events {
            let Some(permit) = permits.pop() else { break };
            let handler = &*event.handler_class;
            let admission = match trials.iter().position(|(h, _)| h == handler) {
                Some(i) => Some(trials.swap_remove(i).1),
                None => self.claimer.admission(handler),
            };
            let _ = self
                .out
                .send(self.claimer.dispatch(event, permit, admission, at));
        }
        for (msg_id, msg) in batch.exhausted {
            match self.fail_exhausted(msg_id, &msg).await {
                Ok(state) if state.is_some_and(crate::state::TaskState::is_terminal) => {
                    self.signals.task_finished(msg.task_uuid)
                }
                Ok(_) => {}
                Err(e) => {
                    if !self.db.trouble.note("failing an exhausted step", &e) {
                        tracing::warn!(step_uuid = %msg.step_uuid, error = %e,
                            "failing a step whose last claim expired failed; it is tried again");
                    }
                }
            }
        }
    }

    /// Read up to `qty` messages of the queue and claim their steps, in one statement
    /// (`tasker.claim_steps`, which also settles every message it cannot claim), on the queue
    /// pool: a locked queue table fails fast (and opens that queue's breaker).
    async fn claim(&self, qty: usize, gate: &HandlerGate<'_>) -> Result<ClaimedBatch> {
        let claimer = &self.claimer;
        let rows = steps::claim_steps(
            &self.db.queue_pool,
            &self.queue,
            qty,
            &claimer.worker_id,
            claimer.claim_grace_seconds,
            READ_VISIBILITY_SECONDS,
            gate,
        )
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
                    if let Some(step) = row.claim.into_claimed(self.queue.as_str().to_owned()) {
                        out.events.push(claimer.event(step).await?);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Fail a step whose claim expired on its last attempt. Returns the task's new state when
    /// the step's failure changed it.
    async fn fail_exhausted(
        &self,
        msg_id: i64,
        msg: &StepMessage,
    ) -> Result<Option<crate::state::TaskState>> {
        let done = steps::fail_exhausted_claim(
            &self.db.pool,
            msg,
            &self.queue,
            &self.namespace,
            msg_id,
            self.writer.lock_timeout,
        )
        .await?;
        if done.failed {
            tracing::warn!(step_uuid = %msg.step_uuid, task_uuid = %msg.task_uuid,
                "a step's claim expired on its last attempt; the step failed");
        }
        done.task_state.as_deref().map(str::parse).transpose()
    }
}
