//! Registered templates: stored in `tasker.named_tasks`, cached in memory by key and by id.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::messaging::{self, queue::QueueName};
use crate::template::{Template, TemplateDoc};

/// A template known to the database, with its queue.
#[derive(Debug)]
pub struct RegisteredTemplate {
    pub named_task_id: i64,
    pub template: Template,
    pub queue: QueueName,
}

type Key = (String, String, String);

#[derive(Default)]
pub(crate) struct Registry {
    by_key: RwLock<HashMap<Key, Arc<RegisteredTemplate>>>,
    by_id: RwLock<HashMap<i64, Arc<RegisteredTemplate>>>,
}

impl Registry {
    /// Keep a template for the engine's lifetime. The first copy of an id wins and is never
    /// replaced or dropped, so everything derived from it (shared names, the address of its
    /// handler configuration, which the Ruby side caches by) stays valid and unique.
    fn remember(&self, reg: RegisteredTemplate) -> Arc<RegisteredTemplate> {
        let reg = self
            .by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reg.named_task_id)
            .or_insert_with(|| Arc::new(reg))
            .clone();
        let (ns, name, version) = reg.template.key();
        let key = (ns.to_owned(), name.to_owned(), version.to_owned());
        self.by_key
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| reg.clone());
        reg
    }

    /// Templates held.
    pub fn len(&self) -> usize {
        self.by_id.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Store (or update) a template and make sure its namespace queue exists.
    pub async fn register(
        &self,
        pool: &PgPool,
        template: Template,
    ) -> Result<Arc<RegisteredTemplate>> {
        let queue = QueueName::for_namespace(&template.namespace)?;
        let doc = serde_json::to_value(&template.doc)
            .map_err(|e| Error::InvalidInput(format!("template not serializable: {e}")))?;
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
        .bind(&doc)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        messaging::ensure_queue(pool, &queue).await?;
        Ok(self.remember(RegisteredTemplate {
            named_task_id: id,
            template,
            queue,
        }))
    }

    /// Find a template by key, loading it from the database when this process has not seen it.
    pub async fn lookup(
        &self,
        pool: &PgPool,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Arc<RegisteredTemplate>> {
        let key = (namespace.to_owned(), name.to_owned(), version.to_owned());
        if let Some(found) = self
            .by_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(found.clone());
        }
        let row: Option<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT named_task_id, template FROM tasker.named_tasks \
             WHERE namespace = $1 AND name = $2 AND version = $3",
        )
        .bind(namespace)
        .bind(name)
        .bind(version)
        .fetch_optional(pool)
        .await?;
        let Some((id, doc)) = row else {
            return Err(Error::TemplateNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                version: version.to_owned(),
            });
        };
        self.compile_stored(id, doc)
    }

    /// Find a template by its `named_task_id`.
    pub async fn by_id(&self, pool: &PgPool, id: i64) -> Result<Arc<RegisteredTemplate>> {
        if let Some(found) = self
            .by_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(found.clone());
        }
        let doc: serde_json::Value =
            sqlx::query_scalar("SELECT template FROM tasker.named_tasks WHERE named_task_id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| Error::NotFound(format!("no named task with id {id}")))?;
        self.compile_stored(id, doc)
    }

    fn compile_stored(&self, id: i64, doc: serde_json::Value) -> Result<Arc<RegisteredTemplate>> {
        let doc: TemplateDoc = serde_json::from_value(doc)
            .map_err(|e| Error::InvalidInput(format!("stored template {id} is unreadable: {e}")))?;
        let template = crate::template::compile_doc(doc)?;
        let queue = QueueName::for_namespace(&template.namespace)?;
        Ok(self.remember(RegisteredTemplate {
            named_task_id: id,
            template,
            queue,
        }))
    }
}
