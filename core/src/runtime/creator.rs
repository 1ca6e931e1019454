//! Task creation batched per namespace: calls that create tasks of one namespace at the same
//! moment (several application threads) share one transaction and one round trip, as outcomes
//! do in the applier. Idle, a call goes at once; while a namespace's transaction is in flight,
//! the calls that arrive wait, and the next transaction takes them all (no timer). One lane per
//! namespace, so a queue that is slow to write (locked, a breaker's trial) delays only its own
//! namespace's creations. A batch that fails is retried call by call, so that each caller gets
//! its own answer: one caller's bad request or full queue never fails another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::error::{Error, Result};
use crate::orchestration::{CreatedTask, TaskRequest};

/// Most tasks one batched transaction creates (a single call may be larger: it goes alone).
const MAX_BATCH_TASKS: usize = 1000;

type Reply = oneshot::Sender<Result<Vec<CreatedTask>>>;
type Call = (Vec<TaskRequest>, Reply);

/// The lanes, by namespace (created at a namespace's first call).
#[derive(Default)]
pub(crate) struct Lanes(Mutex<HashMap<String, mpsc::UnboundedSender<Call>>>);

impl Shared {
    /// Create tasks: through their namespace's lane when they all belong to one namespace,
    /// else in a transaction of their own. Same answer as [`Shared::create_tasks`].
    pub(crate) async fn create_batched(
        self: &Arc<Self>,
        reqs: Vec<TaskRequest>,
    ) -> Result<Vec<CreatedTask>> {
        let namespace = match reqs.split_first() {
            Some((first, rest)) if rest.iter().all(|r| r.namespace == first.namespace) => {
                first.namespace.clone()
            }
            _ => return self.create_tasks(&reqs).await,
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut lanes = self.lanes.0.lock().unwrap_or_else(|e| e.into_inner());
            let lane = lanes
                .entry(namespace)
                .or_insert_with(|| spawn_lane(Arc::downgrade(self)));
            if let Err(mpsc::error::SendError(call)) = lane.send((reqs, tx)) {
                // The lane ended (its task was cancelled): start another.
                *lane = spawn_lane(Arc::downgrade(self));
                let _ = lane.send(call);
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::NotStarted(
                "the engine shut down before the task was created".into(),
            ))
        })
    }
}

fn spawn_lane(shared: Weak<Shared>) -> mpsc::UnboundedSender<Call> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut tasks = first.0.len();
            let mut calls = vec![first];
            while tasks < MAX_BATCH_TASKS {
                match rx.try_recv() {
                    Ok(call) => {
                        tasks += call.0.len();
                        calls.push(call);
                    }
                    Err(_) => break,
                }
            }
            // The engine is gone: dropping the calls answers each caller with an error.
            let Some(shared) = shared.upgrade() else {
                break;
            };
            create(&shared, calls).await;
        }
    });
    tx
}

async fn create(shared: &Shared, calls: Vec<Call>) {
    if calls.len() == 1 {
        let Some((reqs, reply)) = calls.into_iter().next() else {
            return;
        };
        let _ = reply.send(shared.create_tasks(&reqs).await);
        return;
    }
    let sizes: Vec<usize> = calls.iter().map(|(reqs, _)| reqs.len()).collect();
    let (all, replies): (Vec<Vec<TaskRequest>>, Vec<Reply>) = calls.into_iter().unzip();
    let all: Vec<TaskRequest> = all.into_iter().flatten().collect();
    match shared.create_tasks(&all).await {
        Ok(created) => {
            let mut created = created.into_iter();
            for (size, reply) in sizes.into_iter().zip(replies) {
                let _ = reply.send(Ok(created.by_ref().take(size).collect()));
            }
        }
        Err(_) => {
            let mut all = all.into_iter();
            for (size, reply) in sizes.into_iter().zip(replies) {
                let reqs: Vec<TaskRequest> = all.by_ref().take(size).collect();
                let _ = reply.send(shared.create_tasks(&reqs).await);
            }
        }
    }
}
