//! Retention: finished tasks and archived messages older than their windows are deleted in
//! bounded batches (`store::maintenance`). Every worker process runs the loop; of all of them,
//! the one holding the `maintenance` lease (a row, `tasker.take_lease`) runs a pass each
//! interval, so the work is done once, by one process at a time, and taken over when that
//! process dies (its lease expires). `EngineHandle::run_maintenance` runs a pass on demand
//! whoever holds the lease: a batch skips rows another transaction holds, so two passes at
//! once delete each row once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::watch;

use super::db::Db;
use super::RetentionConfig;
use crate::error::Result;
use crate::store::maintenance as store;
use crate::telemetry::Telemetry;

/// The lease's name.
const LEASE: &str = "maintenance";
/// The longest a periodic pass runs before it yields to the next interval.
const MAX_PASS: Duration = Duration::from_secs(60);

/// What a pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MaintenanceReport {
    pub tasks: i64,
    pub steps: i64,
    pub transitions: i64,
    /// Archived queue messages and cron fires.
    pub archived: i64,
    /// Transactions run.
    pub batches: u32,
}

pub(crate) struct Maintenance {
    pub db: Arc<Db>,
    pub retention: RetentionConfig,
    /// This engine's instance id: the lease's holder.
    pub holder: Arc<str>,
    pub telemetry: Option<Arc<Telemetry>>,
}

impl Maintenance {
    /// The periodic loop of a worker process (a no-op without an interval).
    pub(super) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(interval) = self.retention.interval else {
            return;
        };
        // The lease outlives a pass and the sleep after it: its holder keeps it while alive.
        let ttl = interval * 3 + MAX_PASS;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
            match store::take_lease(&self.db.pool, LEASE, &self.holder, ttl).await {
                Ok(true) => {
                    if let Err(e) = self.pass(Some(&stop), MAX_PASS).await {
                        if !self.db.trouble.note("running retention", &e) {
                            tracing::warn!(error = %e, "retention pass failed; retrying next interval");
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    self.db.trouble.note("taking the maintenance lease", &e);
                }
            }
        }
        // Another process may take over at once.
        let _ = store::drop_lease(&self.db.pool, LEASE, &self.holder).await;
    }

    /// Delete what is due, batch after batch, until nothing is left, `stop` is set or `budget`
    /// has passed. Each batch is its own transaction, logged and counted.
    pub(crate) async fn pass(
        &self,
        stop: Option<&watch::Receiver<bool>>,
        budget: Duration,
    ) -> Result<MaintenanceReport> {
        let started = Instant::now();
        let limit = self.retention.batch_size as i32;
        let mut report = MaintenanceReport::default();
        let stopping = || stop.is_some_and(|s| *s.borrow());
        let now = Utc::now();
        let before = |d: Option<Duration>| {
            d.and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now - d)
        };
        let (completed, errored) = (
            before(self.retention.completed),
            before(self.retention.errored),
        );
        if completed.is_some() || errored.is_some() {
            loop {
                let t0 = Instant::now();
                let batch = store::purge_tasks(&self.db.pool, completed, errored, limit).await?;
                report.batches += 1;
                if batch.tasks == 0 {
                    break;
                }
                report.tasks += batch.tasks;
                report.steps += batch.steps;
                report.transitions += batch.transitions;
                if let Some(t) = &self.telemetry {
                    t.purged("tasks", batch.tasks);
                    t.purged("steps", batch.steps);
                    t.purged("transitions", batch.transitions);
                }
                tracing::info!(
                    tasks = batch.tasks,
                    steps = batch.steps,
                    transitions = batch.transitions,
                    ms = t0.elapsed().as_millis() as u64,
                    "retention: deleted finished tasks"
                );
                if stopping() || started.elapsed() > budget {
                    return Ok(report);
                }
            }
        }
        if let Some(archive) = before(self.retention.archive) {
            loop {
                let t0 = Instant::now();
                let rows = store::purge_archive(&self.db.pool, archive, limit).await?;
                report.batches += 1;
                if rows.is_empty() {
                    break;
                }
                let deleted: i64 = rows.iter().map(|(_, n)| n).sum();
                report.archived += deleted;
                if let Some(t) = &self.telemetry {
                    t.purged("archived", deleted);
                }
                for (queue, n) in &rows {
                    tracing::info!(
                        queue = %queue,
                        deleted = n,
                        ms = t0.elapsed().as_millis() as u64,
                        "retention: deleted archived messages"
                    );
                }
                if stopping() || started.elapsed() > budget {
                    break;
                }
            }
        }
        Ok(report)
    }
}
