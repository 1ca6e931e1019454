//! Read models of the operator dashboard (`TaskerCore::Web`). Every query is bounded whatever
//! the size of the tables: lists are read by keyset (newest first, never `OFFSET`), and counts
//! are exact only below [`EXACT_COUNT_LIMIT`] rows; above, they are the planner's estimates
//! (`pg_class.reltuples` and the column's most common values) and are marked as such.

use crate::store::DbPool;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::store::snapshot::TaskSummary;

/// Up to this many rows (by the planner's estimate) a table's states are counted exactly.
pub const EXACT_COUNT_LIMIT: f64 = 100_000.0;
/// Most tasks one page lists.
pub const MAX_PAGE: i64 = 200;

/// How many rows are in one state.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StateCount {
    pub state: String,
    pub count: i64,
}

/// Rows of a table per state, exact or estimated.
#[derive(Debug, Clone, Serialize)]
pub struct Counts {
    pub exact: bool,
    pub total: i64,
    pub states: Vec<StateCount>,
}

/// Steps that reached `complete` and `error` in one minute.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
}

/// The overview page's figures from the database.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub tasks: Counts,
    pub steps: Counts,
    /// The last 60 minutes, oldest first, one entry per minute (zeros included).
    pub throughput: Vec<Minute>,
    /// Every registered namespace.
    pub namespaces: Vec<String>,
}

/// What a task list is filtered by; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub correlation_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub task_uuid: Option<Uuid>,
    /// A JSON object the task's context must contain (`@>`).
    pub context: Option<Value>,
}

/// One page of tasks and the cursor of the next (None on the last page).
#[derive(Debug, Clone, Serialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskSummary>,
    pub next: Option<String>,
}

/// The cursor after `task`: its creation time (microseconds) and uuid.
fn cursor_of(task: &TaskSummary) -> String {
    format!("{}_{}", task.created_at.timestamp_micros(), task.uuid)
}

/// A cursor back into its creation time and uuid.
pub fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid)> {
    let bad = || Error::InvalidInput(format!("not a page cursor: {:?}", truncated(cursor)));
    let (micros, uuid) = cursor.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(uuid).map_err(|_| bad())?))
}

pub use crate::limits::parse_time;

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The figures of the overview page.
pub async fn overview(pool: &DbPool) -> Result<Overview> {
    let tasks = counts(pool, "tasks", "status").await?;
    let steps = counts(pool, "workflow_steps", "state").await?;
    let throughput: Vec<Minute> = crate::store::query_as(
        "WITH minutes AS ( \
             SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes', \
                                    date_trunc('minute', now()), interval '1 minute') AS minute), \
         done AS ( \
             SELECT date_trunc('minute', created_at) AS minute, \
                    count(*) FILTER (WHERE to_state = 'complete') AS completed, \
                    count(*) FILTER (WHERE to_state = 'error') AS failed \
             FROM tasker.workflow_step_transitions \
             WHERE created_at >= date_trunc('minute', now()) - interval '59 minutes' \
               AND to_state IN ('complete', 'error') \
             GROUP BY 1) \
         SELECT m.minute, coalesce(d.completed, 0) AS completed, coalesce(d.failed, 0) AS failed \
         FROM minutes m LEFT JOIN done d USING (minute) ORDER BY m.minute",
    )
    .fetch_all(pool)
    .await?;
    let namespaces =
        crate::store::query_scalar("SELECT name FROM tasker.task_namespaces ORDER BY name")
            .fetch_all(pool)
            .await?;
    Ok(Overview {
        tasks,
        steps,
        throughput,
        namespaces,
    })
}

/// Every registered namespace, by name.
pub async fn namespaces(pool: &DbPool) -> Result<Vec<String>> {
    Ok(
        crate::store::query_scalar("SELECT name FROM tasker.task_namespaces ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

/// Rows of `tasker.<table>` per value of `column`: exact while the table is small, else
/// estimated from the planner's statistics. `table` and `column` are this module's constants.
async fn counts(pool: &DbPool, table: &'static str, column: &'static str) -> Result<Counts> {
    let estimate: Option<f32> =
        crate::store::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
            .bind(format!("tasker.{table}"))
            .fetch_optional(pool)
            .await?;
    let estimate = estimate.map_or(-1.0, f64::from);
    // Never analysed (-1) or small: count. A table that was never analysed is young.
    if estimate < EXACT_COUNT_LIMIT {
        let states: Vec<StateCount> = crate::store::query_as(&format!(
            "SELECT {column} AS state, count(*) AS count FROM tasker.{table} \
             GROUP BY 1 ORDER BY 1"
        ))
        .fetch_all(pool)
        .await?;
        let total = states.iter().map(|s| s.count).sum();
        return Ok(Counts {
            exact: true,
            total,
            states,
        });
    }
    let states: Vec<StateCount> = crate::store::query_as(
        "SELECT v.state, round(v.freq * $3)::bigint AS count \
         FROM pg_stats s, \
              unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(state, freq) \
         WHERE s.schemaname = 'tasker' AND s.tablename = $1 AND s.attname = $2 \
         ORDER BY 1",
    )
    .bind(table)
    .bind(column)
    .bind(estimate)
    .fetch_all(pool)
    .await?;
    Ok(Counts {
        exact: false,
        total: estimate.round() as i64,
        states,
    })
}

/// One page of tasks matching `filter`, newest first, after `cursor` (from a previous page).
pub async fn list_tasks(
    pool: &DbPool,
    filter: &TaskFilter,
    cursor: Option<&str>,
    limit: i64,
) -> Result<TaskPage> {
    let limit = limit.clamp(1, MAX_PAGE);
    let after = cursor.map(parse_cursor).transpose()?;
    if let Some(context) = &filter.context {
        if !context.is_object() {
            return Err(Error::InvalidInput(
                "a context filter must be a JSON object".into(),
            ));
        }
    }
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT t.task_uuid AS uuid, t.namespace, n.name, n.version, t.status, t.correlation_id, \
                t.parent_correlation_id, t.priority, t.created_at, t.completed_at \
         FROM tasker.tasks t JOIN tasker.named_tasks n USING (named_task_id) WHERE true",
    );
    if let Some(v) = &filter.status {
        q.push(" AND t.status = ").push_bind(v.clone());
    }
    if let Some(v) = &filter.namespace {
        q.push(" AND t.namespace = ").push_bind(v.clone());
    }
    if filter.name.is_some() || filter.version.is_some() {
        q.push(" AND t.named_task_id IN (SELECT named_task_id FROM tasker.named_tasks WHERE true");
        if let Some(v) = &filter.name {
            q.push(" AND name = ").push_bind(v.clone());
        }
        if let Some(v) = &filter.version {
            q.push(" AND version = ").push_bind(v.clone());
        }
        q.push(")");
    }
    if let Some(v) = filter.created_from {
        q.push(" AND t.created_at >= ").push_bind(v);
    }
    if let Some(v) = filter.created_to {
        q.push(" AND t.created_at < ").push_bind(v);
    }
    if let Some(v) = filter.correlation_id {
        q.push(" AND t.correlation_id = ").push_bind(v);
    }
    if let Some(v) = &filter.idempotency_key {
        q.push(" AND t.idempotency_key = ").push_bind(v.clone());
    }
    if let Some(v) = filter.task_uuid {
        q.push(" AND t.task_uuid = ").push_bind(v);
    }
    if let Some(v) = &filter.context {
        q.push(" AND t.context @> ").push_bind(v.clone());
    }
    if let Some((at, uuid)) = after {
        q.push(" AND (t.created_at, t.task_uuid) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(uuid)
            .push(")");
    }
    q.push(" ORDER BY t.created_at DESC, t.task_uuid DESC LIMIT ")
        .push_bind(limit + 1);
    let mut tasks: Vec<TaskSummary> = q.build_query_as().fetch_all(pool).await?;
    let next = if tasks.len() as i64 > limit {
        tasks.truncate(limit as usize);
        tasks.last().map(cursor_of)
    } else {
        None
    };
    Ok(TaskPage { tasks, next })
}

/// A message archived because it could not be processed, with the reason the engine gave.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub msg_id: i64,
    pub read_ct: i32,
    pub enqueued_at: DateTime<Utc>,
    pub archived_at: DateTime<Utc>,
    pub reason: Option<String>,
    /// The message as JSON text, cut at [`DEAD_LETTER_TEXT`] characters: a poison message may be
    /// nested deeper than a JSON value can be read back.
    pub message: Option<String>,
}

/// Characters of a dead letter's message shown.
pub const DEAD_LETTER_TEXT: i32 = 2_000;

/// One page of a queue's dead letters (newest first) and the cursor of the next.
#[derive(Debug, Clone, Serialize)]
pub struct DeadPage {
    pub queue: String,
    pub letters: Vec<DeadLetter>,
    pub next: Option<i64>,
}

/// The archived messages of `queue` that the engine archived with a reason (poison messages,
/// refused task requests), newest first, before message id `before`.
pub async fn dead_letters(
    pool: &DbPool,
    queue: &crate::messaging::queue::QueueName,
    before: Option<i64>,
    limit: i64,
) -> Result<DeadPage> {
    let limit = limit.clamp(1, MAX_PAGE);
    // The table name is a validated QueueName; every value is a parameter.
    let sql = format!(
        "SELECT msg_id, read_ct, enqueued_at, archived_at, \
                headers ->> 'tasker_archive_reason' AS reason, left(message::text, $3) AS message \
         FROM pgmq.a_{q} \
         WHERE headers ? 'tasker_archive_reason' AND ($1::bigint IS NULL OR msg_id < $1) \
         ORDER BY msg_id DESC LIMIT $2",
        q = queue.as_str()
    );
    let found = crate::store::query_as(&sql)
        .bind(before)
        .bind(limit + 1)
        .bind(DEAD_LETTER_TEXT)
        .fetch_all(pool)
        .await;
    let mut letters: Vec<DeadLetter> = match found {
        Ok(rows) => rows,
        // A namespace whose queue no engine has created yet has no archive either.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let next = if letters.len() as i64 > limit {
        letters.truncate(limit as usize);
        letters.last().map(|l| l.msg_id)
    } else {
        None
    };
    Ok(DeadPage {
        queue: queue.as_str().to_owned(),
        letters,
        next,
    })
}

/// Send the archived message `msg_id` of `queue` back to the queue as a new message (visible
/// now; its headers say which archived message it replays) and remove it from the archive,
/// in one statement. Only a message the engine archived with a reason (a dead letter) is
/// replayed; anything else is [`crate::Error::NotFound`]. Returns the new message's id.
pub async fn replay_dead_letter(
    pool: &DbPool,
    queue: &crate::messaging::queue::QueueName,
    msg_id: i64,
) -> Result<i64> {
    // The table names come from a validated QueueName; every value is a parameter.
    let sql = format!(
        "WITH dead AS (DELETE FROM pgmq.a_{q} WHERE msg_id = $1 AND headers ? 'tasker_archive_reason' \
                       RETURNING message, headers) \
         INSERT INTO pgmq.q_{q} (vt, message, headers) \
         SELECT clock_timestamp(), message, \
                (headers - 'tasker_archive_reason') || jsonb_build_object('tasker_replay_of', $1::bigint) \
           FROM dead RETURNING msg_id",
        q = queue.as_str()
    );
    let id: Option<i64> = match crate::store::query_scalar(&sql)
        .bind(msg_id)
        .fetch_optional(pool)
        .await
    {
        Ok(id) => id,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => None,
        Err(e) => return Err(e.into()),
    };
    let id = id.ok_or_else(|| {
        crate::Error::NotFound(format!(
            "no dead letter {msg_id} in queue {}",
            queue.as_str()
        ))
    })?;
    if let Some(ns) = crate::messaging::queue::QueueName::namespace_of(queue.as_str()) {
        crate::store::query("SELECT pg_notify('tasker_wakeup', $1)")
            .bind(ns)
            .execute(pool)
            .await?;
    }
    tracing::warn!(
        queue = queue.as_str(),
        replayed = msg_id,
        msg_id = id,
        "dead letter replayed"
    );
    Ok(id)
}
