//! `tasker.task_namespaces` and `tasker.named_tasks`: registered templates, stored as their
//! JSON document.

use serde_json::Value;
use sqlx::PgPool;

use crate::error::Result;
use crate::template::Template;

/// A stored template: its id and its document.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StoredTemplate {
    pub named_task_id: i64,
    pub template: Value,
}

/// Store a template (its namespace first), or update the stored document of the same
/// (namespace, name, version); returns its id.
pub(crate) async fn upsert(pool: &PgPool, template: &Template, doc: &Value) -> Result<i64> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO tasker.task_namespaces (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&*template.namespace)
        .execute(&mut *tx)
        .await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tasker.named_tasks (namespace, name, version, description, template) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (namespace, name, version) DO UPDATE \
           SET description = EXCLUDED.description, template = EXCLUDED.template, \
               updated_at = CASE WHEN tasker.named_tasks.template IS DISTINCT FROM EXCLUDED.template \
                                 THEN now() ELSE tasker.named_tasks.updated_at END \
         RETURNING named_task_id",
    )
    .bind(&*template.namespace)
    .bind(&*template.name)
    .bind(&*template.version)
    .bind(&template.description)
    .bind(doc)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub(crate) async fn find_by_key(
    pool: &PgPool,
    namespace: &str,
    name: &str,
    version: &str,
) -> Result<Option<StoredTemplate>> {
    let row = sqlx::query_as(
        "SELECT named_task_id, template FROM tasker.named_tasks \
         WHERE namespace = $1 AND name = $2 AND version = $3",
    )
    .bind(namespace)
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

pub(crate) async fn find_by_id(
    pool: &PgPool,
    named_task_id: i64,
) -> Result<Option<StoredTemplate>> {
    let row = sqlx::query_as(
        "SELECT named_task_id, template FROM tasker.named_tasks WHERE named_task_id = $1",
    )
    .bind(named_task_id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}
