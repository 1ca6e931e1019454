//! In-process signals: a wake-up per served namespace (its poller reads at once), one for the
//! retry releaser, and the callers waiting for a task to reach a terminal state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use uuid::Uuid;

/// Callers waiting for a task's finalization: (waiter id, its wake-up).
type Waiters = HashMap<Uuid, Vec<(u64, Arc<Notify>)>>;

pub(crate) struct Signals {
    wakeups: HashMap<String, Arc<Notify>>,
    retries: Notify,
    waiters: Mutex<Waiters>,
    next_waiter: AtomicU64,
}

impl Signals {
    pub fn new(namespaces: &[String]) -> Self {
        Signals {
            wakeups: namespaces
                .iter()
                .map(|ns| (ns.clone(), Arc::new(Notify::new())))
                .collect(),
            retries: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
        }
    }

    /// The namespaces this process serves, sorted.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.wakeups.keys().map(String::as_str).collect();
        all.sort_unstable();
        all
    }

    /// The wake-up a namespace's poller waits on.
    pub fn wakeup(&self, namespace: &str) -> Option<Arc<Notify>> {
        self.wakeups.get(namespace).cloned()
    }

    /// Work was enqueued in `namespace`: its poller (if this process serves it) reads now.
    pub fn wake_namespace(&self, namespace: &str) {
        if let Some(n) = self.wakeups.get(namespace) {
            n.notify_one();
        }
    }

    pub fn wake_all(&self) {
        for n in self.wakeups.values() {
            n.notify_one();
        }
    }

    /// A step now waits for a retry: the releaser looks at when the next one is due.
    pub fn wake_retries(&self) {
        self.retries.notify_one();
    }

    pub async fn retries_changed(&self) {
        self.retries.notified().await
    }

    /// Register interest in a task's finalization: the Notify is notified (a permit is kept
    /// if nobody waits on it yet) when the task reaches a terminal state, in this or any other
    /// process. Check the status after registering to close the race with a finalization that
    /// already happened.
    pub fn register_waiter(&self, task_uuid: Uuid) -> (u64, Arc<Notify>) {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(task_uuid)
            .or_default()
            .push((id, wake.clone()));
        (id, wake)
    }

    pub fn unregister_waiter(&self, task_uuid: Uuid, id: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = waiters.get_mut(&task_uuid) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                waiters.remove(&task_uuid);
            }
        }
    }

    /// A task reached a terminal state: wake everyone waiting for it.
    pub fn task_finished(&self, task_uuid: Uuid) {
        let senders = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&task_uuid);
        for (_, wake) in senders.into_iter().flatten() {
            wake.notify_one();
        }
    }
}
