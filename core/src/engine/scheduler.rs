//! The cron loop every worker process runs: it reads the schedules, and for each one with a
//! tick due fires it (`store::schedules::fire`: of all the processes evaluating it, the one
//! that moves its `last_tick` first creates the task). It sleeps until the next tick of any
//! schedule, and at most a second, so a schedule created, paused or changed elsewhere is seen
//! within a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::db::Db;
use super::signals::Signals;
use crate::error::{Error, Result};
use crate::orchestration::registry::Registry;
use crate::schedule::{Schedule, ScheduleDoc};
use crate::store::schedules::{self, FireContext, FireKind, ScheduleRow};

/// How old the newest tick may be and still fire as on time (older: a missed tick). A pass
/// runs at least every second, so an on-time tick is at most about a second old.
pub const ON_TIME: Duration = Duration::from_secs(3);
/// The longest sleep between two passes.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(super) struct Scheduler {
    pub db: Arc<Db>,
    pub registry: Arc<Registry>,
    pub signals: Arc<Signals>,
    pub lock_timeout: Duration,
    pub sender: Arc<str>,
    pub worker_id: String,
}

/// A stored schedule compiled (cron, timezone), kept while its row is unchanged.
pub(super) fn compile(row: &ScheduleRow) -> std::result::Result<Schedule, String> {
    ScheduleDoc {
        name: row.name.clone(),
        cron: row.cron.clone(),
        timezone: row.timezone.clone(),
        context: row.context.clone(),
        missed: row.missed.parse().map_err(|e: Error| e.to_string())?,
        namespace: Some(row.namespace.clone()),
        task: Some(row.task_name.clone()),
        version: Some(row.version.clone()),
    }
    .compile(None)
}

impl Scheduler {
    pub(super) async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut compiled: HashMap<String, (DateTime<Utc>, Option<Schedule>)> = HashMap::new();
        loop {
            let sleep = match self.pass(&mut compiled).await {
                Ok(next) => next,
                Err(e) => {
                    if !self.db.trouble.note("running cron schedules", &e) {
                        tracing::warn!(error = %e, "running cron schedules failed; retrying");
                    }
                    MAX_SLEEP
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => break,
            }
        }
    }

    /// One pass over the schedules; returns how long to sleep.
    async fn pass(
        &self,
        compiled: &mut HashMap<String, (DateTime<Utc>, Option<Schedule>)>,
    ) -> Result<Duration> {
        let rows = schedules::list(&self.db.pool).await?;
        compiled.retain(|name, _| rows.iter().any(|r| &r.name == name));
        let mut sleep = MAX_SLEEP;
        for row in rows.iter().filter(|r| !r.paused) {
            // Compiled once per version of the row; an invalid one is reported once.
            let fresh = compiled
                .get(&row.name)
                .is_none_or(|(at, _)| *at != row.updated_at);
            if fresh {
                let schedule = compile(row)
                    .inspect_err(|m| {
                        tracing::error!(schedule = %row.name, error = %m,
                            "a stored schedule is invalid; it does not fire")
                    })
                    .ok();
                compiled.insert(row.name.clone(), (row.updated_at, schedule));
            }
            let Some((_, Some(schedule))) = compiled.get(&row.name) else {
                continue;
            };
            let now = Utc::now();
            if let Some(due) = schedule.due(row.last_tick, now, ON_TIME) {
                self.fire(schedule, row, due).await;
            }
            if let Some(next) = schedule.next_after(Utc::now().max(row.last_tick)) {
                let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                sleep = sleep.min(until);
            }
        }
        Ok(sleep.max(Duration::from_millis(5)))
    }

    async fn fire(&self, schedule: &Schedule, row: &ScheduleRow, due: crate::schedule::Due) {
        let template = match self
            .registry
            .lookup(
                &self.db.pool,
                &schedule.namespace,
                &schedule.task,
                &schedule.version,
            )
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(schedule = %schedule.name, error = %e, "a schedule's template is not registered; its tick is not fired");
                return;
            }
        };
        let last = due.fire.len().saturating_sub(1);
        let ticks: Vec<(DateTime<Utc>, FireKind)> = due
            .fire
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let kind = if due.on_time && i == last {
                    FireKind::Tick
                } else {
                    FireKind::Missed
                };
                (t, kind)
            })
            .collect();
        let cx = FireContext {
            template: &template,
            lock_timeout: self.lock_timeout,
            sender: &self.sender,
            worker_id: &self.worker_id,
        };
        let fired = schedules::fire(
            &self.db.pool,
            schedule,
            row.updated_at,
            Some(row.last_tick),
            due.through,
            &ticks,
            &cx,
        )
        .await;
        match fired {
            Ok(Some(created)) => {
                if due.skipped > 0 {
                    tracing::warn!(schedule = %schedule.name, skipped = due.skipped, missed = ?schedule.missed,
                        "ticks passed while no process ran the schedule; not fired");
                }
                for (tick, task) in &created {
                    tracing::info!(schedule = %schedule.name, tick = %tick, task_uuid = %task.task_uuid,
                        correlation_id = %task.correlation_id, "schedule fired");
                }
                if !created.is_empty() {
                    self.signals.wake_namespace(&schedule.namespace);
                }
            }
            Ok(None) => {}
            Err(e) => {
                if !self.db.trouble.note("firing a schedule", &e) {
                    tracing::warn!(schedule = %schedule.name, error = %e, "firing a schedule failed; retrying");
                }
            }
        }
    }
}

/// Fire a schedule now, outside its cron times (`TaskerCore.schedules.trigger_now`).
pub(super) async fn trigger_now(
    db: &Db,
    registry: &Registry,
    lock_timeout: Duration,
    sender: &str,
    worker_id: &str,
    name: &str,
) -> Result<crate::orchestration::CreatedTask> {
    let row = schedules::get(&db.pool, name).await?;
    let schedule = compile(&row).map_err(Error::InvalidInput)?;
    let template = registry
        .lookup(
            &db.pool,
            &schedule.namespace,
            &schedule.task,
            &schedule.version,
        )
        .await?;
    let tick = schedules::now(&db.pool).await?;
    let cx = FireContext {
        template: &template,
        lock_timeout,
        sender,
        worker_id,
    };
    let created = schedules::fire(
        &db.pool,
        &schedule,
        row.updated_at,
        None,
        tick,
        &[(tick, FireKind::Manual)],
        &cx,
    )
    .await?
    .and_then(|mut c| c.pop())
    .ok_or_else(|| Error::InvalidInput(format!("schedule {name:?} did not fire")))?;
    tracing::info!(schedule = name, task_uuid = %created.1.task_uuid, "schedule triggered by hand");
    Ok(created.1)
}
