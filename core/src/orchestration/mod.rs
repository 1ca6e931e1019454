//! The policy of a workflow's state changes — task creation, result application, retry
//! release, finalization, operator controls — each in one transaction. Claims (and failing a
//! claim that expired on the last attempt) are the engine's pollers' (`engine::poller`,
//! through `store::steps`).

pub mod backoff;
pub(crate) mod controls;
pub mod create;
pub(crate) mod queue_writer;
pub(crate) mod recovery;
pub(crate) mod registry;
pub(crate) mod requests;
pub(crate) mod results;
pub(crate) mod retry;

pub use controls::Intervention;
pub use create::{CreatedTask, TaskRequest};
pub use registry::RegisteredTemplate;
pub use requests::TASK_REQUESTS_QUEUE;
pub use results::ApplyReport;
