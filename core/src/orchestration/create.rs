//! Task creation: one transaction and one round trip insert tasks, their steps, edges and
//! transitions, and send the root steps to their namespace queue (transactional enqueue) —
//! or claim them at once for this process when it serves that namespace.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::registry::RegisteredTemplate;
use super::results::{ClaimedChild, FusedClaims};
use crate::error::{Error, Result};
use crate::state::TaskState;

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

/// SQLSTATE `tasker.create_tasks` raises when a queue cannot be written.
const QUEUE_FAILED: &str = "TQ001";

#[derive(sqlx::FromRow)]
struct CreateRow {
    kind: String,
    task_index: i32,
    status: String,
    created: bool,
    #[sqlx(flatten)]
    claim: crate::worker::claim::ClaimColumns,
}

/// Create tasks — each with its steps, edges and history, its root steps sent to its
/// namespace queue — in one transaction and one round trip (`tasker.create_tasks`). A task
/// whose idempotency key its template already has returns the existing task. Roots of the
/// queues this process serves are claimed at once as `claims` allows. A queue that cannot be
/// written fails the whole call and nothing is written.
pub(crate) async fn create_tasks(
    pool: &PgPool,
    tasks: &[NewTask<'_>],
    claims: &FusedClaims<'_>,
    lock_timeout: std::time::Duration,
    sender: &str,
) -> Result<(Vec<CreatedTask>, Vec<ClaimedChild>)> {
    for t in tasks {
        validate_request(t.req)?;
    }
    let n = tasks.len();
    let mut named = Vec::with_capacity(n);
    let mut namespaces = Vec::with_capacity(n);
    let mut queues = Vec::with_capacity(n);
    let mut task_uuids = Vec::with_capacity(n);
    let mut contexts = Vec::with_capacity(n);
    let mut correlations = Vec::with_capacity(n);
    let mut parents = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut traceparents = Vec::with_capacity(n);
    let (mut step_tasks, mut step_uuids, mut step_names, mut positions, mut handlers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ancestors = Vec::new();
    let (mut max_attempts, mut retryable, mut base, mut max_backoff, mut timeouts, mut pending) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut edge_tasks, mut edge_from, mut edge_to) = (Vec::new(), Vec::new(), Vec::new());
    for (i, t) in tasks.iter().enumerate() {
        let index = i as i32 + 1;
        let template = &t.reg.template;
        named.push(t.reg.named_task_id);
        namespaces.push(&*template.namespace);
        queues.push(t.reg.queue.as_str());
        task_uuids.push(Uuid::now_v7());
        contexts.push(&t.req.context);
        correlations.push(t.req.correlation_id.unwrap_or_else(Uuid::now_v7));
        parents.push(t.req.parent_correlation_id);
        keys.push(t.req.idempotency_key.as_deref());
        priorities.push(t.req.priority);
        traceparents.push(t.traceparent.as_deref());
        let first = step_uuids.len();
        for (position, step) in template.steps.iter().enumerate() {
            step_tasks.push(index);
            step_uuids.push(Uuid::now_v7());
            step_names.push(&*step.name);
            positions.push(position as i32);
            handlers.push(&*step.handler_class);
            max_attempts.push(step.retry.max_attempts as i32);
            retryable.push(step.retry.retryable);
            base.push(step.retry.backoff_base_ms.min(i32::MAX as u64) as i32);
            max_backoff.push(step.retry.max_backoff_ms.min(i32::MAX as u64) as i32);
            timeouts.push(step.timeout_seconds as i32);
            pending.push(step.parents.len() as i32);
            ancestors.push(&*step.ancestors);
        }
        for (child, step) in template.steps.iter().enumerate() {
            for &parent in &step.parents {
                edge_tasks.push(index);
                edge_from.push(step_uuids[first + parent]);
                edge_to.push(step_uuids[first + child]);
            }
        }
    }
    let rows: std::result::Result<Vec<CreateRow>, sqlx::Error> = sqlx::query_as(
        "SELECT * FROM tasker.create_tasks($1, $2, $3, $4, $5::jsonb[], $6, $7, $8, $9, $10, $11, $12, \
           $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)",
    )
    .bind(&named)
    .bind(&namespaces)
    .bind(&queues)
    .bind(&task_uuids)
    .bind(&contexts)
    .bind(&correlations)
    .bind(&parents)
    .bind(&keys)
    .bind(&priorities)
    .bind(&traceparents)
    .bind(&step_tasks)
    .bind(&step_uuids)
    .bind(&step_names)
    .bind(&positions)
    .bind(&handlers)
    .bind(&max_attempts)
    .bind(&retryable)
    .bind(&base)
    .bind(&max_backoff)
    .bind(&timeouts)
    .bind(&pending)
    .bind(&ancestors)
    .bind(&edge_tasks)
    .bind(&edge_from)
    .bind(&edge_to)
    .bind(claims.queues)
    .bind(claims.capacity.min(i32::MAX as usize) as i32)
    .bind(claims.blocked_handlers)
    .bind(claims.worker_id)
    .bind(claims.claim_grace_seconds)
    .bind(lock_timeout.as_millis().min(i32::MAX as u128) as i32)
    .bind(sender)
    .fetch_all(pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(QUEUE_FAILED) => {
            let message = db.message().to_owned();
            let queue = message
                .strip_prefix("queue ")
                .and_then(|m| m.split(' ').next())
                .unwrap_or_default()
                .to_owned();
            return Err(Error::Queue { queue, message });
        }
        Err(e) => return Err(e.into()),
    };
    let mut created: Vec<Option<CreatedTask>> = (0..n).map(|_| None).collect();
    let mut claimed = Vec::new();
    for row in rows {
        let Some(i) = (row.task_index as usize).checked_sub(1).filter(|&i| i < n) else {
            continue;
        };
        match row.kind.as_str() {
            "task" => {
                let (Some(task_uuid), Some(correlation_id)) =
                    (row.claim.task_uuid, row.claim.correlation_id)
                else {
                    continue;
                };
                created[i] = Some(CreatedTask {
                    task_uuid,
                    correlation_id,
                    parent_correlation_id: row.claim.parent_correlation_id,
                    status: row.status.parse()?,
                    created: row.created,
                });
            }
            "claimed" => {
                if let Some(child) = row.claim.into_child(queues[i].to_owned()) {
                    claimed.push(child);
                }
            }
            _ => {}
        }
    }
    let created = created
        .into_iter()
        .map(|c| {
            c.ok_or_else(|| Error::InvalidInput("create_tasks returned no row for a task".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    for c in created.iter().filter(|c| c.created) {
        tracing::debug!(task_uuid = %c.task_uuid, correlation_id = %c.correlation_id, "task created");
    }
    Ok((created, claimed))
}
