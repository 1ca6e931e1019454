//! The process's handler slots and what fills them: the claimer turns claimed rows into events
//! and hands them to the executor channel, each in a slot and with its handler breaker's
//! admission. Steps are claimed in the transaction that creates or releases them (a fused
//! claim, bounded by a [`ClaimBudget`]) or by a poller's read of its queue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::store::DbPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::dispatch::Dispatch;
use crate::error::{Error, Result};
use crate::orchestration::registry::Registry;
use crate::resilience::{BreakerRegistry, CircuitState, OwnedPermit};
use crate::store::steps::{ClaimSettings, ClaimedStep};
use crate::strings::StringCache;
use crate::telemetry::Telemetry;
use crate::worker::{build_event, StepEvent};

/// Most steps claimed by one create or apply transaction.
const MAX_FUSED: usize = 256;

pub(crate) struct Claimer {
    /// For loading a claimed step's template when this process has not seen it.
    pub pool: DbPool,
    pub registry: Arc<Registry>,
    /// Interned names read from the database (dependency step names).
    pub names: StringCache,
    /// Recorded as the claim owner.
    pub worker_id: String,
    pub claim_grace_seconds: i32,
    /// Queue names of the namespaces this process serves (claimed here when work for them is
    /// created or released).
    pub served_queues: Vec<String>,
    /// Handler slots: `concurrency` permits, one per step claimed and not yet handed back.
    pub slots: Arc<Semaphore>,
    /// One breaker per handler class, consulted before a step of that handler is claimed.
    pub handler_breakers: BreakerRegistry,
    /// Handler classes named by the templates this process loaded: only these get a breaker
    /// (a message's `handler` string never creates one).
    pub handler_classes: HashSet<Arc<str>>,
    pub telemetry: Option<Arc<Telemetry>>,
    /// Where fused claims go (None until [`Claimer::open`], in a process that serves no
    /// namespace, and once the engine is stopping).
    pub dispatch: Mutex<Option<crossbeam_channel::Sender<Dispatch>>>,
    /// Paused namespaces: nothing of theirs is claimed.
    pub pauses: Arc<super::pauses::Pauses>,
    /// Steps whose handler returned here and whose outcome is not applied yet: their
    /// concurrency slots do not count against this process's next claims (no handler of
    /// theirs runs any more; the slot itself is freed when the outcome commits).
    pub finishing: Mutex<HashSet<uuid::Uuid>>,
}

/// The slots taken for a fused claim and what the transaction needs to know about them.
pub(crate) struct ClaimBudget {
    pub slots: Vec<OwnedSemaphorePermit>,
    blocked: Vec<String>,
    /// The served queues minus the paused namespaces' (None: all of them).
    queues: Option<Vec<String>>,
}

impl ClaimBudget {
    /// The claim settings for the SQL functions.
    pub fn settings<'a>(&'a self, claimer: &'a Claimer) -> ClaimSettings<'a> {
        ClaimSettings {
            queues: self.queues.as_deref().unwrap_or(&claimer.served_queues),
            capacity: self.slots.len(),
            blocked_handlers: &self.blocked,
            worker_id: &claimer.worker_id,
            claim_grace_seconds: claimer.claim_grace_seconds,
        }
    }
}

impl Claimer {
    /// Start handing fused claims to `tx` (only a process that serves namespaces does).
    pub fn open(&self, tx: crossbeam_channel::Sender<Dispatch>) {
        *self.dispatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// A step's handler returned: its outcome is on its way to the applier.
    pub fn finishing_add(&self, step: uuid::Uuid) {
        self.finishing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(step);
    }

    /// Outcomes applied (or given up): their steps are no longer finishing here.
    pub fn finishing_remove(&self, steps: impl IntoIterator<Item = uuid::Uuid>) {
        let mut set = self.finishing.lock().unwrap_or_else(|e| e.into_inner());
        for s in steps {
            set.remove(&s);
        }
    }

    /// The steps finishing here now.
    pub fn finishing_now(&self) -> Vec<uuid::Uuid> {
        self.finishing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Nothing is claimed for this process from now on.
    pub fn close(&self) {
        self.dispatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    fn sender(&self) -> Option<crossbeam_channel::Sender<Dispatch>> {
        self.dispatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Take up to `wanted` of the handler slots free right now (none while stopping or serving
    /// nothing), and note which handlers' breakers are open. `wanted` is the most steps the
    /// transaction can claim (its roots, or the children its completions can release): a slot
    /// taken for nothing is one the poller cannot use meanwhile.
    pub fn budget(&self, wanted: usize) -> ClaimBudget {
        let mut slots = Vec::new();
        if !self.served_queues.is_empty() && self.sender().is_some() {
            while slots.len() < wanted.min(MAX_FUSED) {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => slots.push(p),
                    Err(_) => break,
                }
            }
        }
        let blocked = if slots.is_empty() {
            Vec::new()
        } else {
            self.handler_breakers
                .all()
                .into_iter()
                .filter(|b| b.state() != CircuitState::Closed)
                .map(|b| b.name().to_owned())
                .collect()
        };
        let queues = (!slots.is_empty() && self.pauses.any()).then(|| {
            self.served_queues
                .iter()
                .filter(|q| {
                    crate::messaging::queue::QueueName::namespace_of(q)
                        .is_none_or(|ns| !self.pauses.contains(ns))
                })
                .cloned()
                .collect()
        });
        ClaimBudget {
            slots,
            blocked,
            queues,
        }
    }

    /// The event a handler receives for a claimed step.
    pub async fn event(&self, claimed: ClaimedStep) -> Result<StepEvent> {
        let reg = self
            .registry
            .by_id(&self.pool, claimed.named_task_id)
            .await?;
        let mut row = claimed.row;
        row.parent_trace = claimed
            .parent_trace
            .as_deref()
            .and_then(crate::telemetry::parse_traceparent);
        Ok(build_event(Some(&self.names), &reg, &reg.queue, row))
    }

    /// The admission of a step's handler breaker (None for a handler no template names).
    pub fn admission(&self, handler: &str) -> Option<OwnedPermit> {
        if self.handler_classes.contains(handler) {
            self.handler_breakers.get(handler).try_acquire_owned().ok()
        } else {
            None
        }
    }

    /// A claimed step in its slot, ready for the executor channel (its trace starts at `at`).
    pub fn dispatch(
        &self,
        event: StepEvent,
        permit: OwnedSemaphorePermit,
        admission: Option<OwnedPermit>,
        at: (Instant, SystemTime),
    ) -> Dispatch {
        let trace = self
            .telemetry
            .as_ref()
            .map(|t| t.claimed(&event, at.0, at.1));
        Dispatch::new(event, permit, admission, trace)
    }

    /// Hand steps claimed in a committed transaction to the executor channel, each in one of
    /// the budget's slots (the unused ones are freed). A step that cannot be handed out runs
    /// after its claim expires.
    pub async fn hand_out(&self, claimed: Vec<ClaimedStep>, mut budget: ClaimBudget) {
        for step in claimed {
            let Some(permit) = budget.slots.pop() else {
                break;
            };
            if let Err(e) = self.hand_out_one(step, permit).await {
                tracing::warn!(error = %e, "a claimed step could not be handed out; it runs after its claim expires");
            }
        }
    }

    async fn hand_out_one(&self, step: ClaimedStep, permit: OwnedSemaphorePermit) -> Result<()> {
        let event = self.event(step).await?;
        let admission = self.admission(&event.handler_class);
        let dispatch = self.dispatch(
            event,
            permit,
            admission,
            (Instant::now(), SystemTime::now()),
        );
        self.sender()
            .ok_or_else(|| Error::NotStarted("the engine is stopping".into()))?
            .try_send(dispatch)
            .map_err(|_| Error::NotStarted("the executor channel is closed".into()))
    }
}
