//! The async face of the engine: creating tasks, operator controls, reads and health.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::creator::Creator;
use super::db::Db;
use super::health::{self, HealthReport};
use super::signals::Signals;
use crate::error::{Error, Result};
use crate::orchestration::registry::{RegisteredTemplate, Registry};
use crate::orchestration::{self, CreatedTask, Intervention, TaskRequest};
use crate::state::TaskState;
use crate::store;
use crate::store::snapshot::{self, TaskView};

/// What [`EngineHandle::wait_for`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskWait {
    /// The task reached this terminal state.
    Finished(TaskState),
    /// The wait's time ran out; the task is still in this state.
    Running(TaskState),
}

/// What a handle reaches.
pub(super) struct HandleParts {
    pub db: Arc<Db>,
    pub creator: Arc<Creator>,
    pub signals: Arc<Signals>,
    pub registry: Arc<Registry>,
    /// How long an operator's queue write waits for a lock on the queue table.
    pub lock_timeout: Duration,
    /// This process's view of the paused namespaces (updated at once by its own pause/resume).
    pub pauses: Arc<super::pauses::Pauses>,
    /// This engine's tag on its notifications, and its claims' owner.
    pub sender: Arc<str>,
    pub worker_id: String,
    /// Retention, run on demand by [`EngineHandle::run_maintenance`].
    pub maintenance: Arc<super::maintenance::Maintenance>,
}

/// A cheap, cloneable handle for async calls (task creation, reads) on the engine.
#[derive(Clone)]
pub struct EngineHandle(pub(super) Arc<HandleParts>);

impl EngineHandle {
    /// Create a task (or return the existing one for the same idempotency key).
    pub async fn create_task(&self, req: TaskRequest) -> Result<CreatedTask> {
        self.create_tasks(vec![req])
            .await?
            .pop()
            .ok_or_else(|| Error::InvalidInput("no task was created".into()))
    }

    /// Create several tasks in one transaction and one round trip (each with its own
    /// idempotency key, if any); all or none are written. Concurrent calls for one namespace
    /// may share that transaction (`creator.rs`); each call still succeeds or fails alone.
    pub async fn create_tasks(&self, reqs: Vec<TaskRequest>) -> Result<Vec<CreatedTask>> {
        self.0.creator.create_batched(reqs).await.inspect_err(|e| {
            self.0.db.trouble.note("creating tasks", e);
        })
    }

    /// Cancel a task (see the state table in the operations guide).
    pub async fn cancel_task(&self, task_uuid: Uuid, who: Intervention) -> Result<TaskState> {
        let state = orchestration::controls::cancel_task(&self.0.db.pool, task_uuid, &who).await?;
        self.0.signals.task_finished(task_uuid);
        Ok(state)
    }

    /// Run a step in `error` again.
    pub async fn retry_step(
        &self,
        task_uuid: Uuid,
        step_name: String,
        who: Intervention,
    ) -> Result<TaskState> {
        let state = orchestration::controls::retry_step(
            &self.0.db.pool,
            &self.0.registry,
            task_uuid,
            &step_name,
            &who,
            self.0.lock_timeout,
        )
        .await?;
        self.0.signals.wake_all();
        Ok(state)
    }

    /// Resolve a step in `error` with the given result; its children may then run.
    pub async fn resolve_step_manually(
        &self,
        task_uuid: Uuid,
        step_name: String,
        result: serde_json::Value,
        who: Intervention,
    ) -> Result<TaskState> {
        let (state, released) = orchestration::controls::resolve_step_manually(
            &self.0.db.pool,
            task_uuid,
            &step_name,
            &result,
            &who,
            self.0.lock_timeout,
        )
        .await?;
        if released > 0 {
            self.0.signals.wake_all();
        }
        if state.is_terminal() {
            self.0.signals.task_finished(task_uuid);
        }
        Ok(state)
    }

    /// Wait up to `timeout` for the task to reach a terminal state: woken by its finalization
    /// (in this or any other process), and re-checked every second in case a notification
    /// was lost. [`TaskWait::Running`] when the time ran out first; `NotFound` when there is no
    /// such task. Dropping the future mid-wait is safe (the waiter is unregistered).
    pub async fn wait_for(&self, task_uuid: Uuid, timeout: Duration) -> Result<TaskWait> {
        struct Registered<'a>(&'a Signals, Uuid, u64);
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                self.0.unregister_waiter(self.1, self.2);
            }
        }
        let (id, wake) = self.0.signals.register_waiter(task_uuid);
        let _registered = Registered(&self.0.signals, task_uuid, id);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = snapshot::task_status(&self.0.db.pool, task_uuid)
                .await?
                .ok_or_else(|| Error::NotFound(format!("no task {task_uuid}")))?;
            if status.is_terminal() {
                return Ok(TaskWait::Finished(status));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(TaskWait::Running(status));
            }
            let nap = (deadline - now).min(Duration::from_secs(1));
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// A task with steps and history.
    pub async fn find_task(&self, task_uuid: Uuid) -> Result<Option<TaskView>> {
        snapshot::find_task(&self.0.db.pool, task_uuid).await
    }

    /// Queue a task request for any worker process to turn into a task; returns its message id.
    pub async fn request_task(&self, request: serde_json::Value) -> Result<i64> {
        orchestration::requests::send_request(&self.0.db.pool, &request).await
    }

    /// Database reachability and the depth of each served queue (`TaskerCore.health`).
    pub async fn health(&self) -> HealthReport {
        health::check(&self.0.db, &self.0.signals.namespaces()).await
    }

    /// Tasks by correlation id and/or parent correlation id.
    pub async fn find_tasks(
        &self,
        correlation_id: Option<Uuid>,
        parent_correlation_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<snapshot::TaskSummary>> {
        snapshot::find_tasks(
            &self.0.db.pool,
            correlation_id,
            parent_correlation_id,
            limit,
        )
        .await
    }

    /// The dashboard's overview figures (task and step counts, the last hour's throughput,
    /// the registered namespaces) and every namespace queue's depth.
    pub async fn dashboard_overview(
        &self,
    ) -> Result<(store::dashboard::Overview, Vec<health::QueueHealth>)> {
        let overview = store::dashboard::overview(&self.0.db.pool).await?;
        let names: Vec<&str> = overview.namespaces.iter().map(String::as_str).collect();
        let queues = health::queue_health(&self.0.db, &names).await;
        Ok((overview, queues))
    }

    /// Every registered namespace, by name.
    pub async fn namespaces(&self) -> Result<Vec<String>> {
        store::dashboard::namespaces(&self.0.db.pool).await
    }

    /// Every registered namespace and its queue's depth (the dashboard's queues page).
    pub async fn dashboard_queues(&self) -> Result<(Vec<String>, Vec<health::QueueHealth>)> {
        let namespaces = self.namespaces().await?;
        let names: Vec<&str> = namespaces.iter().map(String::as_str).collect();
        let queues = health::queue_health(&self.0.db, &names).await;
        Ok((namespaces, queues))
    }

    /// One page of tasks for the dashboard, newest first.
    pub async fn list_tasks(
        &self,
        filter: store::dashboard::TaskFilter,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<store::dashboard::TaskPage> {
        store::dashboard::list_tasks(&self.0.db.pool, &filter, cursor.as_deref(), limit).await
    }

    /// Every engine's heartbeat row, most recently heard from first.
    pub async fn processes(&self) -> Result<Vec<store::processes::ProcessRow>> {
        store::processes::list(&self.0.db.pool, 200).await
    }

    /// Dead letters of a namespace's queue, or of the task requests queue (`namespace` None).
    pub async fn dead_letters(
        &self,
        namespace: Option<String>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<store::dashboard::DeadPage> {
        let queue = match namespace {
            Some(ns) => crate::messaging::queue::QueueName::for_namespace(&ns)?,
            None => orchestration::requests::queue(),
        };
        store::dashboard::dead_letters(&self.0.db.pool, &queue, before, limit).await
    }

    /// Pause a namespace for every process (each stops claiming its steps within one poll
    /// interval; this one at once), or with `template` one template of it (every version;
    /// obeyed by the next claim of any process). The work stays queued.
    pub async fn pause(
        &self,
        namespace: &str,
        template: Option<&str>,
        who: Intervention,
    ) -> Result<()> {
        let (actor, reason) = (who.actor.as_deref(), who.reason.as_deref());
        match template {
            Some(t) => {
                store::pauses::pause_template(&self.0.db.pool, namespace, t, actor, reason).await?
            }
            None => {
                store::pauses::pause(&self.0.db.pool, namespace, actor, reason).await?;
                self.0.pauses.insert(namespace);
            }
        }
        tracing::warn!(namespace, template, actor, reason, "paused");
        Ok(())
    }

    /// Resume a paused namespace or template; false when it was not paused.
    pub async fn resume(&self, namespace: &str, template: Option<&str>) -> Result<bool> {
        let was = match template {
            Some(t) => store::pauses::resume_template(&self.0.db.pool, namespace, t).await?,
            None => {
                let was = store::pauses::resume(&self.0.db.pool, namespace).await?;
                self.0.pauses.remove(namespace);
                was
            }
        };
        if was {
            tracing::warn!(namespace, template, "resumed");
            // Its pollers may be asleep for a poll interval: wake them.
            self.0.signals.wake_namespace(namespace);
        }
        Ok(was)
    }

    /// Every paused namespace, with who paused it and why.
    pub async fn paused(&self) -> Result<Vec<store::pauses::Paused>> {
        store::pauses::list(&self.0.db.pool).await
    }

    /// The one JSON argument of `tasker.create_tasks_json` that creates these tasks on a
    /// connection of the caller's (an application's own transaction): the requests checked,
    /// their templates looked up, the task and step ids chosen here. Nothing is written.
    pub async fn create_call(&self, reqs: Vec<TaskRequest>) -> Result<serde_json::Value> {
        let mut regs = Vec::with_capacity(reqs.len());
        for req in &reqs {
            orchestration::create::validate_request(req)?;
            regs.push(
                self.0
                    .registry
                    .lookup(&self.0.db.pool, &req.namespace, &req.name, &req.version)
                    .await?,
            );
        }
        let tasks: Vec<orchestration::create::NewTask<'_>> = reqs
            .iter()
            .zip(&regs)
            .map(|(req, reg)| orchestration::create::NewTask {
                reg,
                req,
                traceparent: req.traceparent.clone(),
            })
            .collect();
        store::tasks::create_call_json(&tasks, self.0.lock_timeout)
    }

    /// Register a template given as text (YAML or JSON) at runtime: stored (a body differing
    /// from the one registered under its version is a template error), its queue created.
    pub async fn register_template(&self, text: &str) -> Result<Arc<RegisteredTemplate>> {
        let template = crate::template::parse_str(text, None)?;
        self.0.registry.register(&self.0.db.pool, template).await
    }

    /// Every cron schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<store::schedules::ScheduleRow>> {
        let mut rows = store::schedules::list(&self.0.db.pool).await?;
        let now = chrono::Utc::now();
        for row in rows.iter_mut().filter(|r| !r.paused) {
            row.next_tick = super::scheduler::compile(row)
                .ok()
                .and_then(|s| s.next_after(now.max(row.last_tick)));
        }
        Ok(rows)
    }

    /// The ticks a schedule fired, newest first.
    pub async fn schedule_fires(
        &self,
        name: &str,
        limit: i64,
    ) -> Result<Vec<store::schedules::FireRow>> {
        store::schedules::get(&self.0.db.pool, name).await?;
        store::schedules::fires(&self.0.db.pool, name, limit).await
    }

    /// Create a schedule at runtime (its template must be registered).
    pub async fn create_schedule(&self, doc: crate::schedule::ScheduleDoc) -> Result<()> {
        let s = doc.compile(None).map_err(Error::InvalidInput)?;
        self.0
            .registry
            .lookup(&self.0.db.pool, &s.namespace, &s.task, &s.version)
            .await?;
        store::schedules::create(&self.0.db.pool, &s).await?;
        tracing::info!(schedule = %s.name, cron = %s.expression, "schedule created");
        Ok(())
    }

    /// Pause (true) or resume a schedule; false when it was already so. Resuming starts from
    /// now: ticks that passed while it was paused do not fire.
    pub async fn set_schedule_paused(&self, name: &str, paused: bool) -> Result<bool> {
        store::schedules::set_paused(&self.0.db.pool, name, paused).await
    }

    /// Delete a schedule; false when there was none. A schedule a template or the
    /// configuration declares comes back when a process declaring it starts.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        store::schedules::delete(&self.0.db.pool, name).await
    }

    /// Fire a schedule now (a task outside its cron times, recorded as a manual fire).
    pub async fn trigger_schedule(&self, name: &str) -> Result<CreatedTask> {
        super::scheduler::trigger_now(
            &self.0.db,
            &self.0.registry,
            self.0.lock_timeout,
            &self.0.sender,
            &self.0.worker_id,
            name,
        )
        .await
    }

    /// One start under the rate limit `key` (`limit` per `per` seconds, shared with every
    /// process and with steps whose `rate_limit` has the same name and key): None when it
    /// was taken now, else how long until one may be.
    pub async fn acquire_rate(&self, key: &str, limit: u32, per: f64) -> Result<Option<Duration>> {
        let wait: f64 = crate::store::query_scalar("SELECT tasker.acquire_rate($1, $2, $3)")
            .bind(key)
            .bind(limit.min(i32::MAX as u32) as i32)
            .bind(per)
            .fetch_one(&self.0.db.pool)
            .await?;
        Ok((wait > 0.0).then(|| Duration::from_secs_f64(wait)))
    }

    /// Send an archived message of a namespace's queue (or of the task requests queue) back
    /// to its queue, as a new message; its archive row is removed in the same transaction.
    pub async fn replay_dead_letter(&self, namespace: Option<String>, msg_id: i64) -> Result<i64> {
        let queue = match namespace {
            Some(ns) => crate::messaging::queue::QueueName::for_namespace(&ns)?,
            None => orchestration::requests::queue(),
        };
        let id = store::dashboard::replay_dead_letter(&self.0.db.pool, &queue, msg_id).await?;
        if let Some(ns) = crate::messaging::queue::QueueName::namespace_of(queue.as_str()) {
            self.0.signals.wake_namespace(ns);
        }
        Ok(id)
    }

    /// Run retention now (whoever holds the maintenance lease): delete every finished task and
    /// archived message older than its window, batch after batch.
    pub async fn run_maintenance(&self) -> Result<super::maintenance::MaintenanceReport> {
        self.0.maintenance.pass(None, Duration::MAX).await
    }

    /// A task's current status.
    pub async fn task_status(&self, task_uuid: Uuid) -> Result<Option<TaskState>> {
        snapshot::task_status(&self.0.db.pool, task_uuid).await
    }

    /// The pool, for callers (tests, benches) that need direct SQL.
    pub fn pool(&self) -> &sqlx::PgPool {
        self.0.db.pool.inner()
    }
}
