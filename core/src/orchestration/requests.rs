//! Asynchronous task creation through the `tasker_task_requests` queue: the message format and
//! what becomes of each request (the engine's request consumer reads, creates and settles). A
//! request becomes a task exactly once: a redelivered request carries the same idempotency key
//! (its own, or one derived from its message id). A request that can never succeed is archived
//! with the reason.

use crate::store::DbPool;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::create::{named_priority, TaskRequest, PRIORITY_RANGE};
use crate::error::{Error, Result};
use crate::messaging::queue::QueueName;
use crate::store::queues::{self, ReadMessage};

/// The queue producers send task requests to.
pub const TASK_REQUESTS_QUEUE: &str = "tasker_task_requests";

/// After this many failed deliveries (database errors) a request is archived.
const MAX_DELIVERIES: i32 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestMessage {
    namespace: String,
    name: String,
    version: String,
    #[serde(default = "empty_object")]
    context: Value,
    correlation_id: Option<Uuid>,
    parent_correlation_id: Option<Uuid>,
    idempotency_key: Option<String>,
    #[serde(default)]
    priority: Option<Value>,
    /// W3C trace context of the producer.
    #[serde(default)]
    traceparent: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn priority(value: Option<Value>) -> std::result::Result<i16, String> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => {
            named_priority(&s).ok_or_else(|| format!("unknown priority {s:?}"))
        }
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|p| i16::try_from(p).ok())
            .filter(|p| PRIORITY_RANGE.contains(p))
            .ok_or_else(|| {
                format!(
                    "priority {n} is not an integer from {} to {}",
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end()
                )
            }),
        Some(other) => Err(format!(
            "priority must be a name or an integer, got {other}"
        )),
    }
}

/// Queue a task request (the same JSON any producer may send with plain SQL).
pub(crate) async fn send_request(pool: &DbPool, request: &Value) -> Result<i64> {
    if !request.is_object() {
        return Err(Error::InvalidInput(
            "a task request must be a JSON object".into(),
        ));
    }
    queues::send(pool, &queue(), request).await
}

/// What happened to one request.
#[derive(Debug, PartialEq)]
pub(crate) enum RequestOutcome {
    Created(Uuid),
    Archived(String),
    /// A transient failure: the request comes back after its visibility timeout.
    Deferred,
}

/// The task requests queue.
pub(crate) fn queue() -> QueueName {
    QueueName::from_static(TASK_REQUESTS_QUEUE)
}

/// The task a request message asks for, or why it can never become one (the reason it is
/// archived with). Without an idempotency key of its own, the request's message id gives it
/// one, so that a redelivered request makes one task.
pub(crate) fn to_request(m: &ReadMessage) -> std::result::Result<TaskRequest, String> {
    let request: RequestMessage = m
        .decode()
        .map_err(|why| format!("malformed task request: {why}"))?;
    let priority = priority(request.priority)?;
    Ok(TaskRequest {
        namespace: request.namespace,
        name: request.name,
        version: request.version,
        context: request.context,
        correlation_id: request.correlation_id,
        parent_correlation_id: request.parent_correlation_id,
        idempotency_key: Some(
            request
                .idempotency_key
                .unwrap_or_else(|| format!("task-request:{}", m.msg_id)),
        ),
        priority,
        traceparent: request.traceparent,
        run_at: None,
        flow: None,
    })
}

/// What a failed creation means for its request, delivered `read_ct` times so far.
pub(crate) fn after_failure(msg_id: i64, read_ct: i32, e: &Error) -> RequestOutcome {
    match e {
        // The namespace queue is failing: the request waits for it, however long that takes.
        Error::CircuitOpen { .. } | Error::Queue { .. } => {
            tracing::warn!(msg_id, error = %e, "task request deferred until its queue works");
            RequestOutcome::Deferred
        }
        Error::Database(_) | Error::Migration(_) if read_ct < MAX_DELIVERIES => {
            tracing::warn!(msg_id, error = %e, "task request failed; it will be retried");
            RequestOutcome::Deferred
        }
        e => RequestOutcome::Archived(format!("task request refused: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::priority;
    use serde_json::json;

    #[test]
    fn priorities_by_name_or_number() {
        assert_eq!(priority(None), Ok(0));
        assert_eq!(priority(Some(json!("high"))), Ok(10));
        assert_eq!(priority(Some(json!(-5))), Ok(-5));
        assert!(priority(Some(json!("urgent"))).is_err());
        assert!(priority(Some(json!(1000))).is_err());
        assert!(priority(Some(json!(1.5))).is_err());
    }
}
