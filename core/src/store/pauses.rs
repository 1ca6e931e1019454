//! Paused namespaces (`tasker.paused_namespaces`): persisted, read by every engine once per
//! poll interval.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::{Error, Result};

/// One paused namespace.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Paused {
    pub namespace: String,
    pub paused_at: DateTime<Utc>,
    pub actor: Option<String>,
    pub reason: Option<String>,
}

/// Pause `namespace` (again: who and why are updated). A namespace no template registered is
/// [`Error::NotFound`].
pub(crate) async fn pause(
    pool: &PgPool,
    namespace: &str,
    actor: Option<&str>,
    reason: Option<&str>,
) -> Result<()> {
    let done = sqlx::query(
        "INSERT INTO tasker.paused_namespaces (namespace, actor, reason) \
         SELECT name, $2, $3 FROM tasker.task_namespaces WHERE name = $1 \
         ON CONFLICT (namespace) DO UPDATE SET actor = EXCLUDED.actor, reason = EXCLUDED.reason",
    )
    .bind(namespace)
    .bind(actor)
    .bind(reason)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!(
            "no namespace {namespace:?} is registered (a template of it must have been loaded once)"
        )));
    }
    Ok(())
}

/// Resume `namespace`; false when it was not paused.
pub(crate) async fn resume(pool: &PgPool, namespace: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM tasker.paused_namespaces WHERE namespace = $1")
        .bind(namespace)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Every paused namespace, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Paused>> {
    Ok(sqlx::query_as(
        "SELECT namespace, paused_at, actor, reason FROM tasker.paused_namespaces ORDER BY namespace",
    )
    .fetch_all(pool)
    .await?)
}
