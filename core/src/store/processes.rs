//! The heartbeat table `tasker.processes`: one row per running engine, for the dashboard.

use crate::store::DbPool;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;

/// How long the row of a process whose heartbeat stopped is kept.
pub const DEAD_KEPT_HOURS: i32 = 24;

/// One engine as it last reported itself.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProcessRow {
    pub instance_id: String,
    pub worker_id: String,
    pub hostname: String,
    pub pid: i32,
    pub namespaces: Vec<String>,
    pub concurrency: i32,
    pub busy: i32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Seconds since the last heartbeat (by the database's clock).
    pub silent_seconds: f64,
}

/// What one heartbeat writes.
pub struct Beat<'a> {
    pub instance_id: &'a str,
    pub worker_id: &'a str,
    pub hostname: &'a str,
    pub pid: i32,
    pub namespaces: &'a [String],
    pub concurrency: i32,
    pub busy: i32,
}

/// Write this engine's row (and forget processes silent for more than a day).
pub(crate) async fn beat(pool: &DbPool, b: &Beat<'_>) -> Result<()> {
    crate::store::query(
        "WITH forgotten AS ( \
             DELETE FROM tasker.processes \
             WHERE heartbeat_at < now() - make_interval(hours => $8)) \
         INSERT INTO tasker.processes \
             (instance_id, worker_id, hostname, pid, namespaces, concurrency, busy) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (instance_id) DO UPDATE \
         SET busy = EXCLUDED.busy, heartbeat_at = now()",
    )
    .bind(b.instance_id)
    .bind(b.worker_id)
    .bind(b.hostname)
    .bind(b.pid)
    .bind(b.namespaces)
    .bind(b.concurrency)
    .bind(b.busy)
    .bind(DEAD_KEPT_HOURS)
    .execute(pool)
    .await?;
    Ok(())
}

/// Remove this engine's row (at shutdown).
pub(crate) async fn remove(pool: &DbPool, instance_id: &str) -> Result<()> {
    crate::store::query("DELETE FROM tasker.processes WHERE instance_id = $1")
        .bind(instance_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every known process, most recently heard from first (at most `limit`).
pub async fn list(pool: &DbPool, limit: i64) -> Result<Vec<ProcessRow>> {
    let rows = crate::store::query_as(
        "SELECT instance_id, worker_id, hostname, pid, namespaces, concurrency, busy, started_at, \
                heartbeat_at, extract(epoch FROM now() - heartbeat_at)::float8 AS silent_seconds \
         FROM tasker.processes ORDER BY heartbeat_at DESC LIMIT $1",
    )
    .bind(limit.clamp(1, 1000))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
