//! PostgreSQL persistence: every SQL statement of the engine, one module per table family
//! (tasks, steps, templates, queues, transition history, read models), and the embedded
//! migrations. Rows are named structs (`sqlx::FromRow`); all SQL is runtime-checked
//! (`sqlx::query`) and every value is a bind parameter — only queue table names, validated by
//! `QueueName` first, are put into the text. `core/tests` runs these statements against a real
//! database. The modules above this one decide; this one reads and writes.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::error::{Error, Result};

pub mod dashboard;
pub mod maintenance;
pub mod migrate;
pub mod pauses;
pub mod processes;
pub mod queues;
pub mod schedules;
pub mod snapshot;
pub(crate) mod steps;
pub(crate) mod tasks;
pub(crate) mod templates;
pub(crate) mod transitions;

/// A small pool for reading queues: its statements give up on a lock after `lock_timeout`
/// and on anything after 30 s, so a locked queue table fails fast (and opens that queue's
/// breaker) instead of holding connections the rest of the engine needs.
pub async fn connect_queue_pool(
    database_url: &str,
    size: u32,
    lock_timeout: Duration,
) -> Result<PgPool> {
    let options = database_url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options([
            (
                "lock_timeout",
                format!("{}ms", lock_timeout.as_millis().max(1)),
            ),
            ("statement_timeout", "30000ms".to_owned()),
        ]);
    PgPoolOptions::new()
        .max_connections(size.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(Error::from)
}

/// Open a pool: no ping before each acquire (saves a round trip per statement).
pub async fn connect(database_url: &str, size: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect(database_url)
        .await
        .map_err(Error::from)
}

/// `SELECT 1`: whether the database answers.
pub(crate) async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Whether the migrations have created the tasker schema.
pub(crate) async fn schema_ready(pool: &PgPool) -> Result<bool> {
    let ready = sqlx::query_scalar("SELECT to_regclass('tasker.tasks') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    Ok(ready)
}
