//! What travels through pgmq: queue names, the step message and the notification channels.
//! The statements that send, read and settle messages are in [`crate::store`] (`queues` for
//! queue tables and task requests; a namespace queue is read and settled by `tasker.claim_steps`
//! through `store::steps`).

pub mod queue;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Channel for cross-process "work was enqueued in namespace X" wake-ups (payload: namespace).
pub const WAKEUP_CHANNEL: &str = "tasker_wakeup";
/// Channel for "these tasks reached a terminal state" (payload: task uuids, comma-separated).
pub const FINALIZED_CHANNEL: &str = "tasker_task_finalized";

/// A queue message is a pointer: the database row is the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMessage {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub correlation_id: Uuid,
    /// The task's priority: higher is read first.
    #[serde(default)]
    pub priority: i16,
    /// The step's handler class, so a worker can consult that handler's circuit breaker
    /// before claiming (absent in messages from older producers: no check then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
}
