//! Task creation: one transaction and one round trip insert tasks, their steps, edges and
//! transitions, and send the root steps to their namespace queue (transactional enqueue) —
//! or claim them at once for this process when it serves that namespace.

use serde_json::Value;
use uuid::Uuid;

use super::registry::RegisteredTemplate;
use crate::error::{Error, Result};
use crate::state::TaskState;
use crate::store::steps::{ClaimSettings, ClaimedStep};

/// The named task priorities and their values (higher is read first).
pub const NAMED_PRIORITIES: [(&str, i16); 4] =
    [("low", -10), ("normal", 0), ("high", 10), ("critical", 20)];
/// The priorities a task may have.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i16> = -100..=100;

/// A priority given by name (`NAMED_PRIORITIES`).
pub fn named_priority(name: &str) -> Option<i16> {
    NAMED_PRIORITIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
}

/// What a caller asks for.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub namespace: String,
    pub name: String,
    pub version: String,
    /// Must be a JSON object.
    pub context: Value,
    pub correlation_id: Option<Uuid>,
    pub parent_correlation_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub priority: i16,
    /// The caller's W3C trace context: the task's trace continues it.
    pub traceparent: Option<String>,
    /// When the task's root steps may start (None or a time passed: at once). The task exists
    /// (visible, cancellable) from its creation; its roots wait as `waiting_for_retry` until
    /// then, released by the retry loop of any worker process.
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Flow limits for every step of this task in place of its template's, with their keys
    /// already resolved (an Active Job class's `tasker_core_options`):
    /// `{"concurrency": {"key", "limit"}, "rate": {"key", "limit", "per"}}`.
    pub flow: Option<Value>,
}

/// The task that a request produced (or, with an idempotency key, found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTask {
    pub task_uuid: Uuid,
    pub correlation_id: Uuid,
    pub parent_correlation_id: Option<Uuid>,
    pub status: TaskState,
    /// False when an existing task was returned for the same idempotency key.
    pub created: bool,
}

const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

pub(crate) fn validate_request(req: &TaskRequest) -> Result<()> {
    if !req.context.is_object() {
        return Err(Error::InvalidInput(format!(
            "context must be a JSON object (a Hash), got {}",
            json_kind(&req.context)
        )));
    }
    if let Err(why) = crate::limits::storable_json(&req.context) {
        return Err(Error::InvalidInput(format!("context: {why}")));
    }
    if let Some(key) = &req.idempotency_key {
        if key.contains('\0') {
            return Err(Error::InvalidInput(
                "idempotency_key contains a NUL byte, which PostgreSQL cannot store".into(),
            ));
        }
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Error::InvalidInput(format!(
                "idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} bytes"
            )));
        }
    }
    if let Some(flow) = &req.flow {
        crate::template::flow::check_resolved(flow).map_err(Error::InvalidInput)?;
    }
    if let Some(at) = req.run_at {
        let ahead = (at - chrono::Utc::now()).num_milliseconds() as f64 / 1000.0;
        if ahead > crate::limits::MAX_SECONDS {
            return Err(Error::InvalidInput(format!(
                "run_at may be at most {} days ahead, got {at}",
                crate::limits::MAX_SECONDS / 86_400.0
            )));
        }
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A task to create: its template, the caller's request, and the trace context it continues.
pub(crate) struct NewTask<'a> {
    pub reg: &'a RegisteredTemplate,
    pub req: &'a TaskRequest,
    pub traceparent: Option<String>,
}

/// Create tasks — each with its steps, edges and history, its root steps sent to its
/// namespace queue — in one transaction and one round trip (`store::tasks::create_tasks`),
/// after checking every request. A task whose idempotency key its template already has returns
/// the existing task. Roots of the queues this process serves are claimed at once as `claims`
/// allows. A queue that cannot be written fails the whole call and nothing is written.
pub(crate) async fn create_tasks<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tasks: &[NewTask<'_>],
    claims: &ClaimSettings<'_>,
    lock_timeout: std::time::Duration,
    sender: &str,
) -> Result<(Vec<CreatedTask>, Vec<ClaimedStep>)> {
    for t in tasks {
        validate_request(t.req)?;
    }
    let (created, claimed) =
        crate::store::tasks::create_tasks(db, tasks, claims, lock_timeout, sender).await?;
    for c in created.iter().filter(|c| c.created) {
        tracing::debug!(task_uuid = %c.task_uuid, correlation_id = %c.correlation_id, "task created");
    }
    Ok((created, claimed))
}
