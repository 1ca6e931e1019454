//! The executor's side of the boundary: the event a handler receives, the outcome it hands
//! back, and an executor for handlers written in Rust.

mod event;
pub mod rust_handlers;

pub use event::{
    build_event, ClaimTicket, ClaimedRow, FailureKind, StepEvent, StepFailure, StepOutcome,
};
pub use rust_handlers::{HandlerMap, RustExecutor, StepHandler};
