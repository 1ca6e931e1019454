//! The engine: owns the tokio runtime, the PostgreSQL pools and the services — one poller per
//! served namespace, the result applier, task creation, the retry releaser, the recovery loop,
//! the task-request consumer and the notification listener — each holding only the parts it
//! uses (pools, queue writer, claimer, signals, telemetry). Executors — Ruby handler threads
//! through the extension, or Rust code — pull [`Dispatch`]es from a bounded channel and push
//! outcomes back with [`Engine::complete`], which never blocks on the database.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::defaults;
use crate::error::{Error, Result};
use crate::messaging::{self, queue::QueueName};
use crate::orchestration::queue_writer::QueueWriter;
use crate::orchestration::registry::{RegisteredTemplate, Registry};
use crate::resilience::{BreakerRegistry, CircuitBreakerConfig};
use crate::store;
use crate::strings::StringCache;
use crate::telemetry::{BreakerSource, Telemetry};
use crate::worker::{ClaimTicket, StepOutcome};

mod applier;
mod claims;
mod creator;
mod db;
mod dispatch;
mod handle;
mod health;
mod listener;
pub mod maintenance;
mod pauses;
mod poller;
mod scheduler;
mod services;
mod signals;

use claims::Claimer;
use creator::Creator;
use db::Db;
use dispatch::Completion;
pub use dispatch::{Dispatch, NextStep, Slot};
use handle::HandleParts;
pub use handle::{EngineHandle, TaskWait};
pub use health::{HealthReport, MemoryStats, PoolHealth, QueueHealth};
use poller::Poller;
use signals::Signals;

/// Engine settings (the Ruby `TaskerCore.configure` values, already validated there).
/// Defaults: [`crate::defaults`].
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
    /// Cron schedules declared in the configuration (each names its task).
    pub schedules: Vec<crate::schedule::ScheduleDoc>,
    /// Templates given as text (YAML or JSON) besides `template_paths`: the gem's built-in
    /// ones (an Active Job queue's).
    pub template_texts: Vec<String>,
    /// How long finished work is kept, and how maintenance runs.
    pub retention: RetentionConfig,
    /// `database_url` goes through a pooler in transaction mode (PgBouncer `pool_mode =
    /// transaction`): unnamed statements, each statement in a transaction, no session state
    /// (`store::pool`), and LISTEN only on `listen_database_url`.
    pub transaction_pooling: bool,
    /// A direct connection (not through a transaction pooler) for LISTEN; None with
    /// `transaction_pooling`: no wake-ups, every process polls (`poll_interval`).
    pub listen_database_url: Option<String>,
}

/// How long finished work is kept (None: forever) and how the maintenance loop that deletes it
/// runs (docs/operations.md, "Retention").
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    /// Complete and cancelled tasks, with their steps and histories, this long after finishing.
    pub completed: Option<Duration>,
    /// Errored tasks this long after failing.
    pub errored: Option<Duration>,
    /// Archived queue messages and cron fires this long after archiving.
    pub archive: Option<Duration>,
    /// How often a worker process tries to take the lease and run retention; None: only on
    /// demand (`tasker_core maintenance run`).
    pub interval: Option<Duration>,
    /// Tasks of each kind, and archived messages per queue, deleted per transaction.
    pub batch_size: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            completed: Some(defaults::RETENTION_COMPLETED),
            errored: Some(defaults::RETENTION_ERRORED),
            archive: Some(defaults::RETENTION_ARCHIVE),
            interval: Some(defaults::MAINTENANCE_INTERVAL),
            batch_size: defaults::MAINTENANCE_BATCH,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            database_url: String::new(),
            namespaces: Vec::new(),
            template_paths: Vec::new(),
            concurrency: defaults::CONCURRENCY,
            pool_size: defaults::POOL_SIZE,
            poll_interval: defaults::POLL_INTERVAL,
            worker_id: None,
            claim_grace: defaults::CLAIM_GRACE,
            string_cache_capacity: defaults::STRING_CACHE_CAPACITY,
            queue_breaker: defaults::PRODUCTION_BREAKERS.queues,
            handler_breaker: defaults::PRODUCTION_BREAKERS.handlers,
            requeue_after: defaults::REQUEUE_AFTER,
            queue_lock_timeout: defaults::QUEUE_LOCK_TIMEOUT,
            telemetry: None,
            schedules: Vec::new(),
            template_texts: Vec::new(),
            retention: RetentionConfig::default(),
            transaction_pooling: false,
            listen_database_url: None,
        }
    }
}

impl EngineConfig {
    /// The configuration within the engine's bounds (`crate::defaults`), the one place they
    /// are applied: `claim_grace` must be whole seconds in [`defaults::CLAIM_GRACE_SECONDS`];
    /// `requeue_after`, `queue_lock_timeout` and the telemetry export interval are raised to
    /// their minimum.
    pub fn bounded(mut self) -> Result<Self> {
        let grace = self.claim_grace;
        if grace.subsec_nanos() != 0 || !defaults::CLAIM_GRACE_SECONDS.contains(&grace.as_secs()) {
            return Err(Error::Configuration(format!(
                "claim_grace must be whole seconds from {} to {}, got {grace:?}",
                defaults::CLAIM_GRACE_SECONDS.start(),
                defaults::CLAIM_GRACE_SECONDS.end()
            )));
        }
        self.requeue_after = self.requeue_after.max(defaults::MIN_REQUEUE_AFTER);
        self.queue_lock_timeout = self
            .queue_lock_timeout
            .max(defaults::MIN_QUEUE_LOCK_TIMEOUT);
        if let Some(t) = self.telemetry.as_mut() {
            t.export_interval = t.export_interval.max(defaults::MIN_EXPORT_INTERVAL);
        }
        let batch = self.retention.batch_size;
        if !defaults::MAINTENANCE_BATCH_RANGE.contains(&batch) {
            return Err(Error::Configuration(format!(
                "retention batch_size must be from {} to {}, got {batch}",
                defaults::MAINTENANCE_BATCH_RANGE.start(),
                defaults::MAINTENANCE_BATCH_RANGE.end()
            )));
        }
        if let Some(i) = self.retention.interval.as_mut() {
            *i = (*i).max(defaults::MIN_MAINTENANCE_INTERVAL);
        }
        Ok(self)
    }
}

/// The running engine.
pub struct Engine {
    /// Taken by [`Engine::shutdown`]; `rt` spawns onto it until then.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    rt: tokio::runtime::Handle,
    handle: EngineHandle,
    claimer: Arc<Claimer>,
    breakers: Arc<AllBreakers>,
    telemetry: Option<Arc<Telemetry>>,
    /// Outcomes handed back and not yet applied.
    pending: Arc<AtomicUsize>,
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
        let config = config.bounded()?;
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
        let mut templates = crate::template::load_paths(&config.template_paths)?;
        for text in &config.template_texts {
            let t = crate::template::parse_str(text, Some("(built-in template)"))?;
            if !templates.iter().any(|o| o.key() == t.key()) {
                templates.push(t);
            }
        }
        let pooled = config.transaction_pooling;
        let pool = store::connect(&config.database_url, config.pool_size, pooled).await?;
        let queue_pool = store::connect_queue_pool(
            &config.database_url,
            config.namespaces.len() as u32 + 1,
            config.queue_lock_timeout,
            pooled,
        )
        .await?;
        if !store::schema_ready(&pool).await? {
            return Err(Error::Migration(
                "the tasker schema is missing: run TaskerCore.migrate! (or `tasker_core migrate`) first".into(),
            ));
        }
        let telemetry = telemetry.map(Arc::new);
        let db = Arc::new(Db {
            pool: pool.clone(),
            queue_pool,
            trouble: Default::default(),
        });
        let registry = Arc::new(Registry::default());
        let writer = Arc::new(QueueWriter {
            breakers: BreakerRegistry::with_defaults(config.queue_breaker),
            lock_timeout: config.queue_lock_timeout,
        });
        // Paused namespaces are known before anything is claimed.
        let pauses = Arc::new(pauses::Pauses::default());
        pauses.replace(
            store::pauses::list(&pool)
                .await?
                .into_iter()
                .filter(|p| p.template.is_none())
                .map(|p| p.namespace)
                .collect(),
        );
        let claimer = Arc::new(Claimer {
            pool: pool.clone(),
            registry: registry.clone(),
            names: StringCache::new(config.string_cache_capacity),
            worker_id: config.worker_id.clone().unwrap_or_else(default_worker_id),
            claim_grace_seconds: config.claim_grace.as_secs() as i32,
            served_queues: config
                .namespaces
                .iter()
                .filter_map(|ns| QueueName::for_namespace(ns).ok())
                .map(|q| q.as_str().to_owned())
                .collect(),
            slots: Arc::new(Semaphore::new(config.concurrency)),
            handler_breakers: BreakerRegistry::with_defaults(config.handler_breaker),
            handler_classes: templates.iter().flat_map(|t| t.handler_classes()).collect(),
            telemetry: telemetry.clone(),
            dispatch: Mutex::new(None),
            pauses: pauses.clone(),
            finishing: Mutex::new(std::collections::HashSet::new()),
        });
        let signals = Arc::new(Signals::new(&config.namespaces));
        let instance_id: Arc<str> = Uuid::new_v4().simple().to_string().into();
        let creator = Arc::new(Creator::new(
            pool.clone(),
            registry.clone(),
            writer.clone(),
            claimer.clone(),
            signals.clone(),
            telemetry.clone(),
            instance_id.clone(),
        ));
        let mut registered = Vec::with_capacity(templates.len());
        for t in templates {
            registered.push(registry.register(&pool, t).await?);
        }
        declare_schedules(&pool, &registry, &registered, &config.schedules).await?;
        let mut queues = Vec::with_capacity(config.namespaces.len());
        for ns in &config.namespaces {
            let queue = QueueName::for_namespace(ns)?;
            store::queues::ensure_queue(&pool, &queue).await?;
            queues.push((ns.clone(), queue));
        }
        Ok(Boot {
            db,
            registry,
            writer,
            claimer,
            signals,
            creator,
            telemetry,
            instance_id,
            registered,
            queues,
            config,
        })
    }

    fn from_parts(runtime: tokio::runtime::Runtime, boot: Boot) -> Engine {
        let Boot {
            db,
            registry,
            writer,
            claimer,
            signals,
            creator,
            telemetry,
            instance_id,
            registered,
            queues,
            config,
        } = boot;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (dispatch_tx, dispatch_rx) = crossbeam_channel::bounded(config.concurrency);
        let (completion_tx, completion_rx) = mpsc::unbounded_channel();
        if !claimer.served_queues.is_empty() {
            claimer.open(dispatch_tx.clone());
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let breakers = Arc::new(AllBreakers {
            writer: writer.clone(),
            claimer: claimer.clone(),
        });
        let mut services = Vec::new();
        let _guard = runtime.enter();
        if let Some(t) = &telemetry {
            let source: std::sync::Weak<dyn BreakerSource> = Arc::downgrade(&breakers) as _;
            t.observe(source);
            services.push(tokio::spawn(services::refresh_queue_depths(
                db.clone(),
                t.clone(),
                stop_rx.clone(),
            )));
        }
        services.push(tokio::spawn(services::heartbeat(
            services::Heartbeat {
                db: db.clone(),
                instance_id: instance_id.clone(),
                worker_id: claimer.worker_id.clone(),
                namespaces: config.namespaces.clone(),
                concurrency: config.concurrency,
                slots: claimer.slots.clone(),
            },
            stop_rx.clone(),
        )));
        if !config.transaction_pooling || config.listen_database_url.is_some() {
            services.push(tokio::spawn(listener::listen(
                db.clone(),
                signals.clone(),
                instance_id.clone(),
                config.listen_database_url.clone(),
                stop_rx.clone(),
            )));
        } else {
            tracing::info!(
                poll_interval_ms = config.poll_interval.as_millis() as u64,
                "through a transaction pooler without listen_database_url: no LISTEN, \
                 work from other processes is found by polling"
            );
        }
        if !queues.is_empty() {
            services.push(tokio::spawn(services::release_retries(
                db.clone(),
                writer.clone(),
                signals.clone(),
                telemetry.clone(),
                stop_rx.clone(),
            )));
            services.push(tokio::spawn(services::consume_task_requests(
                db.clone(),
                creator.clone(),
                config.poll_interval,
                stop_rx.clone(),
            )));
            services.push(tokio::spawn(services::refresh_pauses(
                db.clone(),
                claimer.pauses.clone(),
                config.poll_interval,
                stop_rx.clone(),
            )));
            services.push(tokio::spawn(services::requeue_lost_messages(
                db.clone(),
                writer.clone(),
                signals.clone(),
                telemetry.clone(),
                config.requeue_after,
                stop_rx.clone(),
            )));
        }
        let maintenance = Arc::new(maintenance::Maintenance {
            db: db.clone(),
            retention: config.retention.clone(),
            holder: instance_id.clone(),
            telemetry: telemetry.clone(),
        });
        if !queues.is_empty() {
            services.push(tokio::spawn(maintenance.clone().run(stop_rx.clone())));
            let scheduler = scheduler::Scheduler {
                db: db.clone(),
                registry: registry.clone(),
                signals: signals.clone(),
                lock_timeout: config.queue_lock_timeout,
                sender: instance_id.clone(),
                worker_id: claimer.worker_id.clone(),
            };
            services.push(tokio::spawn(scheduler.run(stop_rx.clone())));
        }
        for (namespace, queue) in queues {
            let Some(wake) = signals.wakeup(&namespace) else {
                continue;
            };
            let poller = Poller {
                db: db.clone(),
                writer: writer.clone(),
                claimer: claimer.clone(),
                signals: signals.clone(),
                poll_interval: config.poll_interval,
                namespace,
                queue,
                wake,
                concurrency: config.concurrency,
                out: dispatch_tx.clone(),
                stop: stop_rx.clone(),
            };
            services.push(tokio::spawn(poller.run()));
        }
        drop(dispatch_tx);
        let applier = tokio::spawn(
            applier::Applier {
                db: db.clone(),
                writer: writer.clone(),
                claimer: claimer.clone(),
                signals: signals.clone(),
                telemetry: telemetry.clone(),
                pending: pending.clone(),
                instance_id: instance_id.clone(),
                rx: completion_rx,
            }
            .run(),
        );
        let handle = EngineHandle(Arc::new(HandleParts {
            db,
            creator,
            signals,
            registry,
            lock_timeout: writer.lock_timeout,
            pauses: claimer.pauses.clone(),
            sender: instance_id.clone(),
            worker_id: claimer.worker_id.clone(),
            maintenance,
        }));
        Engine {
            rt: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            handle,
            claimer,
            breakers,
            telemetry,
            pending,
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
        self.handle.clone()
    }

    /// Templates loaded from the configured paths.
    pub fn templates(&self) -> &[Arc<RegisteredTemplate>] {
        &self.templates
    }

    /// False in a child process forked after start: the runtime's threads did not survive.
    pub fn is_current_process(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Started in this process and not shut down.
    pub fn is_running(&self) -> bool {
        self.is_current_process()
            && self
                .runtime
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
    }

    /// Run a future on the engine's runtime; the result arrives on the returned channel, so a
    /// foreign thread can wait for it however it must (e.g. with Ruby's GVL released).
    pub fn spawn_call<T, F>(&self, fut: F) -> crossbeam_channel::Receiver<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        // After shutdown the task is dropped unrun: the receiver then sees the channel closed.
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
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
        if let (Some(t), Some(trace)) = (&self.telemetry, d.slot.trace.as_mut()) {
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
        if let (Some(t), Some(trace)) = (&self.telemetry, slot.trace.as_mut()) {
            t.handed_back(trace, &outcome);
        }
        let trace = slot.trace.take();
        // The handler slot is free before the applier can see the outcome, so the apply that
        // releases this step's children finds it (for a fused claim); and the outcome counts
        // as pending before the applier can count it applied.
        drop(slot);
        self.pending.fetch_add(1, Ordering::Relaxed);
        let step_uuid = ticket.step_uuid;
        self.claimer.finishing_add(step_uuid);
        let sent = match &*self.completion_tx.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send((ticket, outcome, trace)).is_ok(),
            None => false,
        };
        if !sent {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.claimer.finishing_remove([step_uuid]);
        }
        if sent {
            Ok(())
        } else {
            Err(Error::NotStarted(
                "the engine has shut down; the step will be redelivered after its claim expires"
                    .into(),
            ))
        }
    }

    /// The per-queue circuit breakers.
    pub fn queue_breakers(&self) -> Vec<Arc<crate::resilience::CircuitBreaker>> {
        self.breakers.writer.breakers.all()
    }

    /// The per-handler-class breakers (created when a handler's first step is seen).
    pub fn handler_breakers(&self) -> &BreakerRegistry {
        &self.claimer.handler_breakers
    }

    /// The per-queue breakers' registry (to reconfigure them at runtime).
    pub fn queue_breaker_registry(&self) -> &BreakerRegistry {
        &self.breakers.writer.breakers
    }

    /// Memory and queue figures of this engine (for `TaskerCore.memory_stats`).
    pub fn memory_stats(&self) -> MemoryStats {
        MemoryStats {
            string_cache: self.claimer.names.stats(),
            dispatch_queue_depth: self.dispatch_rx.len(),
            completions_pending: self.pending.load(Ordering::Relaxed),
            templates: self.claimer.registry.len(),
        }
    }

    /// Stop claiming new steps. Claimed steps stay in the channel for the executor to finish;
    /// once they are taken, [`Engine::next_step`] reports [`NextStep::Closed`].
    pub fn begin_shutdown(&self) {
        let _ = self.stop_tx.send(true);
        // Nothing is claimed for this process from now on.
        self.claimer.close();
    }

    /// Stop everything: services, then the applier once every handed-back outcome is applied,
    /// then the pool and the runtime. Steps still unfinished are redelivered after their claim
    /// expires. Any thread may call it, while others still hold the engine (their calls then
    /// fail with [`Error::NotStarted`]); a second call returns at once.
    pub fn shutdown(&self, timeout: Duration) {
        self.begin_shutdown();
        let Some(runtime) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
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
        let pool = self.handle.0.db.pool.clone();
        let queue_pool = self.handle.0.db.queue_pool.clone();
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
        if let Some(t) = &self.telemetry {
            t.shutdown();
        }
    }
}

impl Drop for Engine {
    /// An engine dropped without [`Engine::shutdown`] (e.g. one whose start was interrupted)
    /// is shut down here, giving its outcomes 5 s — unless it is dropped on a runtime thread,
    /// where blocking is not allowed (its runtime is then dropped, cancelling its tasks).
    ///
    /// In a child forked after start, the parent's runtime threads do not exist and its
    /// sockets belong to the parent: the runtime, the exporters and the task handles are left
    /// untouched (leaked) instead of being shut down from here.
    fn drop(&mut self) {
        if self.is_current_process() {
            if tokio::runtime::Handle::try_current().is_err() {
                self.shutdown(Duration::from_secs(5));
            }
            return;
        }
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        std::mem::forget(runtime);
        std::mem::forget(self.telemetry.take());
        std::mem::forget(std::mem::take(
            self.services.get_mut().unwrap_or_else(|e| e.into_inner()),
        ));
        std::mem::forget(
            self.applier
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

/// What [`Engine::boot`] made, for [`Engine::from_parts`] to start.
struct Boot {
    db: Arc<Db>,
    registry: Arc<Registry>,
    writer: Arc<QueueWriter>,
    claimer: Arc<Claimer>,
    signals: Arc<Signals>,
    creator: Arc<Creator>,
    telemetry: Option<Arc<Telemetry>>,
    instance_id: Arc<str>,
    registered: Vec<Arc<RegisteredTemplate>>,
    queues: Vec<(String, QueueName)>,
    config: EngineConfig,
}

/// Every breaker of the engine, for the telemetry's breaker gauges.
struct AllBreakers {
    writer: Arc<QueueWriter>,
    claimer: Arc<Claimer>,
}

impl BreakerSource for AllBreakers {
    fn breakers(&self) -> Vec<(&'static str, Arc<crate::resilience::CircuitBreaker>)> {
        let queues = self.writer.breakers.all().into_iter().map(|b| ("queue", b));
        let handlers = self
            .claimer
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

/// Run `work` on a short-lived pool of its own, outside any engine.
fn with_own_pool<T, F, Fut>(database_url: &str, work: F) -> Result<T>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Configuration(format!("cannot start a tokio runtime: {e}")))?;
    rt.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(database_url)
            .await?;
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
    .map_err(through_pooler)
}

/// A migration that failed because its connection goes through a pooler in transaction mode
/// (named prepared statements, a session lock) says so.
fn through_pooler(e: Error) -> Error {
    let text = e.to_string();
    if text.contains("prepared statement \"sqlx_s_") {
        return Error::Migration(format!(
            "{text} — this URL seems to go through a pooler in transaction mode (PgBouncer \
             pool_mode = transaction), which migrations cannot use (they hold a session lock and \
             prepare statements): migrate on a direct connection to PostgreSQL"
        ));
    }
    e
}

/// Revert the migrations newer than `target` on a database (0: all of them).
pub fn rollback(database_url: &str, target: i64) -> Result<()> {
    with_own_pool(database_url, |pool| async move {
        crate::store::migrate::rollback(&pool, target).await
    })
    .map_err(through_pooler)
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

/// Store the schedules of the loaded templates and of the configuration (each checked, its
/// template registered), for every process to run.
async fn declare_schedules(
    pool: &crate::store::DbPool,
    registry: &Registry,
    registered: &[Arc<RegisteredTemplate>],
    configured: &[crate::schedule::ScheduleDoc],
) -> Result<()> {
    use store::schedules::{declare, Source};
    for t in registered {
        for s in &t.template.schedules {
            declare(pool, s, Source::Template).await?;
        }
    }
    for doc in configured {
        let s = doc
            .compile(None)
            .map_err(|m| Error::Configuration(format!("schedules: {m}")))?;
        if let Err(e) = registry
            .lookup(pool, &s.namespace, &s.task, &s.version)
            .await
        {
            return Err(Error::Configuration(format!(
                "schedules: schedule {:?}: {e}",
                s.name
            )));
        }
        declare(pool, &s, Source::Config).await?;
    }
    Ok(())
}

fn default_worker_id() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// This machine's host name ("localhost" when it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}
