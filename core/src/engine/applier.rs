//! The result applier: one per engine. It takes every outcome waiting at that moment and
//! applies them in one transaction (`orchestration::results::apply_batch`). Idle, a batch is
//! one outcome and goes at once; under load outcomes pile up while a batch is in flight and the
//! next batch takes them all (group commit without a timer). In the same transaction it claims
//! the released children this process serves, up to its free handler slots, and hands them
//! straight to the executor channel: no queue read and no second claim for the next step.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::claims::{ClaimBudget, Claimer};
use super::db::Db;
use super::dispatch::Completion;
use super::signals::Signals;
use crate::error::Result;
use crate::orchestration::queue_writer::QueueWriter;
use crate::orchestration::results::{self, ApplyReport, BatchApplied, BatchItem};
use crate::resilience::Permit;
use crate::state::TaskState;
use crate::telemetry::Telemetry;
use crate::worker::{StepFailure, StepOutcome};

/// Most outcomes applied in one transaction.
const MAX_BATCH: usize = 256;

pub(super) struct Applier {
    pub db: Arc<Db>,
    pub writer: Arc<QueueWriter>,
    pub claimer: Arc<Claimer>,
    pub signals: Arc<Signals>,
    pub telemetry: Option<Arc<Telemetry>>,
    /// Outcomes handed back and not yet applied.
    pub pending: Arc<AtomicUsize>,
    /// Tags the wake-ups this engine sends other processes.
    pub instance_id: Arc<str>,
    pub rx: mpsc::UnboundedReceiver<Completion>,
}

impl Applier {
    /// Apply outcomes until the completion channel is closed and drained.
    pub async fn run(mut self) {
        loop {
            let Some(first) = self.rx.recv().await else {
                break;
            };
            let mut batch = vec![first];
            self.take_waiting(&mut batch);
            self.apply_until_done(batch).await;
        }
    }

    fn take_waiting(&mut self, batch: &mut Vec<Completion>) {
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
    }

    /// Apply a batch, retrying through database outages for as long as the engine runs (an
    /// outcome applied after its claim expired is still applied if nobody took the step over,
    /// and discarded otherwise; engine shutdown bounds the wait). A batch PostgreSQL refuses
    /// for its data is split, so that the one outcome at fault fails alone, permanently.
    async fn apply_until_done(&mut self, mut batch: Vec<Completion>) {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u64;
        let mut next_log = 1u64;
        loop {
            attempt += 1;
            match self.try_apply(&batch).await {
                Ok((applied, budget)) => return self.finish(batch, applied, budget, started).await,
                Err(e) if e.is_data_error() => {
                    for one in batch {
                        self.apply_alone(one, started).await;
                    }
                    return;
                }
                Err(e) => {
                    if !self.db.trouble.note("applying step results", &e) && attempt == next_log {
                        next_log += 10;
                        tracing::warn!(outcomes = batch.len(), attempt, error = %e,
                            "applying step results failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    self.take_waiting(&mut batch);
                }
            }
        }
    }

    /// One outcome on its own; when PostgreSQL refuses its data, a permanent failure saying
    /// why is recorded in its place (retrying cannot help).
    async fn apply_alone(&mut self, mut one: Completion, started: Instant) {
        let mut replaced = false;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_apply(std::slice::from_ref(&one)).await {
                Ok((applied, slots)) => {
                    return self.finish(vec![one], applied, slots, started).await
                }
                Err(e) if e.is_data_error() && !replaced => {
                    tracing::error!(step_uuid = %one.0.step_uuid, correlation_id = %one.0.correlation_id,
                        error = %e, "PostgreSQL refused this step's outcome; the step fails permanently");
                    one.1 = StepOutcome::Failure(StepFailure::unstorable(&e));
                    replaced = true;
                }
                Err(e) if e.is_data_error() => {
                    tracing::error!(step_uuid = %one.0.step_uuid, correlation_id = %one.0.correlation_id,
                        error = %e, "PostgreSQL refused even the failure recorded in place of an outcome; \
                         the step runs again after its claim expires");
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    self.claimer.finishing_remove([one.0.step_uuid]);
                    return;
                }
                Err(e) => {
                    if !self.db.trouble.note("applying a step result", &e) {
                        tracing::warn!(step_uuid = %one.0.step_uuid, error = %e,
                            "applying a step result failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One round trip: the batch's outcomes, its queues' writes and the fused claims.
    async fn try_apply(&self, batch: &[Completion]) -> Result<(BatchApplied, ClaimBudget)> {
        // Each queue's breaker decides once for the batch whether its queue is written.
        let breakers: Vec<_> = {
            let mut names: Vec<&str> = batch.iter().map(|c| c.0.queue.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            names
                .into_iter()
                .map(|q| (q, self.writer.breakers.get(q)))
                .collect()
        };
        let queues: Vec<(&str, Option<Permit<'_>>)> = breakers
            .iter()
            .map(|(name, breaker)| (*name, breaker.try_acquire().ok()))
            .collect();
        let usable = |q: &str| queues.iter().any(|(n, p)| *n == q && p.is_some());
        let items: Vec<BatchItem<'_>> = batch
            .iter()
            .map(|(ticket, outcome, _)| BatchItem {
                ticket,
                outcome,
                queue_usable: usable(ticket.queue.as_str()),
            })
            .collect();
        // Free handler slots, taken now, as many as the completions can release children:
        // each claimed child runs in one of them.
        let releasable = batch
            .iter()
            .filter(|(_, outcome, _)| matches!(outcome, StepOutcome::Success { .. }))
            .fold(0usize, |n, (t, _, _)| n.saturating_add(t.children as usize));
        let budget = self.claimer.budget(releasable);
        let applied = results::apply_batch(
            &self.db.pool,
            &items,
            &budget.settings(&self.claimer),
            self.writer.lock_timeout,
            &self.instance_id,
        )
        .await;
        match applied {
            Ok(applied) => {
                for (name, permit) in queues {
                    let Some(permit) = permit else { continue };
                    match applied.queues.iter().find(|(q, _)| q == name) {
                        Some((_, Some(e))) => {
                            permit.failure();
                            tracing::warn!(queue = name, error = %e,
                                "step outcomes are recorded but their queue could not be written; \
                                 released children are sent by the recovery loop");
                        }
                        Some((_, None)) => permit.success(),
                        None => permit.release(),
                    }
                }
                Ok((applied, budget))
            }
            Err(e) => {
                // Not the queues' fault (the database, the connection): no verdict on them.
                for (_, permit) in queues {
                    if let Some(p) = permit {
                        p.release();
                    }
                }
                Err(e)
            }
        }
    }

    /// After the commit: wake-ups, finalization waiters, telemetry, and the claimed children
    /// handed to the executor channel (each in one of the slots taken for it).
    async fn finish(
        &self,
        batch: Vec<Completion>,
        applied: BatchApplied,
        budget: ClaimBudget,
        started: Instant,
    ) {
        let elapsed = started.elapsed();
        let count = batch.len();
        self.claimer
            .finishing_remove(batch.iter().map(|(ticket, _, _)| ticket.step_uuid));
        // Children released per queue, to compare with those claimed here.
        let mut released: Vec<(Arc<str>, String, usize)> = Vec::new();
        for ((ticket, _, trace), report) in batch.into_iter().zip(&applied.reports) {
            if let ApplyReport::Applied {
                enqueued_children,
                task_state,
                retry_in,
                ..
            } = report
            {
                if *enqueued_children > 0 {
                    match released
                        .iter_mut()
                        .find(|(ns, _, _)| *ns == ticket.namespace)
                    {
                        Some((_, _, n)) => *n += enqueued_children,
                        None => released.push((
                            ticket.namespace.clone(),
                            ticket.queue.as_str().to_owned(),
                            *enqueued_children,
                        )),
                    }
                }
                if retry_in.is_some() {
                    self.signals.wake_retries();
                }
                if task_state.is_some_and(TaskState::is_terminal) {
                    self.signals.task_finished(ticket.task_uuid);
                }
            }
            if let Some(t) = &self.telemetry {
                t.applied(trace, report, elapsed);
            }
        }
        self.pending.fetch_sub(count, Ordering::Relaxed);
        // Released children this process did not claim are in the queue: its pollers look.
        for (namespace, queue, count) in released {
            let claimed = applied.claimed.iter().filter(|c| c.queue == queue).count();
            if count > claimed {
                self.signals.wake_namespace(&namespace);
            }
        }
        self.claimer.hand_out(applied.claimed, budget).await;
    }
}
