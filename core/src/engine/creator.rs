//! Task creation: through the namespace queues' breakers, in one transaction and one round
//! trip, with the roots this process serves claimed at once.
//!
//! Batched per namespace: calls that create tasks of one namespace at the same
//! moment (several application threads) share one transaction and one round trip, as outcomes
//! do in the applier. Idle, a call goes at once; while a namespace's transaction is in flight,
//! the calls that arrive wait, and the next transaction takes them all (no timer). One lane per
//! namespace, so a queue that is slow to write (locked, a breaker's trial) delays only its own
//! namespace's creations. A batch that fails is retried call by call, so that each caller gets
//! its own answer: one caller's bad request or full queue never fails another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, oneshot};

use crate::store::DbPool;

use super::claims::Claimer;
use super::signals::Signals;
use crate::error::{Error, Result};
use crate::orchestration::queue_writer::QueueWriter;
use crate::orchestration::registry::Registry;
use crate::orchestration::{self, CreatedTask, TaskRequest};
use crate::telemetry::Telemetry;

/// Most tasks one batched transaction creates (a single call may be larger: it goes alone).
const MAX_BATCH_TASKS: usize = 1000;

type Reply = oneshot::Sender<Result<Vec<CreatedTask>>>;
type Call = (Vec<TaskRequest>, Reply);

pub(crate) struct Creator {
    pub pool: DbPool,
    pub registry: Arc<Registry>,
    pub writer: Arc<QueueWriter>,
    pub claimer: Arc<Claimer>,
    pub signals: Arc<Signals>,
    pub telemetry: Option<Arc<Telemetry>>,
    /// Tags this engine's cross-process wake-ups, so that it ignores its own echo.
    pub instance_id: Arc<str>,
    /// The lanes, by namespace (created at a namespace's first call).
    lanes: Mutex<HashMap<String, mpsc::UnboundedSender<Call>>>,
}

impl Creator {
    pub fn new(
        pool: DbPool,
        registry: Arc<Registry>,
        writer: Arc<QueueWriter>,
        claimer: Arc<Claimer>,
        signals: Arc<Signals>,
        telemetry: Option<Arc<Telemetry>>,
        instance_id: Arc<str>,
    ) -> Self {
        Creator {
            pool,
            registry,
            writer,
            claimer,
            signals,
            telemetry,
            instance_id,
            lanes: Mutex::default(),
        }
    }

    /// Create tasks: through their namespace's lane when they all belong to one namespace,
    /// else in a transaction of their own. Same answer as [`Creator::create_tasks`].
    pub async fn create_batched(
        self: &Arc<Self>,
        reqs: Vec<TaskRequest>,
    ) -> Result<Vec<CreatedTask>> {
        let namespace = match reqs.split_first() {
            Some((first, rest)) if rest.iter().all(|r| r.namespace == first.namespace) => {
                first.namespace.clone()
            }
            _ => return self.create_tasks(&reqs).await,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let lane = lanes
                .entry(namespace)
                .or_insert_with(|| spawn_lane(Arc::downgrade(self)));
            if let Err(mpsc::error::SendError(call)) = lane.send((reqs, tx)) {
                // The lane ended (its task was cancelled): start another.
                *lane = spawn_lane(Arc::downgrade(self));
                let _ = lane.send(call);
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::NotStarted(
                "the engine shut down before the task was created".into(),
            ))
        })
    }

    pub async fn create_tasks(&self, reqs: &[TaskRequest]) -> Result<Vec<CreatedTask>> {
        let mut regs = Vec::with_capacity(reqs.len());
        for req in reqs {
            regs.push(
                self.registry
                    .lookup(&self.pool, &req.namespace, &req.name, &req.version)
                    .await?,
            );
        }
        let mut queue_names: Vec<&str> = regs.iter().map(|r| r.queue.as_str()).collect();
        queue_names.sort_unstable();
        queue_names.dedup();
        let breakers: Vec<_> = queue_names
            .iter()
            .map(|q| self.writer.breakers.get(q))
            .collect();
        let mut permits = Vec::with_capacity(breakers.len());
        for breaker in &breakers {
            match breaker.try_acquire() {
                Ok(p) => permits.push((breaker.name().to_owned(), p)),
                Err(retry_after) => {
                    for (_, p) in permits {
                        p.release();
                    }
                    return Err(Error::CircuitOpen {
                        breaker: breaker.name().to_owned(),
                        retry_after,
                    });
                }
            }
        }
        let started = std::time::Instant::now();
        // Each task's trace: its own span when exporting, else the caller's context as given.
        let mut spans = Vec::with_capacity(reqs.len());
        let mut tasks = Vec::with_capacity(reqs.len());
        for (req, reg) in reqs.iter().zip(&regs) {
            let parent = req
                .traceparent
                .as_deref()
                .and_then(crate::telemetry::parse_traceparent);
            let span = self.telemetry.as_ref().map(|t| t.task_span(parent.clone()));
            let traceparent = match &span {
                Some(span) => Some(crate::telemetry::format_traceparent(
                    opentelemetry::trace::Span::span_context(span),
                )),
                None => parent.as_ref().map(crate::telemetry::format_traceparent),
            };
            spans.push(span);
            tasks.push(orchestration::create::NewTask {
                reg,
                req,
                traceparent,
            });
        }
        // Slots for the roots that may start now (a scheduled task's wait for their time).
        let now = chrono::Utc::now();
        let roots = tasks
            .iter()
            .filter(|t| t.req.run_at.is_none_or(|at| at <= now))
            .fold(0usize, |n, t| {
                n.saturating_add(t.reg.template.roots().count())
            });
        let scheduled = tasks
            .iter()
            .any(|t| t.req.run_at.is_some_and(|at| at > now));
        let budget = self.claimer.budget(roots);
        let created = orchestration::create::create_tasks(
            &self.pool,
            &tasks,
            &budget.settings(&self.claimer),
            self.writer.lock_timeout,
            &self.instance_id,
        )
        .await;
        let (created, claimed) = match created {
            Ok(done) => {
                for (_, p) in permits {
                    p.success();
                }
                done
            }
            Err(e) => {
                for (name, p) in permits {
                    match &e {
                        Error::Queue { queue, .. } if *queue == name => p.failure(),
                        _ => p.release(),
                    }
                }
                return Err(e);
            }
        };
        // Roots sent to a queue this process serves (not claimed here): its poller looks.
        let mut unclaimed: Vec<&str> = Vec::new();
        for (reg, c) in regs.iter().zip(&created) {
            let roots = reg.template.roots().count();
            let taken = claimed
                .iter()
                .filter(|ch| ch.row.task_uuid == c.task_uuid)
                .count();
            if c.created && roots > taken && !unclaimed.contains(&&*reg.template.namespace) {
                unclaimed.push(&reg.template.namespace);
            }
        }
        for ns in unclaimed {
            self.signals.wake_namespace(ns);
        }
        if scheduled {
            // This process's retry loop learns of the new due times at once (others within a
            // second: their loop never sleeps longer).
            self.signals.wake_retries();
        }
        self.claimer.hand_out(claimed, budget).await;
        for ((reg, span), c) in regs.iter().zip(spans).zip(&created) {
            if let (Some(t), Some(span)) = (&self.telemetry, span) {
                t.task_created(span, reg, c, started.elapsed());
            }
        }
        Ok(created)
    }
}

fn spawn_lane(creator: Weak<Creator>) -> mpsc::UnboundedSender<Call> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut tasks = first.0.len();
            let mut calls = vec![first];
            while tasks < MAX_BATCH_TASKS {
                match rx.try_recv() {
                    Ok(call) => {
                        tasks += call.0.len();
                        calls.push(call);
                    }
                    Err(_) => break,
                }
            }
            // The engine is gone: dropping the calls answers each caller with an error.
            let Some(creator) = creator.upgrade() else {
                break;
            };
            create(&creator, calls).await;
        }
    });
    tx
}

async fn create(creator: &Creator, calls: Vec<Call>) {
    if calls.len() == 1 {
        let Some((reqs, reply)) = calls.into_iter().next() else {
            return;
        };
        let _ = reply.send(creator.create_tasks(&reqs).await);
        return;
    }
    let sizes: Vec<usize> = calls.iter().map(|(reqs, _)| reqs.len()).collect();
    let (all, replies): (Vec<Vec<TaskRequest>>, Vec<Reply>) = calls.into_iter().unzip();
    let all: Vec<TaskRequest> = all.into_iter().flatten().collect();
    match creator.create_tasks(&all).await {
        Ok(created) => {
            let mut created = created.into_iter();
            for (size, reply) in sizes.into_iter().zip(replies) {
                let _ = reply.send(Ok(created.by_ref().take(size).collect()));
            }
        }
        Err(_) => {
            let mut all = all.into_iter();
            for (size, reply) in sizes.into_iter().zip(replies) {
                let reqs: Vec<TaskRequest> = all.by_ref().take(size).collect();
                let _ = reply.send(creator.create_tasks(&reqs).await);
            }
        }
    }
}
