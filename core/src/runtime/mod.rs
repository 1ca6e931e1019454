//! The engine: owns the tokio runtime, the PostgreSQL pool and the background services
//! (pollers, result applier, retry release, notification listener). Executors — Ruby handler
//! threads through the extension, or Rust code — pull [`Dispatch`]es from a bounded channel and
//! push outcomes back with [`Engine::complete`], which never blocks on the database.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::messaging::{self, queue::QueueName};
use crate::orchestration::registry::{RegisteredTemplate, Registry};
use crate::orchestration::{self, CreatedTask, Intervention, TaskRequest};
use crate::resilience::{BreakerRegistry, CircuitBreakerConfig, OwnedPermit};
use crate::state::TaskState;
use crate::store::snapshot::{self, TaskView};
use crate::strings::StringCache;
use crate::telemetry::{BreakerSource, StepTrace, Telemetry};
use crate::worker::poller::Poller;
use crate::worker::{ClaimTicket, StepEvent, StepOutcome};

mod applier;
mod creator;
mod fused;

/// Engine settings (the Ruby `TaskerCore.configure` values, already validated there).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub database_url: String,
    /// Namespaces whose steps this process runs. Empty: create and read tasks only.
    pub namespaces: Vec<String>,
    pub template_paths: Vec<PathBuf>,
    /// Handler threads the executor runs; also the number of steps claimed at once.
    pub concurrency: usize,
    pub pool_size: u32,
    /// How often an idle poller looks at its queue without a wake-up.
    pub poll_interval: Duration,
    /// Recorded as the claim owner; defaults to `host:pid`.
    pub worker_id: Option<String>,
    /// How long a claim outlives its step's timeout before another process may take the step
    /// over (a process that died mid-step is detected after timeout + grace).
    pub claim_grace: Duration,
    /// Distinct names the string cache keeps (LRU beyond that).
    pub string_cache_capacity: usize,
    /// Settings of the per-queue circuit breakers.
    pub queue_breaker: CircuitBreakerConfig,
    /// Settings of the per-handler-class circuit breakers.
    pub handler_breaker: CircuitBreakerConfig,
    /// A step enqueued this long without a message in its queue is sent again.
    pub requeue_after: Duration,
    /// How long a queue read waits for a lock on the queue table before it fails.
    pub queue_lock_timeout: Duration,
    /// OpenTelemetry export; None: off.
    pub telemetry: Option<crate::telemetry::TelemetryConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            database_url: String::new(),
            namespaces: Vec::new(),
            template_paths: Vec::new(),
            concurrency: 4,
            pool_size: 10,
            poll_interval: Duration::from_millis(500),
            worker_id: None,
            claim_grace: Duration::from_secs(30),
            string_cache_capacity: crate::strings::DEFAULT_CAPACITY,
            queue_breaker: CircuitBreakerConfig {
                failure_threshold: 5,
                open_timeout: Duration::from_secs(10),
                success_threshold: 1,
            },
            handler_breaker: CircuitBreakerConfig {
                failure_threshold: 5,
                open_timeout: Duration::from_secs(30),
                success_threshold: 1,
            },
            requeue_after: Duration::from_secs(60),
            queue_lock_timeout: Duration::from_secs(2),
            telemetry: None,
        }
    }
}

/// A claimed step plus the handler slot it occupies until its outcome is handed back.
#[derive(Debug)]
pub struct Dispatch {
    pub event: StepEvent,
    slot: Slot,
}

/// A handler slot taken by a dispatched step, and the admission of its handler's circuit
/// breaker; dropping it frees the slot (an admission never settled counts as a failure).
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    handler: Option<OwnedPermit>,
    trace: Option<StepTrace>,
}

impl Slot {
    /// Give the handler's breaker its verdict on this attempt: only a fault (timeout,
    /// unclassified exception) counts against it; business errors are healthy calls.
    fn settle(&mut self, outcome: &StepOutcome) {
        if let Some(admission) = self.handler.take() {
            match outcome {
                StepOutcome::Failure(f) if f.fault => admission.failure(),
                _ => admission.success(),
            }
        }
    }
}

impl Dispatch {
    pub(crate) fn new(
        event: StepEvent,
        permit: OwnedSemaphorePermit,
        handler: Option<OwnedPermit>,
        trace: Option<StepTrace>,
    ) -> Self {
        Dispatch {
            event,
            slot: Slot {
                _permit: Some(permit),
                handler,
                trace,
            },
        }
    }

    /// An event that occupies no engine slot (benchmarks and tests of the boundary).
    pub fn detached(event: StepEvent) -> Self {
        Dispatch {
            event,
            slot: Slot {
                _permit: None,
                handler: None,
                trace: None,
            },
        }
    }

    /// Separate the event (which an executor may keep reading) from the slot (which is
    /// handed back with the outcome).
    pub fn into_parts(self) -> (StepEvent, Slot) {
        (self.event, self.slot)
    }
}

/// What [`EngineHandle::health`] found.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// None when `SELECT 1` succeeded.
    pub database_error: Option<String>,
    pub database_latency: Duration,
    pub pool: PoolHealth,
    pub queues: Vec<QueueHealth>,
}

/// The engine's connection pool, and how often it could not hand out a connection lately.
#[derive(Debug, Clone)]
pub struct PoolHealth {
    /// Connections open now.
    pub size: u32,
    /// Most connections the pool opens.
    pub max: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Database operations of the engine that failed for want of a connection (pool timeout,
    /// refused or lost connection) in the last [`crate::trouble::TROUBLE_WINDOW`].
    pub recent_failures: u64,
    /// The last such failure, if any in that window.
    pub last_failure: Option<String>,
}

/// One served queue.
#[derive(Debug, Clone)]
pub struct QueueHealth {
    pub namespace: String,
    /// Messages in the queue (None when it could not be read).
    pub depth: Option<i64>,
    pub oldest_message_age_seconds: Option<i32>,
}

/// See [`Engine::memory_stats`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryStats {
    pub string_cache: crate::strings::CacheStats,
    /// Claimed steps waiting for a handler thread.
    pub dispatch_queue_depth: usize,
    /// Outcomes handed back and not yet applied.
    pub completions_pending: usize,
    /// Templates held in memory (each is kept for the engine's lifetime).
    pub templates: usize,
}

/// Result of waiting for the next step.
#[derive(Debug)]
pub enum NextStep {
    Step(Box<Dispatch>),
    /// Nothing arrived in time.
    Timeout,
    /// The engine is shutting down and every claimed step has been handed out.
    Closed,
}

type Completion = (ClaimTicket, StepOutcome, Option<StepTrace>);

/// Callers waiting for a task's finalization: (waiter id, wake-up sender).
type Waiters = HashMap<Uuid, Vec<(u64, crossbeam_channel::Sender<()>)>>;

/// State shared by the engine's services.
pub(crate) struct Shared {
    pub pool: PgPool,
    /// Claims (which read and settle queue messages) and queue metrics (see
    /// [`connect_queue_pool`]): their statements wait at most `queue_lock_timeout` for a lock.
    pub queue_pool: PgPool,
    pub registry: Registry,
    pub worker_id: String,
    pub poll_interval: Duration,
    pub claim_grace_seconds: i32,
    pub requeue_after: Duration,
    /// How long a queue write waits for a lock on the queue table.
    pub queue_lock_timeout: Duration,
    /// Interned names read from the database (dependency step names).
    pub names: StringCache,
    /// One breaker per queue, around its pgmq operations.
    pub queue_breakers: BreakerRegistry,
    /// One breaker per handler class, consulted before a step of that handler is claimed.
    pub handler_breakers: BreakerRegistry,
    /// Handler classes named by the templates this process loaded: only these get a breaker
    /// (a message's `handler` string never creates one).
    pub handler_classes: std::collections::HashSet<Arc<str>>,
    /// Metrics and traces, when exported.
    pub telemetry: Option<Telemetry>,
    /// Failures for want of a connection, counted and reported at a bounded rate.
    pub trouble: crate::trouble::ConnectionTrouble,
    /// Outcomes handed back and not yet applied.
    pub(crate) completions_pending: AtomicUsize,
    /// Wake-up signal per namespace served by this process.
    wakeups: HashMap<String, Arc<Notify>>,
    pub(crate) retry_wakeup: Notify,
    waiters: Mutex<Waiters>,
    next_waiter: AtomicU64,
    /// Tags this engine's cross-process wake-ups, so that it ignores its own echo.
    pub(crate) instance_id: String,
    /// Handler slots: `concurrency` permits, one per step claimed and not yet handed back.
    pub(crate) slots: Arc<Semaphore>,
    /// Where claimed steps go (None in a process that serves no namespace, and once the
    /// engine is stopping: the executors then see the channel close).
    pub(crate) dispatch: Mutex<Option<crossbeam_channel::Sender<Dispatch>>>,
    /// Queue names of the namespaces this process serves (claimed here when work for them is
    /// created or released).
    pub(crate) served_queues: Vec<String>,
    /// Task creation batched per namespace.
    lanes: creator::Lanes,
}

impl Shared {
    /// Create tasks (one transaction, one round trip) through their namespace queues'
    /// breakers: while one is open the call is refused at once and nothing is written. Roots
    /// of namespaces this process serves are claimed for it as free handler slots allow, and
    /// handed to the handler threads.
    pub(crate) async fn create_tasks(&self, reqs: &[TaskRequest]) -> Result<Vec<CreatedTask>> {
        let mut regs = Vec::with_capacity(reqs.len());
        for req in reqs {
            regs.push(
                self.registry
                    .lookup(&self.pool, &req.namespace, &req.name, &req.version)
                    .await?,
            );
        }
        let mut queue_names: Vec<&str> = regs.iter().map(|r| r.queue.as_str()).collect();
        queue_names.sort_unstable();
        queue_names.dedup();
        let breakers: Vec<_> = queue_names
            .iter()
            .map(|q| self.queue_breakers.get(q))
            .collect();
        let mut permits = Vec::with_capacity(breakers.len());
        for breaker in &breakers {
            match breaker.try_acquire() {
                Ok(p) => permits.push((breaker.name().to_owned(), p)),
                Err(retry_after) => {
                    for (_, p) in permits {
                        p.release();
                    }
                    return Err(Error::CircuitOpen {
                        breaker: breaker.name().to_owned(),
                        retry_after,
                    });
                }
            }
        }
        let started = std::time::Instant::now();
        // Each task's trace: its own span when exporting, else the caller's context as given.
        let mut spans = Vec::with_capacity(reqs.len());
        let mut tasks = Vec::with_capacity(reqs.len());
        for (req, reg) in reqs.iter().zip(&regs) {
            let parent = req
                .traceparent
                .as_deref()
                .and_then(crate::telemetry::parse_traceparent);
            let span = self.telemetry.as_ref().map(|t| t.task_span(parent.clone()));
            let traceparent = match &span {
                Some(span) => Some(crate::telemetry::format_traceparent(
                    opentelemetry::trace::Span::span_context(span),
                )),
                None => parent.as_ref().map(crate::telemetry::format_traceparent),
            };
            spans.push(span);
            tasks.push(orchestration::create::NewTask {
                reg,
                req,
                traceparent,
            });
        }
        let roots = regs.iter().fold(0usize, |n, reg| {
            n.saturating_add(reg.template.roots().count())
        });
        let budget = self.claim_budget(roots);
        let created = orchestration::create::create_tasks(
            &self.pool,
            &tasks,
            &budget.claims(self),
            self.queue_lock_timeout,
            &self.instance_id,
        )
        .await;
        let (created, claimed) = match created {
            Ok(done) => {
                for (_, p) in permits {
                    p.success();
                }
                done
            }
            Err(e) => {
                for (name, p) in permits {
                    match &e {
                        Error::Queue { queue, .. } if *queue == name => p.failure(),
                        _ => p.release(),
                    }
                }
                return Err(e);
            }
        };
        // Roots sent to a queue this process serves (not claimed here): its poller looks.
        let mut unclaimed: Vec<&str> = Vec::new();
        for (reg, c) in regs.iter().zip(&created) {
            let roots = reg.template.roots().count();
            let taken = claimed
                .iter()
                .filter(|ch| ch.row.task_uuid == c.task_uuid)
                .count();
            if c.created && roots > taken && !unclaimed.contains(&&*reg.template.namespace) {
                unclaimed.push(&reg.template.namespace);
            }
        }
        for ns in unclaimed {
            self.wake_namespace(ns);
        }
        self.hand_out(claimed, budget).await;
        for ((reg, span), c) in regs.iter().zip(spans).zip(&created) {
            if let (Some(t), Some(span)) = (&self.telemetry, span) {
                t.task_created(span, reg, c, started.elapsed());
            }
        }
        Ok(created)
    }

    /// Send step messages inside `conn`'s transaction through the queue's breaker. Returns
    /// whether they were sent; when not (breaker open, queue failing) the transaction is still
    /// good and the steps stay enqueued without a message, for the recovery loop.
    pub(crate) async fn send_guarded(
        &self,
        conn: &mut sqlx::PgConnection,
        queue: &QueueName,
        namespace: &str,
        messages: &[messaging::StepMessage],
    ) -> Result<bool> {
        let breaker = self.queue_breakers.get(queue.as_str());
        let Ok(permit) = breaker.try_acquire() else {
            return Ok(false);
        };
        match messaging::write_queue(
            conn,
            queue,
            namespace,
            messages,
            None,
            self.queue_lock_timeout,
        )
        .await
        {
            Ok(None) => {
                permit.success();
                Ok(true)
            }
            Ok(Some(error)) => {
                permit.failure();
                tracing::warn!(queue = %queue, error, "sending step messages failed; the recovery loop sends them later");
                Ok(false)
            }
            Err(e) => {
                permit.release();
                Err(e)
            }
        }
    }

    pub(crate) fn wake_namespace(&self, namespace: &str) {
        if let Some(n) = self.wakeups.get(namespace) {
            n.notify_one();
        }
    }

    fn wake_all(&self) {
        for n in self.wakeups.values() {
            n.notify_one();
        }
    }

    pub(crate) fn task_finished(&self, task_uuid: Uuid) {
        let senders = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&task_uuid);
        for (_, tx) in senders.into_iter().flatten() {
            let _ = tx.try_send(());
        }
    }
}

/// How long `health` waits for a connection to ping the database with.
const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A cheap, cloneable handle for async calls (task creation, reads) on the engine.
#[derive(Clone)]
pub struct EngineHandle(Arc<Shared>);

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
        self.0.create_batched(reqs).await.inspect_err(|e| {
            self.0.trouble.note("creating tasks", e);
        })
    }

    /// Cancel a task (see the state table in the operations guide).
    pub async fn cancel_task(&self, task_uuid: Uuid, who: Intervention) -> Result<TaskState> {
        let state = orchestration::controls::cancel_task(&self.0.pool, task_uuid, &who).await?;
        self.0.task_finished(task_uuid);
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
            &self.0.pool,
            &self.0.registry,
            task_uuid,
            &step_name,
            &who,
            self.0.queue_lock_timeout,
        )
        .await?;
        self.0.wake_all();
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
            &self.0.pool,
            task_uuid,
            &step_name,
            &result,
            &who,
        )
        .await?;
        if released > 0 {
            self.0.wake_all();
        }
        if state.is_terminal() {
            self.0.task_finished(task_uuid);
        }
        Ok(state)
    }

    /// A task with steps and history.
    pub async fn find_task(&self, task_uuid: Uuid) -> Result<Option<TaskView>> {
        snapshot::find_task(&self.0.pool, task_uuid).await
    }

    /// Queue a task request for any worker process to turn into a task; returns its message id.
    pub async fn request_task(&self, request: serde_json::Value) -> Result<i64> {
        orchestration::requests::send_request(&self.0.pool, &request).await
    }

    /// Database reachability and the depth of each served queue (`TaskerCore.health`).
    pub async fn health(&self) -> HealthReport {
        let started = std::time::Instant::now();
        // Bounded: a starved pool answers within seconds, not after the pool's own timeout.
        let ping = tokio::time::timeout(
            HEALTH_PING_TIMEOUT,
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.0.pool),
        )
        .await;
        let database_latency = started.elapsed();
        let database_error = match ping {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no connection from the pool within {}s (all {} in use?)",
                HEALTH_PING_TIMEOUT.as_secs(),
                self.0.pool.options().get_max_connections()
            )),
        };
        let (recent_failures, last_failure) = self.0.trouble.recent();
        let pool = PoolHealth {
            size: self.0.pool.size(),
            max: self.0.pool.options().get_max_connections(),
            idle: self.0.pool.num_idle() as u32,
            recent_failures,
            last_failure,
        };
        let mut queues = Vec::new();
        if database_error.is_none() {
            let mut namespaces: Vec<&String> = self.0.wakeups.keys().collect();
            namespaces.sort();
            for ns in namespaces {
                let Ok(queue) = QueueName::for_namespace(ns) else {
                    continue;
                };
                let row: std::result::Result<(i64, Option<i32>), sqlx::Error> =
                    // On the queue pool: a locked queue table answers "unknown" at once.
                    sqlx::query_as("SELECT queue_length, oldest_msg_age_sec FROM pgmq.metrics($1)")
                        .bind(queue.as_str())
                        .fetch_one(&self.0.queue_pool)
                        .await;
                queues.push(QueueHealth {
                    namespace: ns.clone(),
                    depth: row.as_ref().ok().map(|r| r.0),
                    oldest_message_age_seconds: row.ok().and_then(|r| r.1),
                });
            }
        }
        HealthReport {
            database_error,
            database_latency,
            pool,
            queues,
        }
    }

    /// Tasks by correlation id and/or parent correlation id.
    pub async fn find_tasks(
        &self,
        correlation_id: Option<Uuid>,
        parent_correlation_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<snapshot::TaskSummary>> {
        snapshot::find_tasks(&self.0.pool, correlation_id, parent_correlation_id, limit).await
    }

    /// A task's current status.
    pub async fn task_status(&self, task_uuid: Uuid) -> Result<Option<TaskState>> {
        snapshot::task_status(&self.0.pool, task_uuid).await
    }

    /// The pool, for callers (tests, benches) that need direct SQL.
    pub fn pool(&self) -> &PgPool {
        &self.0.pool
    }
}

/// The running engine.
pub struct Engine {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    pid: u32,
    templates: Vec<Arc<RegisteredTemplate>>,
    dispatch_rx: crossbeam_channel::Receiver<Dispatch>,
    completion_tx: Mutex<Option<mpsc::UnboundedSender<Completion>>>,
    stop_tx: watch::Sender<bool>,
    services: Mutex<Vec<JoinHandle<()>>>,
    applier: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Connect, register templates, create queues and start the services. Blocks the caller.
    pub fn start(config: EngineConfig) -> Result<Engine> {
        if config.database_url.is_empty() {
            return Err(Error::Configuration("database_url is not set".into()));
        }
        if config.concurrency == 0 || config.concurrency > 1024 {
            return Err(Error::Configuration(
                "concurrency must be between 1 and 1024".into(),
            ));
        }
        for ns in &config.namespaces {
            messaging::queue::validate_namespace(ns)?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tasker-rt")
            .enable_all()
            .build()
            .map_err(|e| Error::Configuration(format!("cannot start the tokio runtime: {e}")))?;
        // Exporters use blocking HTTP clients: built here, outside the runtime.
        let telemetry = match &config.telemetry {
            Some(t) => Some(Telemetry::start(t, &config.namespaces)?),
            None => None,
        };
        let started = runtime.block_on(Self::boot(config, telemetry));
        match started {
            Ok(parts) => Ok(Self::from_parts(runtime, parts)),
            Err(e) => {
                runtime.shutdown_timeout(Duration::from_secs(1));
                Err(e)
            }
        }
    }

    async fn boot(config: EngineConfig, telemetry: Option<Telemetry>) -> Result<Boot> {
        let templates = crate::template::load_paths(&config.template_paths)?;
        let pool = connect(&config.database_url, config.pool_size).await?;
        let queue_pool = connect_queue_pool(
            &config.database_url,
            config.namespaces.len() as u32 + 1,
            config.queue_lock_timeout,
        )
        .await?;
        let ready: bool = sqlx::query_scalar("SELECT to_regclass('tasker.tasks') IS NOT NULL")
            .fetch_one(&pool)
            .await?;
        if !ready {
            return Err(Error::Migration(
                "the tasker schema is missing: run TaskerCore.migrate! (or `tasker_core migrate`) first".into(),
            ));
        }
        let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
        let wakeups = config
            .namespaces
            .iter()
            .map(|ns| (ns.clone(), Arc::new(Notify::new())))
            .collect();
        let shared = Arc::new(Shared {
            pool,
            queue_pool,
            registry: Registry::default(),
            worker_id,
            poll_interval: config.poll_interval,
            claim_grace_seconds: config.claim_grace.as_secs().clamp(1, 86_400) as i32,
            requeue_after: config.requeue_after,
            queue_lock_timeout: config.queue_lock_timeout,
            names: StringCache::new(config.string_cache_capacity),
            queue_breakers: {
                let breakers = BreakerRegistry::default();
                breakers.set_defaults(config.queue_breaker);
                breakers
            },
            handler_breakers: {
                let breakers = BreakerRegistry::default();
                breakers.set_defaults(config.handler_breaker);
                breakers
            },
            telemetry,
            handler_classes: templates.iter().flat_map(|t| t.handler_classes()).collect(),
            trouble: Default::default(),
            completions_pending: AtomicUsize::new(0),
            wakeups,
            retry_wakeup: Notify::new(),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            instance_id: Uuid::new_v4().simple().to_string(),
            slots: Arc::new(Semaphore::new(config.concurrency)),
            dispatch: Mutex::new(None),
            served_queues: config
                .namespaces
                .iter()
                .filter_map(|ns| QueueName::for_namespace(ns).ok())
                .map(|q| q.as_str().to_owned())
                .collect(),
            lanes: Default::default(),
        });
        let mut registered = Vec::with_capacity(templates.len());
        for t in templates {
            registered.push(shared.registry.register(&shared.pool, t).await?);
        }
        let mut queues = Vec::with_capacity(config.namespaces.len());
        for ns in &config.namespaces {
            let queue = QueueName::for_namespace(ns)?;
            messaging::ensure_queue(&shared.pool, &queue).await?;
            queues.push((ns.clone(), queue));
        }
        Ok(Boot {
            shared,
            registered,
            queues,
            concurrency: config.concurrency,
        })
    }

    fn from_parts(runtime: tokio::runtime::Runtime, boot: Boot) -> Engine {
        let Boot {
            shared,
            registered,
            queues,
            concurrency,
        } = boot;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (dispatch_tx, dispatch_rx) = crossbeam_channel::bounded(concurrency);
        let (completion_tx, completion_rx) = mpsc::unbounded_channel();
        if !shared.served_queues.is_empty() {
            *shared.dispatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(dispatch_tx.clone());
        }
        let mut services = Vec::new();
        let _guard = runtime.enter();
        if let Some(t) = &shared.telemetry {
            let source: std::sync::Weak<dyn BreakerSource> = Arc::downgrade(&shared) as _;
            t.observe(source);
            services.push(tokio::spawn(refresh_queue_depths(
                shared.clone(),
                stop_rx.clone(),
            )));
        }
        services.push(tokio::spawn(listen(shared.clone(), stop_rx.clone())));
        if !queues.is_empty() {
            services.push(tokio::spawn(release_retries(
                shared.clone(),
                stop_rx.clone(),
            )));
            services.push(tokio::spawn(consume_task_requests(
                shared.clone(),
                stop_rx.clone(),
            )));
            services.push(tokio::spawn(requeue_lost_messages(
                shared.clone(),
                stop_rx.clone(),
            )));
        }
        for (namespace, queue) in queues {
            let wake = shared.wakeups[&namespace].clone();
            let poller = Poller {
                shared: shared.clone(),
                namespace,
                queue,
                wake,
                slots: shared.slots.clone(),
                concurrency,
                out: dispatch_tx.clone(),
                stop: stop_rx.clone(),
            };
            services.push(tokio::spawn(poller.run()));
        }
        drop(dispatch_tx);
        let applier = tokio::spawn(
            applier::Applier {
                shared: shared.clone(),
                rx: completion_rx,
            }
            .run(),
        );
        Engine {
            runtime: Some(runtime),
            shared,
            pid: std::process::id(),
            templates: registered,
            dispatch_rx,
            completion_tx: Mutex::new(Some(completion_tx)),
            stop_tx,
            services: Mutex::new(services),
            applier: Mutex::new(Some(applier)),
        }
    }

    /// A handle for async calls.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle(self.shared.clone())
    }

    /// Templates loaded from the configured paths.
    pub fn templates(&self) -> &[Arc<RegisteredTemplate>] {
        &self.templates
    }

    /// False in a child process forked after start: the runtime's threads did not survive.
    pub fn is_current_process(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Run a future on the engine's runtime; the result arrives on the returned channel, so a
    /// foreign thread can wait for it however it must (e.g. with Ruby's GVL released).
    pub fn spawn_call<T, F>(&self, fut: F) -> crossbeam_channel::Receiver<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if let Some(rt) = &self.runtime {
            rt.spawn(async move {
                let _ = tx.send(fut.await);
            });
        }
        rx
    }

    /// Run a future to completion on the engine's runtime, blocking the calling thread.
    pub fn block_on<T, F>(&self, fut: F) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        self.spawn_call(fut).recv().ok()
    }

    /// The channel executors take steps from.
    pub fn dispatch_receiver(&self) -> &crossbeam_channel::Receiver<Dispatch> {
        &self.dispatch_rx
    }

    /// Mark a step received from [`Engine::dispatch_receiver`] as taken by a handler thread
    /// (starts its handler span when traces are exported; the event then carries its ids).
    pub fn handed_out(&self, mut d: Dispatch) -> Dispatch {
        if let (Some(t), Some(trace)) = (&self.shared.telemetry, d.slot.trace.as_mut()) {
            d.event.trace_ids = Some(t.taken(trace));
        }
        d
    }

    /// Wait up to `timeout` for the next step (for Rust executors; Ruby waits through the
    /// extension with the GVL released).
    pub fn next_step(&self, timeout: Duration) -> NextStep {
        match self.dispatch_rx.recv_timeout(timeout) {
            Ok(d) => NextStep::Step(Box::new(self.handed_out(d))),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => NextStep::Timeout,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => NextStep::Closed,
        }
    }

    /// Hand back a step's outcome. Never blocks on the database: the result is applied by
    /// the engine's applier. The handler slot is free again when this returns.
    pub fn complete(&self, dispatch: Dispatch, outcome: StepOutcome) -> Result<()> {
        let (event, slot) = dispatch.into_parts();
        self.complete_ticket(event.ticket, slot, outcome)
    }

    /// [`Engine::complete`] for an executor that keeps the event after handing back its slot.
    pub fn complete_ticket(
        &self,
        ticket: ClaimTicket,
        mut slot: Slot,
        outcome: StepOutcome,
    ) -> Result<()> {
        slot.settle(&outcome);
        if let (Some(t), Some(trace)) = (&self.shared.telemetry, slot.trace.as_mut()) {
            t.handed_back(trace, &outcome);
        }
        let trace = slot.trace.take();
        let sent = match &*self.completion_tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send((ticket, outcome, trace)).is_ok(),
            None => false,
        };
        if sent {
            self.shared
                .completions_pending
                .fetch_add(1, Ordering::Relaxed);
        }
        drop(slot);
        if sent {
            Ok(())
        } else {
            Err(Error::NotStarted(
                "the engine has shut down; the step will be redelivered after its claim expires"
                    .into(),
            ))
        }
    }

    /// Register interest in a task's finalization. The receiver gets one message when the
    /// task reaches a terminal state (in this or any other process). Check the status after
    /// registering to close the race with a finalization that already happened.
    pub fn register_waiter(&self, task_uuid: Uuid) -> (u64, crossbeam_channel::Receiver<()>) {
        let id = self.shared.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(task_uuid)
            .or_default()
            .push((id, tx));
        (id, rx)
    }

    /// Forget a waiter that stopped waiting.
    pub fn unregister_waiter(&self, task_uuid: Uuid, id: u64) {
        let mut waiters = self
            .shared
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(list) = waiters.get_mut(&task_uuid) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                waiters.remove(&task_uuid);
            }
        }
    }

    /// The per-queue circuit breakers.
    pub fn queue_breakers(&self) -> Vec<Arc<crate::resilience::CircuitBreaker>> {
        self.shared.queue_breakers.all()
    }

    /// The per-handler-class breakers (created when a handler's first step is seen).
    pub fn handler_breakers(&self) -> &BreakerRegistry {
        &self.shared.handler_breakers
    }

    /// The per-queue breakers' registry (to reconfigure them at runtime).
    pub fn queue_breaker_registry(&self) -> &BreakerRegistry {
        &self.shared.queue_breakers
    }

    /// Memory and queue figures of this engine (for `TaskerCore.memory_stats`).
    pub fn memory_stats(&self) -> MemoryStats {
        MemoryStats {
            string_cache: self.shared.names.stats(),
            dispatch_queue_depth: self.dispatch_rx.len(),
            completions_pending: self.shared.completions_pending.load(Ordering::Relaxed),
            templates: self.shared.registry.len(),
        }
    }

    /// Stop claiming new steps. Claimed steps stay in the channel for the executor to finish;
    /// once they are taken, [`Engine::next_step`] reports [`NextStep::Closed`].
    pub fn begin_shutdown(&self) {
        let _ = self.stop_tx.send(true);
        // Nothing is claimed for this process from now on.
        self.shared
            .dispatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Stop everything: services, then the applier once every handed-back outcome is applied,
    /// then the pool and the runtime. Steps still unfinished are redelivered after their claim
    /// expires.
    pub fn shutdown(mut self, timeout: Duration) {
        self.begin_shutdown();
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let services: Vec<_> =
            std::mem::take(&mut *self.services.lock().unwrap_or_else(|e| e.into_inner()));
        self.completion_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let applier = self
            .applier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let pool = self.shared.pool.clone();
        let queue_pool = self.shared.queue_pool.clone();
        runtime.block_on(async move {
            let all = async {
                for s in services {
                    let _ = s.await;
                }
                if let Some(a) = applier {
                    let _ = a.await;
                }
            };
            if tokio::time::timeout(timeout, all).await.is_err() {
                tracing::warn!("engine shutdown timed out; unfinished work will be redelivered");
            }
            pool.close().await;
            queue_pool.close().await;
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        // Flushes what is left to export (blocking; outside the runtime).
        if let Some(t) = &self.shared.telemetry {
            t.shutdown();
        }
    }

    /// Leave the engine without touching its threads or connections. For a forked child:
    /// the parent's runtime threads do not exist there, and its sockets belong to the parent.
    pub fn abandon(self) {
        std::mem::forget(self);
    }
}

struct Boot {
    shared: Arc<Shared>,
    registered: Vec<Arc<RegisteredTemplate>>,
    queues: Vec<(String, QueueName)>,
    concurrency: usize,
}

/// Open a pool: no ping before each acquire (saves a round trip per statement).
/// A small pool for reading queues: its statements give up on a lock after `lock_timeout`
/// and on anything after 30 s, so a locked queue table fails fast (and opens that queue's
/// breaker) instead of holding connections the rest of the engine needs.
pub async fn connect_queue_pool(
    database_url: &str,
    size: u32,
    lock_timeout: Duration,
) -> Result<PgPool> {
    let options = database_url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options([
            (
                "lock_timeout",
                format!("{}ms", lock_timeout.as_millis().max(1)),
            ),
            ("statement_timeout", "30000ms".to_owned()),
        ]);
    PgPoolOptions::new()
        .max_connections(size.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(Error::from)
}

pub async fn connect(database_url: &str, size: u32) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size.max(2))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .connect(database_url)
        .await
        .map_err(Error::from)
}

/// Run `work` on a short-lived pool of its own, outside any engine.
fn with_own_pool<T, F, Fut>(database_url: &str, work: F) -> Result<T>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Configuration(format!("cannot start a tokio runtime: {e}")))?;
    rt.block_on(async {
        let pool = connect(database_url, 2).await?;
        let result = work(pool.clone()).await;
        pool.close().await;
        result
    })
}

/// Apply migrations on a database.
pub fn migrate(database_url: &str) -> Result<()> {
    with_own_pool(database_url, |pool| async move {
        crate::store::migrate::migrate(&pool).await
    })
}

/// The project's migrations, each with whether it is applied to `database_url`.
pub fn migration_status(database_url: &str) -> Result<Vec<(i64, String, bool)>> {
    with_own_pool(database_url, |pool| async move {
        let (applied, known) = crate::store::migrate::status(&pool).await?;
        Ok(known
            .into_iter()
            .map(|(v, d)| (v, d, applied.contains(&v)))
            .collect())
    })
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Keep the queue depth gauges current (read at export).
async fn refresh_queue_depths(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(t) = &shared.telemetry else { return };
    loop {
        for (ns, depth) in t.queue_depths.iter() {
            let Ok(queue) = QueueName::for_namespace(ns) else {
                continue;
            };
            let length: std::result::Result<i64, sqlx::Error> =
                sqlx::query_scalar("SELECT queue_length FROM pgmq.metrics($1)")
                    .bind(queue.as_str())
                    .fetch_one(&shared.queue_pool)
                    .await;
            depth.store(length.unwrap_or(-1), Ordering::Relaxed);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => break,
        }
    }
}

impl BreakerSource for Shared {
    fn breakers(&self) -> Vec<(&'static str, Arc<crate::resilience::CircuitBreaker>)> {
        let queues = self.queue_breakers.all().into_iter().map(|b| ("queue", b));
        let handlers = self
            .handler_breakers
            .all()
            .into_iter()
            .map(|b| ("handler", b));
        let named = crate::resilience::registry()
            .all()
            .into_iter()
            .map(|b| ("named", b));
        queues.chain(handlers).chain(named).collect()
    }
}

/// Move steps whose backoff elapsed back to their queues.
async fn release_retries(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = match orchestration::retry::release_due(&shared).await {
            Ok((namespaces, next)) => {
                for (ns, count) in &namespaces {
                    shared.wake_namespace(ns);
                    if let Some(t) = &shared.telemetry {
                        t.enqueued(ns, *count);
                    }
                }
                next.unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(5), Duration::from_secs(1))
            }
            Err(e) => {
                if !shared.trouble.note("releasing steps due for retry", &e) {
                    tracing::warn!(error = %e, "releasing steps due for retry failed");
                }
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shared.retry_wakeup.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Re-send enqueued steps whose message was lost, for every served namespace.
async fn requeue_lost_messages(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every =
        (shared.requeue_after / 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
        for ns in shared.wakeups.keys() {
            match orchestration::recovery::requeue_lost(&shared, ns).await {
                Ok(n) if n > 0 => {
                    shared.wake_namespace(ns);
                    if let Some(t) = &shared.telemetry {
                        t.enqueued(ns, n);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !shared.trouble.note("looking for lost messages", &e) {
                        tracing::warn!(namespace = %ns, error = %e, "looking for lost messages failed")
                    }
                }
            }
        }
    }
}

/// Turn requests from the `tasker_task_requests` queue into tasks.
async fn consume_task_requests(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let read_sql = messaging::read_sql(&orchestration::requests::queue());
    loop {
        let busy = match orchestration::requests::process_batch(&shared, &read_sql, 20).await {
            Ok(outcomes) => {
                for (outcome, namespace) in &outcomes {
                    if let orchestration::requests::RequestOutcome::Archived(reason) = outcome {
                        tracing::warn!(reason = %reason, "archived a task request");
                    }
                    if let Some(ns) = namespace {
                        shared.wake_namespace(ns);
                    }
                }
                !outcomes.is_empty()
            }
            Err(e) => {
                if !shared.trouble.note("reading task requests", &e) {
                    tracing::warn!(error = %e, "reading task requests failed");
                }
                false
            }
        };
        if busy {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.poll_interval) => {}
            _ = stop.changed() => break,
        }
    }
}

/// Cross-process wake-ups: enqueued work per namespace, and finalized tasks.
async fn listen(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            match PgListener::connect_with(&shared.pool).await {
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
                    if !shared
                        .trouble
                        .note("connecting the notification listener", &e)
                    {
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
                    if sender != shared.instance_id {
                        shared.wake_namespace(namespace);
                    }
                }
                Ok(n) => {
                    // One task, or the comma-separated tasks one batch finished.
                    for uuid in n.payload().split(',').filter_map(|u| u.parse::<Uuid>().ok()) {
                        shared.task_finished(uuid);
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
