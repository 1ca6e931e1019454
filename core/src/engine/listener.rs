//! Cross-process wake-ups: work enqueued per namespace by another process, and tasks another
//! process finalized.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use uuid::Uuid;

use super::db::Db;
use super::signals::Signals;
use crate::error::Error;
use crate::messaging;

/// Listen on a connection of the engine's pool, or — through a transaction pooler, which
/// cannot hold a LISTEN — on a direct connection of `url` (`listen_database_url`).
pub(super) async fn listen(
    db: Arc<Db>,
    signals: Arc<Signals>,
    instance_id: Arc<str>,
    url: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            let connected = match &url {
                Some(url) => PgListener::connect(url).await,
                None => PgListener::connect_with(db.pool.inner()).await,
            };
            match connected {
                Ok(mut l) => {
                    match l
                        .listen_all([messaging::WAKEUP_CHANNEL, messaging::FINALIZED_CHANNEL])
                        .await
                    {
                        Ok(()) => listener = Some(l),
                        Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
                    }
                }
                Err(e) => {
                    let e = Error::from(e);
                    if !db.trouble.note("connecting the notification listener", &e) {
                        tracing::warn!(error = %e, "notification listener cannot connect")
                    }
                }
            }
            if listener.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => break,
                }
            }
        }
        let Some(l) = listener.as_mut() else { continue };
        tokio::select! {
            n = l.recv() => match n {
                Ok(n) if n.channel() == messaging::WAKEUP_CHANNEL => {
                    // "namespace" or "namespace|sender": a process's own wake-ups come back
                    // here too, and are ignored (it woke itself in process already).
                    let (namespace, sender) = n.payload().split_once('|').unwrap_or((n.payload(), ""));
                    if sender != &*instance_id {
                        signals.wake_namespace(namespace);
                    }
                }
                Ok(n) => {
                    // One task, or the comma-separated tasks one batch finished.
                    for uuid in n.payload().split(',').filter_map(|u| u.parse::<Uuid>().ok()) {
                        signals.task_finished(uuid);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener lost its connection");
                    listener = None;
                }
            },
            _ = stop.changed() => break,
        }
    }
}
