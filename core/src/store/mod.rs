//! PostgreSQL persistence: every SQL statement of the engine, one module per table family
//! (tasks, steps, templates, queues, transition history, read models), and the embedded
//! migrations. Rows are named structs (`sqlx::FromRow`); all SQL is runtime-checked
//! (`sqlx::query`) and every value is a bind parameter — only queue table names, validated by
//! `QueueName` first, are put into the text. `core/tests` runs these statements against a real
//! database. The modules above this one decide; this one reads and writes.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::error::Result;

pub mod dashboard;
pub mod maintenance;
pub mod migrate;
pub mod pauses;
pub mod pool;
pub mod processes;
pub mod queues;
pub mod schedules;
pub mod snapshot;
pub(crate) mod steps;
pub(crate) mod tasks;
pub(crate) mod templates;
pub(crate) mod transitions;

pub use pool::{query, query_as, query_scalar, DbPool};

/// A small pool for reading queues: its statements give up on a lock after `lock_timeout`
/// and on anything after 30 s, so a locked queue table fails fast (and opens that queue's
/// breaker) instead of holding connections the rest of the engine needs.
/// The engine's connections name themselves `tasker_core <pid>` in `pg_stat_activity` (unless
/// the URL sets an `application_name`).
fn named(options: sqlx::postgres::PgConnectOptions) -> sqlx::postgres::PgConnectOptions {
    if options.get_application_name().is_some() {
        return options;
    }
    options.application_name(&format!("tasker_core {}", std::process::id()))
}

/// Through a transaction pooler (`pooled`) the settings apply to each statement's
/// transaction instead of the session ([`DbPool::pooled`]).
pub async fn connect_queue_pool(
    database_url: &str,
    size: u32,
    lock_timeout: Duration,
    pooled: bool,
) -> Result<DbPool> {
    let settings = [
        (
            "lock_timeout",
            format!("{}ms", lock_timeout.as_millis().max(1)),
        ),
        ("statement_timeout", "30000ms".to_owned()),
    ];
    let options = named(database_url.parse::<sqlx::postgres::PgConnectOptions>()?);
    let options = if pooled {
        options
    } else {
        options.options(settings.clone())
    };
    let pool = PgPoolOptions::new()
        .max_connections(size.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok(if pooled {
        DbPool::pooled(pool, &settings)
    } else {
        DbPool::direct(pool)
    })
}

/// Open a pool: no ping before each acquire (saves a round trip per statement). `pooled`:
/// the URL goes through a transaction pooler ([`DbPool`]).
pub async fn connect(database_url: &str, size: u32, pooled: bool) -> Result<DbPool> {
    if pooled {
        pool::use_unnamed_statements();
    }
    let options = named(database_url.parse::<sqlx::postgres::PgConnectOptions>()?);
    let pool = PgPoolOptions::new()
        .max_connections(size.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok(if pooled {
        DbPool::pooled(pool, &[])
    } else {
        DbPool::direct(pool)
    })
}

/// `SELECT 1`: whether the database answers.
pub(crate) async fn ping(pool: &DbPool) -> Result<()> {
    crate::store::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Whether the migrations have created the tasker schema.
pub(crate) async fn schema_ready(pool: &DbPool) -> Result<bool> {
    let ready = crate::store::query_scalar("SELECT to_regclass('tasker.tasks') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    Ok(ready)
}
