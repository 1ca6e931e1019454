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
pub(crate) async fn create_tasks<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tasks: &[NewTask<'_>],
    claims: &ClaimSettings<'_>,
    lock_timeout: Duration,
    sender: &str,
) -> Result<(Vec<CreatedTask>, Vec<ClaimedStep>)> {
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
    let mut run_ats = Vec::with_capacity(n);
    let (mut step_tasks, mut step_uuids, mut step_names, mut positions, mut handlers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ancestors = Vec::new();
    let mut flows: Vec<Option<serde_json::Value>> = Vec::new();
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
        run_ats.push(t.req.run_at);
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
            flows.push(step.flow.resolve(&t.req.context));
        }
        for (child, step) in template.steps.iter().enumerate() {
            for &parent in &step.parents {
                edge_tasks.push(index);
                edge_from.push(step_uuids[first + parent]);
                edge_to.push(step_uuids[first + child]);
            }
        }
    }
    let query = sqlx::query_as(
        "SELECT * FROM tasker.create_tasks($1, $2, $3, $4, $5::jsonb[], $6, $7, $8, $9, $10, $11, $12, \
           $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)",
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
    .bind(&run_ats)
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
    .bind(&flows)
    .bind(&edge_tasks)
    .bind(&edge_from)
    .bind(&edge_to);
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
                if let Some(child) = row.claim.into_claimed(queues[i].to_owned()) {
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
    let row: LockedRow = sqlx::query_as(
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
        sqlx::query_scalar("SELECT status FROM tasker.finalize_tasks(ARRAY[$1]::uuid[])")
            .bind(task_uuid)
            .fetch_optional(&mut *conn)
            .await?;
    next.as_deref().map(str::parse).transpose()
}

/// Tell every process, at commit, that a task reached a terminal state.
pub(crate) async fn notify_finalized(conn: &mut PgConnection, task_uuid: Uuid) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(messaging::FINALIZED_CHANNEL)
        .bind(task_uuid.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
