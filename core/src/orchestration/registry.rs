//! Registered templates: stored in `tasker.named_tasks`, cached in memory by key and by id.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::store::DbPool;

use crate::error::{Error, Result};
use crate::messaging::queue::QueueName;
use crate::store::queues;
use crate::store::templates::{self, Registered, StoredTemplate};
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

    /// Store a template (a template already stored under its version must have the same body)
    /// and make sure its namespace queue exists.
    pub async fn register(
        &self,
        pool: &DbPool,
        template: Template,
    ) -> Result<Arc<RegisteredTemplate>> {
        let queue = QueueName::for_namespace(&template.namespace)?;
        let doc = serde_json::to_value(&template.doc)
            .map_err(|e| Error::InvalidInput(format!("template not serializable: {e}")))?;
        let id = match templates::register(pool, &template, &doc).await? {
            Registered::Stored(id) => id,
            Registered::Differs => {
                let (namespace, name, version) = template.key();
                return Err(Error::template(
                    None,
                    None,
                    format!(
                        "template {namespace}/{name}@{version} is already registered with a different \
                         body; a registered version never changes: give the changed template a new \
                         version (e.g. bump {version})"
                    ),
                ));
            }
        };
        queues::ensure_queue(pool, &queue).await?;
        Ok(self.remember(RegisteredTemplate {
            named_task_id: id,
            template,
            queue,
        }))
    }

    /// Find a template by key, loading it from the database when this process has not seen it.
    pub async fn lookup(
        &self,
        pool: &DbPool,
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
        let row = templates::find_by_key(pool, namespace, name, version).await?;
        let Some(stored) = row else {
            return Err(Error::TemplateNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                version: version.to_owned(),
            });
        };
        self.compile_stored(stored)
    }

    /// Find a template by its `named_task_id`.
    pub async fn by_id(&self, pool: &DbPool, id: i64) -> Result<Arc<RegisteredTemplate>> {
        if let Some(found) = self
            .by_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(found.clone());
        }
        let stored = templates::find_by_id(pool, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no named task with id {id}")))?;
        self.compile_stored(stored)
    }

    fn compile_stored(&self, stored: StoredTemplate) -> Result<Arc<RegisteredTemplate>> {
        let id = stored.named_task_id;
        let doc: TemplateDoc = serde_json::from_value(stored.template)
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
