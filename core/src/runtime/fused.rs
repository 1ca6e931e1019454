//! Claiming work for this process in the transaction that creates or releases it: the slots
//! that bound it, the handler breakers that veto it, and handing the claimed steps to the
//! executor channel.

use std::time::{Instant, SystemTime};

use tokio::sync::OwnedSemaphorePermit;

use super::{Dispatch, Shared};
use crate::error::{Error, Result};
use crate::orchestration::results::{ClaimedChild, FusedClaims};
use crate::resilience::CircuitState;
use crate::worker::build_event;

/// Most steps claimed by one create or apply transaction.
const MAX_FUSED: usize = 256;

/// The slots taken for a fused claim and what the transaction needs to know about them.
pub(crate) struct ClaimBudget {
    pub slots: Vec<OwnedSemaphorePermit>,
    blocked: Vec<String>,
}

impl ClaimBudget {
    /// The claim settings for the SQL functions.
    pub fn claims<'a>(&'a self, shared: &'a Shared) -> FusedClaims<'a> {
        FusedClaims {
            queues: &shared.served_queues,
            capacity: self.slots.len(),
            blocked_handlers: &self.blocked,
            worker_id: &shared.worker_id,
            claim_grace_seconds: shared.claim_grace_seconds,
        }
    }
}

impl Shared {
    fn dispatch_open(&self) -> bool {
        self.dispatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Take up to `wanted` of the handler slots free right now (none while stopping or serving
    /// nothing), and note which handlers' breakers are open. `wanted` is the most steps the
    /// transaction can claim (its roots, or the children its completions can release): a slot
    /// taken for nothing is one the poller cannot use meanwhile.
    pub(crate) fn claim_budget(&self, wanted: usize) -> ClaimBudget {
        let mut slots = Vec::new();
        if !self.served_queues.is_empty() && self.dispatch_open() {
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
        ClaimBudget { slots, blocked }
    }

    /// Hand steps claimed in a committed transaction to the executor channel, each in one of
    /// the budget's slots (the unused ones are freed). A step that cannot be handed out runs
    /// after its claim expires.
    pub(crate) async fn hand_out(&self, claimed: Vec<ClaimedChild>, mut budget: ClaimBudget) {
        for child in claimed {
            let Some(permit) = budget.slots.pop() else {
                break;
            };
            if let Err(e) = self.hand_out_one(child, permit).await {
                tracing::warn!(error = %e, "a claimed step could not be handed out; it runs after its claim expires");
            }
        }
    }

    async fn hand_out_one(&self, child: ClaimedChild, permit: OwnedSemaphorePermit) -> Result<()> {
        let reg = self.registry.by_id(&self.pool, child.named_task_id).await?;
        let mut row = child.row;
        row.parent_trace = child
            .parent_trace
            .as_deref()
            .and_then(crate::telemetry::parse_traceparent);
        let event = build_event(Some(&self.names), &reg, &reg.queue, row);
        let admission = if self.handler_classes.contains(&*event.handler_class) {
            self.handler_breakers
                .get(&event.handler_class)
                .try_acquire_owned()
                .ok()
        } else {
            None
        };
        let trace = self
            .telemetry
            .as_ref()
            .map(|t| t.claimed(&event, Instant::now(), SystemTime::now()));
        let dispatch = self
            .dispatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::NotStarted("the engine is stopping".into()))?;
        dispatch
            .try_send(Dispatch::new(event, permit, admission, trace))
            .map_err(|_| Error::NotStarted("the executor channel is closed".into()))
    }
}
