//! Paused namespaces (`tasker.paused_namespaces`): persisted, read by every engine once per
//! poll interval. Paused templates (`tasker.paused_templates`): checked by the claim itself
//! (`tasker.admit_flow`), so every process obeys at once.

use crate::store::DbPool;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};

/// One paused namespace.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Paused {
    pub namespace: String,
    /// The template paused (every version of it); None: the whole namespace.
    pub template: Option<String>,
    pub paused_at: DateTime<Utc>,
    pub actor: Option<String>,
    pub reason: Option<String>,
}

/// Pause `namespace` (again: who and why are updated). A namespace no template registered is
/// [`Error::NotFound`].
pub(crate) async fn pause(
    pool: &DbPool,
    namespace: &str,
    actor: Option<&str>,
    reason: Option<&str>,
) -> Result<()> {
    let done = crate::store::query(
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
pub(crate) async fn resume(pool: &DbPool, namespace: &str) -> Result<bool> {
    let done = crate::store::query("DELETE FROM tasker.paused_namespaces WHERE namespace = $1")
        .bind(namespace)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Pause a template (every version). A template no version of which is registered is
/// [`Error::NotFound`].
pub(crate) async fn pause_template(
    pool: &DbPool,
    namespace: &str,
    template: &str,
    actor: Option<&str>,
    reason: Option<&str>,
) -> Result<()> {
    let done = crate::store::query(
        "INSERT INTO tasker.paused_templates (namespace, name, actor, reason) \
         SELECT n.namespace, n.name, $3, $4 FROM tasker.named_tasks n \
          WHERE n.namespace = $1 AND n.name = $2 LIMIT 1 \
         ON CONFLICT (namespace, name) DO UPDATE SET actor = EXCLUDED.actor, reason = EXCLUDED.reason",
    )
    .bind(namespace)
    .bind(template)
    .bind(actor)
    .bind(reason)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!(
            "no template {namespace}/{template} is registered"
        )));
    }
    Ok(())
}

/// Resume a paused template, making the steps it held back claimable at once; false when it
/// was not paused.
pub(crate) async fn resume_template(
    pool: &DbPool,
    namespace: &str,
    template: &str,
) -> Result<bool> {
    Ok(
        crate::store::query_scalar("SELECT tasker.resume_template($1, $2)")
            .bind(namespace)
            .bind(template)
            .fetch_one(pool)
            .await?,
    )
}

/// Every paused namespace and template, by name.
pub async fn list(pool: &DbPool) -> Result<Vec<Paused>> {
    Ok(crate::store::query_as(
        "SELECT namespace, NULL::text AS template, paused_at, actor, reason FROM tasker.paused_namespaces \
         UNION ALL \
         SELECT namespace, name, paused_at, actor, reason FROM tasker.paused_templates \
         ORDER BY namespace, template NULLS FIRST",
    )
    .fetch_all(pool)
    .await?)
}
