//! The worker side: claiming steps from namespace queues and the channels that a foreign
//! executor (Ruby handler threads, or Rust code) pulls events from and pushes outcomes to.

pub(crate) mod claim;
mod event;
pub(crate) mod poller;
pub mod rust_handlers;

pub use event::{
    build_event, ClaimTicket, ClaimedRow, FailureKind, StepEvent, StepFailure, StepOutcome,
};
pub use rust_handlers::{HandlerMap, RustExecutor, StepHandler};
