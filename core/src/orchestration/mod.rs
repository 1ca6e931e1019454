//! Task creation, result application, retry release and finalization: every state change of
//! a workflow happens here, each in one transaction.

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
