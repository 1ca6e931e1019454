//! `tasker.tasks` (with the steps, edges and history a new task brings): creating tasks,
//! locking one for an operator's change, deciding its state, announcing its end.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::steps::{ClaimColumns, ClaimSettings, ClaimedStep};
use crate::error::{Error, Result};
use crate::messaging::{self, queue::QueueName};
use crate::orchestration::create::NewTask;
use crate::orchestration::CreatedTask;
use crate::state::TaskState;

/// SQLSTATE `tasker.create_tasks` raises when a queue cannot be written.
const QUEUE_FAILED: &str = "TQ001";

#[derive(sqlx::FromRow)]
struct CreateRow {
    kind: String,
    task_index: i32,
    status: String,
    created: bool,
    #[sqlx(flatten)]
    claim: ClaimColumns,
}

/// Create tasks — each with its steps, edges and history, its root steps sent to its
/// namespace queue — in one transaction and one round trip (`tasker.create_tasks`). A task
/// whose idempotency key its template already has returns the existing task. Roots of the
/// queues this process serves are claimed at once as `claims` allows. A queue that cannot be
/// written fails the whole call and nothing is written. The requests were checked by
/// [`crate::orchestration::create::create_tasks`].
/// The arguments of `tasker.create_tasks` for a batch of tasks, before the claim settings: the
/// one place they are built, bound as parameters ([`create_tasks`]) or given as one JSON
/// document to `tasker.create_tasks_json` ([`create_call_json`]).
#[derive(serde::Serialize)]
struct CreateArgs<'a> {
    named_task_ids: Vec<i64>,
    namespaces: Vec<&'a str>,
    queues: Vec<&'a str>,
    task_uuids: Vec<Uuid>,
    contexts: Vec<&'a serde_json::Value>,
    correlations: Vec<Uuid>,
    parent_correlations: Vec<Option<Uuid>>,
    idempotency_keys: Vec<Option<&'a str>>,
    priorities: Vec<i16>,
    traceparents: Vec<Option<&'a str>>,
    run_ats: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    step_tasks: Vec<i32>,
    step_uuids: Vec<Uuid>,
    step_names: Vec<&'a str>,
    step_positions: Vec<i32>,
    step_handlers: Vec<&'a str>,
    step_max_attempts: Vec<i32>,
    step_retryable: Vec<bool>,
    step_backoff_base_ms: Vec<i32>,
    step_max_backoff_ms: Vec<i32>,
    step_timeouts: Vec<i32>,
    step_pending: Vec<i32>,
    step_ancestors: Vec<&'a str>,
    step_flows: Vec<Option<serde_json::Value>>,
    edge_tasks: Vec<i32>,
    edge_from: Vec<Uuid>,
    edge_to: Vec<Uuid>,
}

impl<'a> CreateArgs<'a> {
    fn new(tasks: &'a [NewTask<'a>]) -> CreateArgs<'a> {
        let n = tasks.len();
        let mut a = CreateArgs {
            named_task_ids: Vec::with_capacity(n),
            namespaces: Vec::with_capacity(n),
            queues: Vec::with_capacity(n),
            task_uuids: Vec::with_capacity(n),
            contexts: Vec::with_capacity(n),
            correlations: Vec::with_capacity(n),
            parent_correlations: Vec::with_capacity(n),
            idempotency_keys: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            traceparents: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            step_tasks: Vec::new(),
            step_uuids: Vec::new(),
            step_names: Vec::new(),
            step_positions: Vec::new(),
            step_handlers: Vec::new(),
            step_max_attempts: Vec::new(),
            step_retryable: Vec::new(),
            step_backoff_base_ms: Vec::new(),
            step_max_backoff_ms: Vec::new(),
            step_timeouts: Vec::new(),
            step_pending: Vec::new(),
            step_ancestors: Vec::new(),
            step_flows: Vec::new(),
            edge_tasks: Vec::new(),
            edge_from: Vec::new(),
            edge_to: Vec::new(),
        };
        for (i, t) in tasks.iter().enumerate() {
            let index = i as i32 + 1;
            let template = &t.reg.template;
            a.named_task_ids.push(t.reg.named_task_id);
            a.namespaces.push(&template.namespace);
            a.queues.push(t.reg.queue.as_str());
            a.task_uuids.push(Uuid::now_v7());
            a.contexts.push(&t.req.context);
            a.correlations
                .push(t.req.correlation_id.unwrap_or_else(Uuid::now_v7));
            a.parent_correlations.push(t.req.parent_correlation_id);
            a.idempotency_keys.push(t.req.idempotency_key.as_deref());
            a.priorities.push(t.req.priority);
            a.traceparents.push(t.traceparent.as_deref());
            a.run_ats.push(t.req.run_at);
            let first = a.step_uuids.len();
            for (position, step) in template.steps.iter().enumerate() {
                a.step_tasks.push(index);
                a.step_uuids.push(Uuid::now_v7());
                a.step_names.push(&step.name);
                a.step_positions.push(position as i32);
                a.step_handlers.push(&step.handler_class);
                a.step_max_attempts.push(step.retry.max_attempts as i32);
                a.step_retryable.push(step.retry.retryable);
                a.step_backoff_base_ms
                    .push(step.retry.backoff_base_ms.min(i32::MAX as u64) as i32);
                a.step_max_backoff_ms
                    .push(step.retry.max_backoff_ms.min(i32::MAX as u64) as i32);
                a.step_timeouts.push(step.timeout_seconds as i32);
                a.step_pending.push(step.parents.len() as i32);
                a.step_ancestors.push(&step.ancestors);
                a.step_flows.push(
                    t.req
                        .flow
                        .clone()
                        .or_else(|| step.flow.resolve(&t.req.context)),
                );
            }
            for (child, step) in template.steps.iter().enumerate() {
                for &parent in &step.parents {
                    a.edge_tasks.push(index);
                    a.edge_from.push(a.step_uuids[first + parent]);
                    a.edge_to.push(a.step_uuids[first + child]);
                }
            }
        }
        a
    }
}

/// The one JSON argument of `tasker.create_tasks_json` that creates `tasks` as
/// [`create_tasks`] would, on a connection of the caller's (an application's own transaction):
/// nothing is claimed, and its wake-ups are untagged so that every process hears them.
pub(crate) fn create_call_json(
    tasks: &[NewTask<'_>],
    lock_timeout: Duration,
) -> Result<serde_json::Value> {
    let mut doc = serde_json::to_value(CreateArgs::new(tasks))
        .map_err(|e| Error::InvalidInput(format!("tasks not encodable: {e}")))?;
    if let Some(o) = doc.as_object_mut() {
        o.insert(
            "lock_timeout_ms".into(),
            super::steps::millis(lock_timeout).into(),
        );
    }
    Ok(doc)
}

/// Create tasks — each with its steps, edges and history, its root steps sent to its
/// namespace queue — in one transaction and one round trip (`tasker.create_tasks`). A task
/// whose idempotency key its template already has returns the existing task. Roots of the
/// queues this process serves are claimed at once as `claims` allows. A queue that cannot be
/// written fails the whole call and nothing is written. The requests were checked by
/// [`crate::orchestration::create::create_tasks`].
pub(crate) async fn create_tasks<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tasks: &[NewTask<'_>],
    claims: &ClaimSettings<'_>,
    lock_timeout: Duration,
    sender: &str,
) -> Result<(Vec<CreatedTask>, Vec<ClaimedStep>)> {
    let n = tasks.len();
    let a = CreateArgs::new(tasks);
    let query = crate::store::query_as(
        "SELECT * FROM tasker.create_tasks($1, $2, $3, $4, $5::jsonb[], $6, $7, $8, $9, $10, $11, $12, \
           $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)",
    )
    .bind(&a.named_task_ids)
    .bind(&a.namespaces)
    .bind(&a.queues)
    .bind(&a.task_uuids)
    .bind(&a.contexts)
    .bind(&a.correlations)
    .bind(&a.parent_correlations)
    .bind(&a.idempotency_keys)
    .bind(&a.priorities)
    .bind(&a.traceparents)
    .bind(&a.run_ats)
    .bind(&a.step_tasks)
    .bind(&a.step_uuids)
    .bind(&a.step_names)
    .bind(&a.step_positions)
    .bind(&a.step_handlers)
    .bind(&a.step_max_attempts)
    .bind(&a.step_retryable)
    .bind(&a.step_backoff_base_ms)
    .bind(&a.step_max_backoff_ms)
    .bind(&a.step_timeouts)
    .bind(&a.step_pending)
    .bind(&a.step_ancestors)
    .bind(&a.step_flows)
    .bind(&a.edge_tasks)
    .bind(&a.edge_from)
    .bind(&a.edge_to);
    let rows: std::result::Result<Vec<CreateRow>, sqlx::Error> = claims
        .bind_last(query, lock_timeout, sender)
        .fetch_all(db)
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
                if let Some(child) = row.claim.into_claimed(a.queues[i].to_owned()) {
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
    Ok((created, claimed))
}

/// Where a task's steps are sent.
pub(crate) struct TaskRoute {
    pub task_uuid: Uuid,
    pub correlation_id: Uuid,
    pub queue: QueueName,
    pub namespace: Arc<str>,
    pub priority: i16,
}

/// A task locked for an operator's change.
pub(crate) struct LockedTask {
    pub status: TaskState,
    pub route: TaskRoute,
    pub named_task_id: i64,
}

#[derive(sqlx::FromRow)]
struct LockedRow {
    status: String,
    namespace: String,
    correlation_id: Uuid,
    named_task_id: i64,
    priority: i16,
}

/// Lock a task row (`FOR UPDATE`) until the end of the caller's transaction.
pub(crate) async fn lock_task(conn: &mut PgConnection, task_uuid: Uuid) -> Result<LockedTask> {
    let row: LockedRow = crate::store::query_as(
        "SELECT status, namespace, correlation_id, named_task_id, priority FROM tasker.tasks \
         WHERE task_uuid = $1 FOR UPDATE",
    )
    .bind(task_uuid)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no task {task_uuid}")))?;
    Ok(LockedTask {
        status: row.status.parse()?,
        route: TaskRoute {
            task_uuid,
            correlation_id: row.correlation_id,
            queue: QueueName::for_namespace(&row.namespace)?,
            namespace: Arc::from(row.namespace),
            priority: row.priority,
        },
        named_task_id: row.named_task_id,
    })
}

/// Decide a task's state from its steps (`tasker.finalize_tasks`, the one place it is decided;
/// the caller holds the task row lock). Returns the new state when it changed.
pub(crate) async fn finalize(
    conn: &mut PgConnection,
    task_uuid: Uuid,
) -> Result<Option<TaskState>> {
    let next: Option<String> =
        crate::store::query_scalar("SELECT status FROM tasker.finalize_tasks(ARRAY[$1]::uuid[])")
            .bind(task_uuid)
            .fetch_optional(&mut *conn)
            .await?;
    next.as_deref().map(str::parse).transpose()
}

/// Tell every process, at commit, that a task reached a terminal state.
pub(crate) async fn notify_finalized(conn: &mut PgConnection, task_uuid: Uuid) -> Result<()> {
    crate::store::query("SELECT pg_notify($1, $2)")
        .bind(messaging::FINALIZED_CHANNEL)
        .bind(task_uuid.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
