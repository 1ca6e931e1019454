//! tasker-core: the workflow engine behind the `tasker_core` Ruby gem.
//!
//! Templates declare DAGs of steps; tasks created from them are persisted in PostgreSQL and
//! their ready steps travel through pgmq queues to executors (Ruby handler threads through the
//! extension, or Rust code), whose outcomes are applied transactionally. This crate knows
//! nothing of Ruby.

pub mod defaults;
pub mod engine;
pub mod error;
pub mod limits;
pub mod logging;
pub mod messaging;
pub mod orchestration;
pub mod resilience;
pub mod schedule;
pub mod state;
pub mod store;
pub mod strings;
pub mod telemetry;
pub mod template;
pub mod trouble;
pub mod worker;

pub use engine::{Dispatch, Engine, EngineConfig, EngineHandle, NextStep, Slot, TaskWait};
pub use error::{Error, Result};
pub use orchestration::{CreatedTask, TaskRequest};
pub use state::{StepState, TaskState};
pub use worker::{ClaimTicket, FailureKind, StepEvent, StepFailure, StepOutcome};
