//! What crosses to an executor (a claimed step) and what comes back (its outcome).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceId};
use serde_json::Value;
use uuid::Uuid;

use crate::messaging::queue::QueueName;
use crate::orchestration::RegisteredTemplate;
use crate::strings::StringCache;

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
    /// This attempt's number and the step's backoff settings (the backoff is computed when
    /// the outcome is applied).
    pub attempt: u32,
    pub backoff_base_ms: u64,
    pub max_backoff_ms: u64,
    /// The step's direct children in its template (how many handler slots its completion
    /// may claim; `u32::MAX` when the template no longer has the step).
    pub children: u32,
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
    /// Names of the step's direct parents, in template order (shared with the template).
    pub parent_names: Arc<[Arc<str>]>,
    /// Results of every ancestor step, by step name.
    pub dependency_results: Vec<(Arc<str>, Value)>,
    /// The task's trace context (from its `traceparent`), parent of this attempt's span.
    pub parent_trace: Option<SpanContext>,
    /// Trace and span id of the handler's span, when traces are exported.
    pub trace_ids: Option<(TraceId, SpanId)>,
}

impl StepEvent {
    /// The result of an ancestor step, if it has one.
    pub fn dependency_result(&self, name: &str) -> Option<&Value> {
        self.dependency_results
            .iter()
            .find(|(n, _)| &**n == name)
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
    /// A fault of the handler itself (a timeout, an unclassified exception) rather than a
    /// business outcome: counts against the handler's circuit breaker.
    pub fault: bool,
    pub error_code: Option<String>,
    /// What the handler attached to its error (`StepError#metadata`, e.g. an HTTP status and
    /// URL), stored with the failure.
    pub metadata: Option<serde_json::Value>,
}

impl StepFailure {
    /// The step's stored `error` for this failure of attempt `attempt` (the one definition of
    /// its JSON form: `error_class`, `message`, `backtrace`, `retryable`, `attempt`, and when
    /// present `error_code`, `retry_after_seconds`, `metadata`).
    pub fn recorded(&self, attempt: u32) -> Value {
        let mut v = serde_json::json!({
            "error_class": self.error_class,
            "message": self.message,
            "backtrace": self.backtrace,
            "retryable": self.kind == FailureKind::Retryable,
            "attempt": attempt,
        });
        if let Some(code) = &self.error_code {
            v["error_code"] = serde_json::json!(code);
        }
        if let Some(after) = self.retry_after {
            v["retry_after_seconds"] = serde_json::json!(after.as_secs_f64());
        }
        if let Some(metadata) = &self.metadata {
            v["metadata"] = metadata.clone();
        }
        v
    }

    /// The failure recorded in place of an outcome PostgreSQL refused to store (see
    /// [`crate::Error::is_data_error`]): permanent, with the database's reason. The text is
    /// made storable itself (no NUL bytes).
    pub fn unstorable(e: &crate::Error) -> StepFailure {
        let reason = e.to_string().replace('\0', "\u{FFFD}");
        StepFailure {
            kind: FailureKind::Permanent,
            error_class: "TaskerCore::Errors::InvalidResultError".into(),
            message: format!("PostgreSQL cannot store this step's outcome: {reason}"),
            backtrace: Vec::new(),
            retry_after: None,
            fault: false,
            error_code: Some("unstorable_outcome".into()),
            metadata: None,
        }
    }
}

/// What an executor reports for a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Success { result: Value, metadata: Value },
    Failure(StepFailure),
}

/// A claimed step as read from the database, before it becomes a [`StepEvent`].
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    /// The task's stored trace context.
    pub parent_trace: Option<SpanContext>,
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub token: Uuid,
    pub msg_id: i64,
    pub correlation_id: Uuid,
    pub parent_correlation_id: Option<Uuid>,
    pub priority: i16,
    pub step_name: String,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_seconds: u32,
    pub context: Value,
    pub dependency_results: Vec<(String, Value)>,
}

/// Turn a claimed row into the event handed to an executor. Names come from the template
/// (shared `Arc<str>`s) or, for names read from the database, from `names`; with `names` set
/// to None every name is copied afresh (the naive baseline the benchmarks compare against).
pub fn build_event(
    names: Option<&StringCache>,
    reg: &RegisteredTemplate,
    queue: &QueueName,
    row: ClaimedRow,
) -> StepEvent {
    let template = &reg.template;
    let share = |s: &Arc<str>| -> Arc<str> {
        match names {
            Some(_) => s.clone(),
            None => Arc::from(&**s),
        }
    };
    let intern = |s: &str| -> Arc<str> {
        match names {
            Some(cache) => cache.intern(s),
            None => Arc::from(s),
        }
    };
    let step = template.step(&row.step_name);
    let (step_name, handler_class, handler_config, parent_names) = match step {
        Some(s) => (
            share(&s.name),
            share(&s.handler_class),
            s.initialization.clone(),
            match names {
                Some(_) => s.parent_names.clone(),
                None => s.parent_names.iter().map(share).collect(),
            },
        ),
        // A step renamed since the task was created: no handler will match it.
        None => (
            intern(&row.step_name),
            Arc::from(""),
            Arc::new(Value::Object(Default::default())),
            Arc::from([]),
        ),
    };
    let retry = step.map(|s| s.retry.clone()).unwrap_or_default();
    StepEvent {
        ticket: ClaimTicket {
            task_uuid: row.task_uuid,
            step_uuid: row.step_uuid,
            token: row.token,
            msg_id: row.msg_id,
            queue: queue.clone(),
            namespace: share(&template.namespace),
            correlation_id: row.correlation_id,
            priority: row.priority,
            attempt: row.attempts,
            backoff_base_ms: retry.backoff_base_ms,
            max_backoff_ms: retry.max_backoff_ms,
            children: step.map_or(u32::MAX, |s| s.child_count),
        },
        parent_correlation_id: row.parent_correlation_id,
        task_name: share(&template.name),
        task_version: share(&template.version),
        step_name,
        handler_class,
        handler_config,
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        timeout_seconds: row.timeout_seconds,
        context: row.context,
        parent_names,
        dependency_results: row
            .dependency_results
            .into_iter()
            .map(|(name, value)| (intern(&name), value))
            .collect(),
        parent_trace: row.parent_trace,
        trace_ids: None,
    }
}
