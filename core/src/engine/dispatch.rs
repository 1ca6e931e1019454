//! What an executor receives (a claimed step in its handler slot) and hands back.

use tokio::sync::OwnedSemaphorePermit;

use crate::resilience::OwnedPermit;
use crate::telemetry::StepTrace;
use crate::worker::{ClaimTicket, StepEvent, StepOutcome};

/// A claimed step plus the handler slot it occupies until its outcome is handed back.
#[derive(Debug)]
pub struct Dispatch {
    pub event: StepEvent,
    pub(super) slot: Slot,
}

/// A handler slot taken by a dispatched step, and the admission of its handler's circuit
/// breaker; dropping it frees the slot (an admission never settled counts as a failure).
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    handler: Option<OwnedPermit>,
    pub(super) trace: Option<StepTrace>,
}

impl Slot {
    /// Give the handler's breaker its verdict on this attempt (`Admission::settle`: only a
    /// fault counts against it).
    pub(super) fn settle(&mut self, outcome: &StepOutcome) {
        if let Some(admission) = self.handler.take() {
            admission.settle(matches!(outcome, StepOutcome::Failure(f) if f.fault));
        }
    }
}

impl Dispatch {
    pub(crate) fn new(
        event: StepEvent,
        permit: OwnedSemaphorePermit,
        handler: Option<OwnedPermit>,
        trace: Option<StepTrace>,
    ) -> Self {
        Dispatch {
            event,
            slot: Slot {
                _permit: Some(permit),
                handler,
                trace,
            },
        }
    }

    /// An event that occupies no engine slot (benchmarks and tests of the boundary).
    pub fn detached(event: StepEvent) -> Self {
        Dispatch {
            event,
            slot: Slot {
                _permit: None,
                handler: None,
                trace: None,
            },
        }
    }

    /// Separate the event (which an executor may keep reading) from the slot (which is
    /// handed back with the outcome).
    pub fn into_parts(self) -> (StepEvent, Slot) {
        (self.event, self.slot)
    }
}

/// Result of waiting for the next step.
#[derive(Debug)]
pub enum NextStep {
    Step(Box<Dispatch>),
    /// Nothing arrived in time.
    Timeout,
    /// The engine is shutting down and every claimed step has been handed out.
    Closed,
}

/// An outcome handed back, on its way to the applier.
pub(crate) type Completion = (ClaimTicket, StepOutcome, Option<StepTrace>);
