//! `tasker.task_namespaces` and `tasker.named_tasks`: registered templates, stored as their
//! JSON document.

use crate::store::DbPool;
use serde_json::Value;

use crate::error::Result;
use crate::template::Template;

/// A stored template: its id and its document.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StoredTemplate {
    pub named_task_id: i64,
    pub template: Value,
}

/// What [`register`] found.
pub(crate) enum Registered {
    /// Stored now, or stored before with the same document: its id.
    Stored(i64),
    /// The same (namespace, name, version) is stored with a different document.
    Differs,
}

/// Store a template (its namespace first) under its (namespace, name, version). A template is
/// immutable once stored: the same document again is a no-op, a different one is refused
/// ([`Registered::Differs`]) and nothing is written.
pub(crate) async fn register(
    pool: &DbPool,
    template: &Template,
    doc: &Value,
) -> Result<Registered> {
    let mut tx = pool.begin().await?;
    crate::store::query(
        "INSERT INTO tasker.task_namespaces (name) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .bind(&*template.namespace)
    .execute(&mut *tx)
    .await?;
    let inserted: Option<i64> = crate::store::query_scalar(
        "INSERT INTO tasker.named_tasks (namespace, name, version, description, template) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (namespace, name, version) DO NOTHING \
         RETURNING named_task_id",
    )
    .bind(&*template.namespace)
    .bind(&*template.name)
    .bind(&*template.version)
    .bind(&template.description)
    .bind(doc)
    .fetch_optional(&mut *tx)
    .await?;
    let found = match inserted {
        Some(id) => Registered::Stored(id),
        None => {
            let stored: StoredTemplate = crate::store::query_as(
                "SELECT named_task_id, template FROM tasker.named_tasks \
                 WHERE namespace = $1 AND name = $2 AND version = $3",
            )
            .bind(&*template.namespace)
            .bind(&*template.name)
            .bind(&*template.version)
            .fetch_one(&mut *tx)
            .await?;
            if stored.template == *doc {
                Registered::Stored(stored.named_task_id)
            } else {
                Registered::Differs
            }
        }
    };
    tx.commit().await?;
    Ok(found)
}

pub(crate) async fn find_by_key(
    pool: &DbPool,
    namespace: &str,
    name: &str,
    version: &str,
) -> Result<Option<StoredTemplate>> {
    let row = crate::store::query_as(
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
    pool: &DbPool,
    named_task_id: i64,
) -> Result<Option<StoredTemplate>> {
    let row = crate::store::query_as(
        "SELECT named_task_id, template FROM tasker.named_tasks WHERE named_task_id = $1",
    )
    .bind(named_task_id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}
