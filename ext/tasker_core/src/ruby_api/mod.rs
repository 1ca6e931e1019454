//! One file per Ruby class or module the extension defines under `TaskerCore::Native`.

pub mod bench;
pub mod circuit_breakers;
pub mod engine;
pub mod log;
pub mod native;
pub mod step_event;
