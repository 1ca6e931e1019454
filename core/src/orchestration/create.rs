//! Task creation: one transaction inserts the task, its steps, edges and transitions, and
//! sends the root steps to the namespace queue (transactional enqueue).

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::registry::RegisteredTemplate;
use super::results::QueueGuard;
use crate::error::{Error, Result};
use crate::messaging::{self, StepMessage};
use crate::state::{StepState, TaskState};
use crate::store::transitions;

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

/// Insert a task for `reg` and enqueue its root steps, all in one transaction.
pub(crate) async fn create_task(
    pool: &PgPool,
    reg: &RegisteredTemplate,
    req: &TaskRequest,
    queue: QueueGuard<'_>,
    traceparent: Option<&str>,
) -> Result<CreatedTask> {
    validate_request(req)?;
    let template = &reg.template;
    let task_uuid = Uuid::now_v7();
    let correlation_id = req.correlation_id.unwrap_or_else(Uuid::now_v7);

    let mut tx = pool.begin().await?;
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO tasker.tasks (task_uuid, named_task_id, namespace, status, context, \
           correlation_id, parent_correlation_id, idempotency_key, priority, traceparent) \
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (named_task_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING task_uuid",
    )
    .bind(task_uuid)
    .bind(reg.named_task_id)
    .bind(&*template.namespace)
    .bind(&req.context)
    .bind(correlation_id)
    .bind(req.parent_correlation_id)
    .bind(&req.idempotency_key)
    .bind(req.priority)
    .bind(traceparent)
    .fetch_optional(&mut *tx)
    .await?;

    if inserted.is_none() {
        // Same idempotency key: the conflicting row is committed (ON CONFLICT waited for it).
        let (uuid, corr, parent, status): (Uuid, Uuid, Option<Uuid>, String) = sqlx::query_as(
            "SELECT task_uuid, correlation_id, parent_correlation_id, status FROM tasker.tasks \
             WHERE named_task_id = $1 AND idempotency_key = $2",
        )
        .bind(reg.named_task_id)
        .bind(&req.idempotency_key)
        .fetch_one(&mut *tx)
        .await?;
        tx.rollback().await?;
        return Ok(CreatedTask {
            task_uuid: uuid,
            correlation_id: corr,
            parent_correlation_id: parent,
            status: status.parse()?,
            created: false,
        });
    }

    let n = template.steps.len();
    let step_uuids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let roots: Vec<usize> = template.roots().collect();
    let names: Vec<&str> = template.steps.iter().map(|s| &*s.name).collect();
    let positions: Vec<i32> = (0..n as i32).collect();
    let handlers: Vec<&str> = template.steps.iter().map(|s| &*s.handler_class).collect();
    let states: Vec<&str> = (0..n)
        .map(|i| {
            if template.steps[i].parents.is_empty() {
                StepState::Enqueued.as_str()
            } else {
                StepState::Pending.as_str()
            }
        })
        .collect();
    let max_attempts: Vec<i32> = template
        .steps
        .iter()
        .map(|s| s.retry.max_attempts as i32)
        .collect();
    let retryable: Vec<bool> = template.steps.iter().map(|s| s.retry.retryable).collect();
    let base: Vec<i32> = template
        .steps
        .iter()
        .map(|s| s.retry.backoff_base_ms as i32)
        .collect();
    let max_backoff: Vec<i32> = template
        .steps
        .iter()
        .map(|s| s.retry.max_backoff_ms as i32)
        .collect();
    let timeouts: Vec<i32> = template
        .steps
        .iter()
        .map(|s| s.timeout_seconds as i32)
        .collect();
    let pending: Vec<i32> = template
        .steps
        .iter()
        .map(|s| s.parents.len() as i32)
        .collect();
    sqlx::query(
        "INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, position, handler_class, \
           state, max_attempts, retryable, backoff_base_ms, max_backoff_ms, timeout_seconds, \
           pending_parents) \
         SELECT u, $2, n, p, h, s, ma, r, b, mb, t, pp \
         FROM unnest($1::uuid[], $3::text[], $4::int[], $5::text[], $6::text[], $7::int[], \
                     $8::bool[], $9::int[], $10::int[], $11::int[], $12::int[]) \
           AS x(u, n, p, h, s, ma, r, b, mb, t, pp)",
    )
    .bind(&step_uuids)
    .bind(task_uuid)
    .bind(&names)
    .bind(&positions)
    .bind(&handlers)
    .bind(&states)
    .bind(&max_attempts)
    .bind(&retryable)
    .bind(&base)
    .bind(&max_backoff)
    .bind(&timeouts)
    .bind(&pending)
    .execute(&mut *tx)
    .await?;

    let uuids = &step_uuids;
    let (froms, tos): (Vec<Uuid>, Vec<Uuid>) = template
        .steps
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.parents.iter().map(move |&p| (uuids[p], uuids[i])))
        .unzip();
    if !froms.is_empty() {
        sqlx::query(
            "INSERT INTO tasker.workflow_step_edges (from_step_uuid, to_step_uuid) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[])",
        )
        .bind(&froms)
        .bind(&tos)
        .execute(&mut *tx)
        .await?;
    }

    // History: every step starts pending; roots move on to enqueued at once.
    let history_most_recent: Vec<bool> = (0..n).map(|i| !roots.contains(&i)).collect();
    sqlx::query(
        "INSERT INTO tasker.workflow_step_transitions \
           (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent) \
         SELECT u, $2, NULL, 'pending', 1, m FROM unnest($1::uuid[], $3::bool[]) AS x(u, m)",
    )
    .bind(&step_uuids)
    .bind(task_uuid)
    .bind(&history_most_recent)
    .execute(&mut *tx)
    .await?;
    let root_uuids: Vec<Uuid> = roots.iter().map(|&i| step_uuids[i]).collect();
    sqlx::query(
        "INSERT INTO tasker.workflow_step_transitions \
           (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent) \
         SELECT u, $2, 'pending', 'enqueued', 2, true FROM unnest($1::uuid[]) AS x(u)",
    )
    .bind(&root_uuids)
    .bind(task_uuid)
    .execute(&mut *tx)
    .await?;

    transitions::record_task(&mut tx, task_uuid, None, TaskState::Pending, json!({})).await?;
    transitions::record_task(
        &mut tx,
        task_uuid,
        Some(TaskState::Pending),
        TaskState::InProgress,
        json!({ "enqueued_steps": root_uuids.len() }),
    )
    .await?;

    let messages: Vec<StepMessage> = roots
        .iter()
        .map(|&i| StepMessage {
            task_uuid,
            step_uuid: step_uuids[i],
            correlation_id,
            priority: req.priority,
            handler: Some(template.steps[i].handler_class.to_string()),
        })
        .collect();
    // The queue last: a queue that fails (or whose breaker is open) leaves nothing written.
    let permit = queue
        .breaker
        .try_acquire()
        .map_err(|retry_after| Error::CircuitOpen {
            breaker: queue.breaker.name().to_owned(),
            retry_after,
        })?;
    let written = messaging::write_queue(
        &mut tx,
        &reg.queue,
        &template.namespace,
        &messages,
        None,
        queue.lock_timeout,
    )
    .await;
    match written {
        Ok(None) => permit.success(),
        Ok(Some(message)) => {
            permit.failure();
            return Err(Error::Queue {
                queue: reg.queue.as_str().to_owned(),
                message,
            });
        }
        Err(e) => {
            permit.release();
            return Err(e);
        }
    }
    tx.commit().await?;

    tracing::debug!(%task_uuid, %correlation_id, namespace = %template.namespace,
        task = %template.name, "task created");
    Ok(CreatedTask {
        task_uuid,
        correlation_id,
        parent_correlation_id: req.parent_correlation_id,
        status: TaskState::InProgress,
        created: true,
    })
}
