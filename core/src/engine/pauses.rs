//! The paused namespaces as this process knows them: refreshed from `tasker.paused_namespaces`
//! once per poll interval (`services::refresh_pauses`) and at once by this process's own
//! pause and resume. Pollers and fused claims consult it before claiming.

use std::collections::HashSet;
use std::sync::RwLock;

#[derive(Default)]
pub(crate) struct Pauses {
    namespaces: RwLock<HashSet<String>>,
}

impl Pauses {
    /// Whether `namespace`'s steps may not be claimed now.
    pub fn contains(&self, namespace: &str) -> bool {
        let set = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
        !set.is_empty() && set.contains(namespace)
    }

    /// Whether any namespace is paused (the common case, none, costs one read lock).
    pub fn any(&self) -> bool {
        !self
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub fn replace(&self, namespaces: HashSet<String>) {
        *self.namespaces.write().unwrap_or_else(|e| e.into_inner()) = namespaces;
    }

    pub fn insert(&self, namespace: &str) {
        self.namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_owned());
    }

    pub fn remove(&self, namespace: &str) {
        self.namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(namespace);
    }
}
