//! `tasker.schedules` and `tasker.schedule_fires`: cron schedules and the ticks they fired.
//! A tick fires in one transaction that moves the schedule's `last_tick` on from the value the
//! firing process read (so of several processes evaluating it, one wins), creates the task
//! (its idempotency key names the tick) and records the fire (one row per schedule and tick).

use crate::store::DbPool;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::orchestration::create::NewTask;
use crate::orchestration::registry::RegisteredTemplate;
use crate::orchestration::{CreatedTask, TaskRequest};
use crate::schedule::Schedule;
use crate::store::steps::ClaimSettings;

/// Where a schedule was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Template,
    Config,
    Runtime,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Template => "template",
            Source::Config => "config",
            Source::Runtime => "runtime",
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ScheduleRow {
    pub name: String,
    pub namespace: String,
    pub task_name: String,
    pub version: String,
    pub cron: String,
    pub timezone: String,
    pub context: Value,
    pub missed: String,
    pub source: String,
    pub paused: bool,
    pub last_tick: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The next tick that fires (None while paused); filled in by [`crate::EngineHandle`].
    #[sqlx(skip)]
    pub next_tick: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "name, namespace, task_name, version, cron, timezone, context, missed, source, \
                       paused, last_tick, updated_at";

/// The nine columns of a new schedule row, in `INSERT`'s order ($1 to $9).
fn bind_schedule<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    s: &'q Schedule,
    source: Source,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&s.name)
        .bind(&s.namespace)
        .bind(&s.task)
        .bind(&s.version)
        .bind(&s.expression)
        .bind(s.timezone.name())
        .bind(&s.context)
        .bind(s.missed.as_str())
        .bind(source.as_str())
}

/// Store a declared schedule (a template's or the configuration's): its definition is
/// replaced, its pause and its progress kept.
pub(crate) async fn declare(pool: &DbPool, s: &Schedule, source: Source) -> Result<()> {
    let q = crate::store::query(
        "INSERT INTO tasker.schedules (name, namespace, task_name, version, cron, timezone, context, missed, source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (name) DO UPDATE SET namespace = EXCLUDED.namespace, task_name = EXCLUDED.task_name, \
           version = EXCLUDED.version, cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, \
           context = EXCLUDED.context, missed = EXCLUDED.missed, source = EXCLUDED.source, updated_at = now() \
         WHERE (tasker.schedules.namespace, tasker.schedules.task_name, tasker.schedules.version, \
                tasker.schedules.cron, tasker.schedules.timezone, tasker.schedules.context, \
                tasker.schedules.missed, tasker.schedules.source) \
               IS DISTINCT FROM (EXCLUDED.namespace, EXCLUDED.task_name, EXCLUDED.version, EXCLUDED.cron, \
                                 EXCLUDED.timezone, EXCLUDED.context, EXCLUDED.missed, EXCLUDED.source)",
    );
    bind_schedule(q, s, source).execute(pool).await?;
    Ok(())
}

/// Create a schedule at runtime; a name already taken is [`Error::InvalidInput`].
pub(crate) async fn create(pool: &DbPool, s: &Schedule) -> Result<()> {
    let q = crate::store::query(
        "INSERT INTO tasker.schedules (name, namespace, task_name, version, cron, timezone, context, missed, source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING",
    );
    let done = bind_schedule(q, s, Source::Runtime).execute(pool).await?;
    if done.rows_affected() == 0 {
        return Err(Error::InvalidInput(format!(
            "a schedule named {:?} exists already (delete it first, or pick another name)",
            s.name
        )));
    }
    Ok(())
}

/// Every schedule, by name.
pub async fn list(pool: &DbPool) -> Result<Vec<ScheduleRow>> {
    Ok(crate::store::query_as(&format!(
        "SELECT {COLUMNS} FROM tasker.schedules ORDER BY name"
    ))
    .fetch_all(pool)
    .await?)
}

/// One schedule; [`Error::NotFound`] when there is none of that name.
pub(crate) async fn get(pool: &DbPool, name: &str) -> Result<ScheduleRow> {
    crate::store::query_as(&format!(
        "SELECT {COLUMNS} FROM tasker.schedules WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no schedule named {name:?}")))
}

/// Pause or resume a schedule. Resuming starts from now: the ticks that passed while paused
/// do not fire. False when it was already so.
pub(crate) async fn set_paused(pool: &DbPool, name: &str, paused: bool) -> Result<bool> {
    get(pool, name).await?;
    let done = crate::store::query(
        "UPDATE tasker.schedules SET paused = $2, updated_at = now(), \
           last_tick = CASE WHEN $2 THEN last_tick ELSE greatest(last_tick, now()) END \
         WHERE name = $1 AND paused <> $2",
    )
    .bind(name)
    .bind(paused)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Delete a schedule (and its fire records); false when there was none.
pub(crate) async fn delete(pool: &DbPool, name: &str) -> Result<bool> {
    let done = crate::store::query("DELETE FROM tasker.schedules WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A tick to fire, and how it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireKind {
    /// The tick due now.
    Tick,
    /// A tick that passed while no process ran (`missed: fire_once`).
    Missed,
    /// `trigger_now`.
    Manual,
}

impl FireKind {
    fn as_str(self) -> &'static str {
        match self {
            FireKind::Tick => "tick",
            FireKind::Missed => "missed",
            FireKind::Manual => "manual",
        }
    }
}

/// What a fire needs to create its tasks.
pub(crate) struct FireContext<'a> {
    pub template: &'a RegisteredTemplate,
    pub lock_timeout: std::time::Duration,
    pub sender: &'a str,
    pub worker_id: &'a str,
}

/// Fire `ticks` of `schedule` and move its `last_tick` from `seen` to `through`, in one
/// transaction; nothing (Ok(None)) when another process moved it first or the schedule was
/// paused, changed or deleted meanwhile (`updated_at` differs from `version`). A manual fire
/// (`seen` None) only records its tick. Returns the tasks created, one per tick.
pub(crate) async fn fire(
    pool: &DbPool,
    schedule: &Schedule,
    version: DateTime<Utc>,
    seen: Option<DateTime<Utc>>,
    through: DateTime<Utc>,
    ticks: &[(DateTime<Utc>, FireKind)],
    cx: &FireContext<'_>,
) -> Result<Option<Vec<(DateTime<Utc>, CreatedTask)>>> {
    let mut tx = pool.begin().await?;
    if let Some(seen) = seen {
        let moved = crate::store::query(
            "UPDATE tasker.schedules SET last_tick = $3 \
              WHERE name = $1 AND last_tick = $2 AND updated_at = $4 AND NOT paused",
        )
        .bind(&schedule.name)
        .bind(seen)
        .bind(through)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(None);
        }
    }
    let requests: Vec<TaskRequest> = ticks
        .iter()
        .map(|(tick, kind)| TaskRequest {
            namespace: schedule.namespace.clone(),
            name: schedule.task.clone(),
            version: schedule.version.clone(),
            context: schedule.context.clone(),
            correlation_id: None,
            parent_correlation_id: None,
            idempotency_key: Some(match kind {
                FireKind::Manual => format!("{}:manual", schedule.tick_key(*tick)),
                _ => schedule.tick_key(*tick),
            }),
            priority: 0,
            traceparent: None,
            run_at: None,
            flow: None,
        })
        .collect();
    let tasks: Vec<NewTask<'_>> = requests
        .iter()
        .map(|req| NewTask {
            reg: cx.template,
            req,
            traceparent: None,
        })
        .collect();
    let no_claims = ClaimSettings {
        queues: &[],
        capacity: 0,
        blocked_handlers: &[],
        worker_id: cx.worker_id,
        claim_grace_seconds: 0,
    };
    let (created, _) = crate::orchestration::create::create_tasks(
        &mut *tx,
        &tasks,
        &no_claims,
        cx.lock_timeout,
        cx.sender,
    )
    .await?;
    let ticks_at: Vec<DateTime<Utc>> = ticks.iter().map(|(t, _)| *t).collect();
    let kinds: Vec<&str> = ticks.iter().map(|(_, k)| k.as_str()).collect();
    let uuids: Vec<Uuid> = created.iter().map(|c| c.task_uuid).collect();
    crate::store::query(
        "INSERT INTO tasker.schedule_fires (schedule, tick, kind, task_uuid) \
         SELECT $1, t, k, u FROM unnest($2::timestamptz[], $3::text[], $4::uuid[]) AS x(t, k, u) \
         ON CONFLICT (schedule, tick) DO NOTHING",
    )
    .bind(&schedule.name)
    .bind(&ticks_at)
    .bind(&kinds)
    .bind(&uuids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(ticks_at.into_iter().zip(created).collect()))
}

/// The database's clock (a manual fire's tick).
pub(crate) async fn now(pool: &DbPool) -> Result<DateTime<Utc>> {
    Ok(crate::store::query_scalar("SELECT now()")
        .fetch_one(pool)
        .await?)
}

/// The ticks a schedule fired, newest first.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FireRow {
    pub tick: DateTime<Utc>,
    pub kind: String,
    pub task_uuid: Uuid,
    pub fired_at: DateTime<Utc>,
}

pub async fn fires(pool: &DbPool, name: &str, limit: i64) -> Result<Vec<FireRow>> {
    Ok(crate::store::query_as(
        "SELECT tick, kind, task_uuid, fired_at FROM tasker.schedule_fires WHERE schedule = $1 \
         ORDER BY tick DESC LIMIT $2",
    )
    .bind(name)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
