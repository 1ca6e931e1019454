//! What crosses to an executor (a claimed step) and what comes back (its outcome).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::messaging::queue::QueueName;

/// Proof of a claim: a result is accepted only with the step's current token.
#[derive(Debug, Clone)]
pub struct ClaimTicket {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub token: Uuid,
    pub msg_id: i64,
    pub queue: QueueName,
    pub namespace: Arc<str>,
    pub correlation_id: Uuid,
    pub priority: i16,
}

/// A claimed step, ready to run. Names are shared `Arc<str>` from the template registry.
#[derive(Debug)]
pub struct StepEvent {
    pub ticket: ClaimTicket,
    pub parent_correlation_id: Option<Uuid>,
    pub task_name: Arc<str>,
    pub task_version: Arc<str>,
    pub step_name: Arc<str>,
    pub handler_class: Arc<str>,
    /// The step's `handler.initialization` from the template.
    pub handler_config: Arc<Value>,
    /// 1 during the first run.
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    pub context: Value,
    /// Names of the step's direct parents, in template order.
    pub parent_names: Vec<Arc<str>>,
    /// Results of every ancestor step, by step name.
    pub dependency_results: Vec<(String, Value)>,
}

impl StepEvent {
    /// The result of an ancestor step, if it has one.
    pub fn dependency_result(&self, name: &str) -> Option<&Value> {
        self.dependency_results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// May run again if attempts remain (a plain exception counts as retryable).
    Retryable,
    /// Never runs again.
    Permanent,
}

/// A failed attempt, as recorded on the step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    pub kind: FailureKind,
    pub error_class: String,
    pub message: String,
    pub backtrace: Vec<String>,
    /// Replaces the computed backoff when present.
    pub retry_after: Option<Duration>,
    pub error_code: Option<String>,
}

/// What an executor reports for a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Success { result: Value, metadata: Value },
    Failure(StepFailure),
}
