//! Retention (`tasker.purge_tasks`, `tasker.purge_archive`) and the lease that lets one process
//! at a time run it (`tasker.take_lease`): the statements of the maintenance migration.

use std::time::Duration;

use crate::store::DbPool;
use chrono::{DateTime, Utc};

use crate::error::Result;

/// What one batch of task retention deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskPurge {
    pub tasks: i64,
    pub steps: i64,
    pub transitions: i64,
}

/// Take (or extend) the lease `name` for `ttl`; true when `holder` holds it now.
pub(crate) async fn take_lease(
    pool: &DbPool,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool> {
    Ok(
        crate::store::query_scalar("SELECT tasker.take_lease($1, $2, $3)")
            .bind(name)
            .bind(holder)
            .bind(ttl.as_secs_f64())
            .fetch_one(pool)
            .await?,
    )
}

/// Give the lease back (only if `holder` has it).
pub(crate) async fn drop_lease(pool: &DbPool, name: &str, holder: &str) -> Result<()> {
    crate::store::query("DELETE FROM tasker.leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(pool)
        .await?;
    Ok(())
}

/// Delete up to `limit` finished tasks of each kind (complete and cancelled finished before
/// `completed_before`, errored before `errored_before`; None keeps that kind) with their steps,
/// edges and histories, in one transaction.
pub(crate) async fn purge_tasks(
    pool: &DbPool,
    completed_before: Option<DateTime<Utc>>,
    errored_before: Option<DateTime<Utc>>,
    limit: i32,
) -> Result<TaskPurge> {
    Ok(crate::store::query_as(
        "SELECT tasks, steps, transitions FROM tasker.purge_tasks($1, $2, $3)",
    )
    .bind(completed_before)
    .bind(errored_before)
    .bind(limit)
    .fetch_one(pool)
    .await?)
}

/// Delete up to `limit` archived messages archived before `before` from each of tasker's
/// queues (and cron fires as old); the queues (or `schedule_fires`) that had any, with counts.
pub(crate) async fn purge_archive(
    pool: &DbPool,
    before: DateTime<Utc>,
    limit: i32,
) -> Result<Vec<(String, i64)>> {
    Ok(
        crate::store::query_as("SELECT queue, deleted FROM tasker.purge_archive($1, $2)")
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?,
    )
}
