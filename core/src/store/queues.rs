//! pgmq statements: sending, reading and settling messages, creating queues, their metrics.
//! Every statement is parameterized; a queue name reaches SQL only as a [`QueueName`], which
//! validated it (pgmq builds table names from it).

use crate::store::DbPool;
use serde_json::Value;
use sqlx::PgConnection;

use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};

/// Write to a queue through `tasker.write_queue`: delete a settled message (optional) and send
/// `messages`, waiting at most `lock_timeout` for the queue table. A failure is contained in a
/// subtransaction and returned as `Ok(Some(error))`; the caller's transaction stays usable.
pub(crate) async fn write_queue(
    conn: &mut PgConnection,
    queue: &QueueName,
    namespace: &str,
    messages: &[StepMessage],
    delete_msg: Option<i64>,
    lock_timeout: std::time::Duration,
) -> Result<Option<String>> {
    let payloads: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::to_value(m).expect("StepMessage serializes"))
        .collect();
    let error: Option<String> =
        crate::store::query_scalar("SELECT tasker.write_queue($1, $2, $3::jsonb[], $4, $5)")
            .bind(queue.as_str())
            .bind(namespace)
            .bind(&payloads)
            .bind(delete_msg)
            .bind(lock_timeout.as_millis().min(i32::MAX as u128) as i32)
            .fetch_one(&mut *conn)
            .await?;
    Ok(error)
}

/// A message read from a queue.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReadMessage {
    pub msg_id: i64,
    pub read_ct: i32,
    /// The message's JSON text, or None for a SQL NULL message. Decoded one message at a time
    /// ([`ReadMessage::decode`]), so a row nobody can decode never fails the rest of its batch.
    pub payload: Option<String>,
}

impl ReadMessage {
    /// The message as `T`, or why it cannot be one (the reason it is archived with).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> std::result::Result<T, String> {
        let text = self
            .payload
            .as_deref()
            .ok_or_else(|| "the message is NULL".to_owned())?;
        // As JSON first: a message too deep to read is named as such, whatever its shape.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            if e.to_string().contains("recursion limit") {
                "the message is nested too deeply to decode".to_owned()
            } else {
                e.to_string()
            }
        })?;
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// A message's priority for ordering: `tasker.message_priority` (the migrations define it once,
/// total over any JSON a producer may send).
const PRIORITY_EXPR: &str = "tasker.message_priority(message)";

/// The statement that reads a queue: like `pgmq.read`, but highest priority first, then FIFO.
/// Fixed SQL per queue (built once from the validated name) instead of pgmq's dynamic SQL.
pub fn read_sql(queue: &QueueName) -> String {
    format!(
        "WITH next AS ( \
           SELECT msg_id FROM pgmq.q_{q} WHERE vt <= clock_timestamp() \
           ORDER BY {PRIORITY_EXPR} DESC, msg_id \
           LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE pgmq.q_{q} m SET vt = clock_timestamp() + make_interval(secs => $1), \
           read_ct = read_ct + 1, last_read_at = clock_timestamp() \
         WHERE m.msg_id = ANY (ARRAY(SELECT msg_id FROM next)) \
         RETURNING m.msg_id, m.read_ct, m.message::text AS payload",
        q = queue.as_str()
    )
}

/// Read up to `qty` messages with a statement from [`read_sql`], hiding them for `vt_seconds`.
pub(crate) async fn read<'e, E>(
    executor: E,
    sql: &str,
    vt_seconds: i32,
    qty: i32,
) -> Result<Vec<ReadMessage>>
where
    E: sqlx::PgExecutor<'e>,
{
    let rows: Vec<ReadMessage> = crate::store::query_as(sql)
        .bind(vt_seconds as f64)
        .bind(qty)
        .fetch_all(executor)
        .await?;
    Ok(rows)
}

/// Delete a settled message.
pub(crate) async fn delete<'e, E>(executor: E, queue: &QueueName, msg_id: i64) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    crate::store::query("SELECT pgmq.delete($1, $2::bigint)")
        .bind(queue.as_str())
        .bind(msg_id)
        .execute(executor)
        .await?;
    Ok(())
}

/// Move a message that cannot be processed to the queue's archive, with the reason in its
/// `tasker_archive_reason` header. One statement: delete from the queue, insert into the archive.
pub(crate) async fn archive_poison<'e, E>(
    executor: E,
    queue: &QueueName,
    msg_id: i64,
    reason: &str,
) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = format!(
        "WITH moved AS ( \
           DELETE FROM pgmq.q_{q} WHERE msg_id = $1 \
           RETURNING msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers) \
         INSERT INTO pgmq.a_{q} (msg_id, read_ct, enqueued_at, last_read_at, vt, message, headers) \
         SELECT msg_id, read_ct, enqueued_at, last_read_at, vt, message, \
                coalesce(headers, '{{}}'::jsonb) || jsonb_build_object('tasker_archive_reason', $2::text) \
         FROM moved",
        q = queue.as_str()
    );
    crate::store::query(&sql)
        .bind(msg_id)
        .bind(reason)
        .execute(executor)
        .await?;
    Ok(())
}

/// Create a queue if it does not exist. Serialized by a transaction-level advisory lock so that
/// processes starting at the same moment never race on pgmq's `CREATE TABLE`.
pub(crate) async fn ensure_queue(pool: &DbPool, queue: &QueueName) -> Result<()> {
    let mut tx = pool.begin().await?;
    crate::store::query("SELECT pg_advisory_xact_lock(hashtext('tasker.queues'))")
        .execute(&mut *tx)
        .await?;
    let exists: bool =
        crate::store::query_scalar("SELECT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = $1)")
            .bind(queue.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        crate::store::query("SELECT pgmq.create($1)")
            .bind(queue.as_str())
            .execute(&mut *tx)
            .await?;
        // Autovacuum at a queue's churn (maintenance migration).
        crate::store::query("SELECT tasker.tune_queue_table($1)")
            .bind(queue.as_str())
            .execute(&mut *tx)
            .await?;
    }
    // Serves read_sql's ordering (also added to queues made before it existed).
    crate::store::query(&format!(
        "CREATE INDEX IF NOT EXISTS q_{q}_by_priority ON pgmq.q_{q} ({PRIORITY_EXPR} DESC, msg_id)",
        q = queue.as_str()
    ))
    .execute(&mut *tx)
    .await?;
    // Lets the recovery loop ask "is there a message for this step?" without a scan.
    crate::store::query(&format!(
        "CREATE INDEX IF NOT EXISTS q_{q}_by_step ON pgmq.q_{q} ((message->>'step_uuid'))",
        q = queue.as_str()
    ))
    .execute(&mut *tx)
    .await?;
    // pgmq's index on `vt` serves pgmq.read, which the engine never calls on a step queue
    // (its reads go through the priority index and filter on vt). Without it, the update of a
    // message's visibility on every read and claim touches no index and can stay on its page.
    crate::store::query(&format!(
        "DROP INDEX IF EXISTS pgmq.q_{q}_vt_idx",
        q = queue.as_str()
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Send one JSON message to a queue (`pgmq.send`); returns its message id.
pub(crate) async fn send(pool: &DbPool, queue: &QueueName, message: &Value) -> Result<i64> {
    let id: i64 = crate::store::query_scalar("SELECT * FROM pgmq.send($1, $2)")
        .bind(queue.as_str())
        .bind(message)
        .fetch_one(pool)
        .await?;
    Ok(id)
}

/// A queue's depth and the age of its oldest message (`pgmq.metrics`).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(crate) struct QueueMetrics {
    pub queue_length: i64,
    pub oldest_msg_age_sec: Option<i32>,
}

pub(crate) async fn metrics(pool: &DbPool, queue: &QueueName) -> Result<QueueMetrics> {
    let m = crate::store::query_as("SELECT queue_length, oldest_msg_age_sec FROM pgmq.metrics($1)")
        .bind(queue.as_str())
        .fetch_one(pool)
        .await?;
    Ok(m)
}
