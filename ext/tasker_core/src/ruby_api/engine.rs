//! `TaskerCore::Native::Engine`: one started engine, owned by the Ruby facade
//! (`TaskerCore.start` keeps it; `TaskerCore.stop` shuts it down). Not a process global: a
//! child forked after start drops the parent's object (the engine leaks what belongs to the
//! parent's threads, see `Drop for Engine`) and starts its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnus::{
    function, method, prelude::*, value::ReprValue, Error, IntoValue, RArray, RHash, RModule, Ruby,
    Value,
};
use tasker_core::engine::TaskWait;
use tasker_core::orchestration::Intervention;
use tasker_core::{Engine, EngineConfig, TaskRequest};
use uuid::Uuid;

use crate::args;
use crate::convert;
use crate::errors::{error, guarded, internal, to_ruby};
use crate::nogvl::{self, Waited};
use crate::step_event::RbStepEvent;
use tasker_core::schedule::ScheduleDoc;

/// A core read model as a Ruby value (through its JSON form), or InternalError naming `what`.
macro_rules! ruby_json {
    ($ruby:expr, $what:expr, $value:expr) => {
        serde_json::to_value($value)
            .map_err(|e| {
                error(
                    $ruby,
                    "InternalError",
                    format!("cannot encode {}: {e}", $what),
                )
            })
            .and_then(|json| convert::to_ruby($ruby, &json))
    };
}

#[magnus::wrap(class = "TaskerCore::Native::Engine", free_immediately, size)]
pub struct RbEngine(Arc<Engine>);

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Engine", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("start", function!(start, 1))?;
    class.define_method("templates", method!(templates, 0))?;
    class.define_method("running?", method!(is_running, 0))?;
    class.define_method("memory_stats", method!(memory_stats, 0))?;
    class.define_method("health", method!(health, 0))?;
    class.define_method("begin_shutdown", method!(begin_shutdown, 0))?;
    class.define_method("shutdown", method!(shutdown, 1))?;
    class.define_method("next_step", method!(next_step, 1))?;
    class.define_method("create_task", method!(create_task, 1))?;
    class.define_method("create_tasks", method!(create_tasks, 1))?;
    class.define_method("create_call", method!(create_call, 1))?;
    class.define_method("find_task", method!(find_task, 1))?;
    class.define_method("find_tasks", method!(find_tasks, 1))?;
    class.define_method("request_task", method!(request_task, 1))?;
    class.define_method("wait_for", method!(wait_for, 2))?;
    class.define_method("cancel_task", method!(cancel_task, 2))?;
    class.define_method("retry_step", method!(retry_step, 3))?;
    class.define_method("resolve_step_manually", method!(resolve_step_manually, 4))?;
    class.define_method("configure_breaker", method!(configure_breaker, 3))?;
    class.define_method("dashboard_overview", method!(dashboard_overview, 0))?;
    class.define_method("list_tasks", method!(list_tasks, 3))?;
    class.define_method("dashboard_queues", method!(dashboard_queues, 0))?;
    class.define_method("namespaces", method!(namespaces, 0))?;
    class.define_method("processes", method!(processes, 0))?;
    class.define_method("pause", method!(pause, 3))?;
    class.define_method("resume", method!(resume, 2))?;
    class.define_method("paused", method!(paused, 0))?;
    class.define_method("dead_letters", method!(dead_letters, 3))?;
    class.define_method("breaker_metrics", method!(breaker_metrics, 1))?;
    class.define_method("replay_dead_letter", method!(replay_dead_letter, 2))?;
    class.define_method("schedules", method!(schedules, 0))?;
    class.define_method("schedule_fires", method!(schedule_fires, 2))?;
    class.define_method("create_schedule", method!(create_schedule, 1))?;
    class.define_method("set_schedule_paused", method!(set_schedule_paused, 2))?;
    class.define_method("delete_schedule", method!(delete_schedule, 1))?;
    class.define_method("trigger_schedule", method!(trigger_schedule, 1))?;
    class.define_method("acquire_rate", method!(acquire_rate, 3))?;
    class.define_method("register_template", method!(register_template, 1))?;
    class.define_method("run_maintenance", method!(run_maintenance, 0))?;
    Ok(())
}

impl RbEngine {
    /// The engine, while it runs in this process.
    fn engine(&self, ruby: &Ruby) -> Result<&Arc<Engine>, Error> {
        if !self.0.is_current_process() {
            return Err(error(
                ruby,
                "NotStartedError",
                "TaskerCore was started in a parent process; call TaskerCore.start in this process",
            ));
        }
        if !self.0.is_running() {
            return Err(error(
                ruby,
                "NotStartedError",
                "TaskerCore is not started; call TaskerCore.start first",
            ));
        }
        Ok(&self.0)
    }
}

/// A setting of the configuration Hash, converted; a wrong type is a ConfigurationError.
fn setting<T: magnus::TryConvert>(ruby: &Ruby, config: RHash, key: &str) -> Result<T, Error> {
    args::fetch(ruby, "ConfigurationError", config, key)
}

/// An optional setting in seconds (nil: None).
fn optional_seconds(
    ruby: &Ruby,
    config: RHash,
    key: &str,
    what: &str,
) -> Result<Option<Duration>, Error> {
    let value = args::get(config, key);
    if value.is_nil() {
        return Ok(None);
    }
    args::finite_seconds(ruby, "ConfigurationError", what, value).map(Some)
}

/// The `retention` Hash: seconds (nil: keep forever; interval nil: on demand only), batch size.
fn retention(ruby: &Ruby, config: RHash) -> Result<tasker_core::engine::RetentionConfig, Error> {
    let r: RHash = setting(ruby, config, "retention")?;
    Ok(tasker_core::engine::RetentionConfig {
        completed: optional_seconds(ruby, r, "completed_seconds", "retention completed")?,
        errored: optional_seconds(ruby, r, "errored_seconds", "retention errored")?,
        archive: optional_seconds(ruby, r, "archive_seconds", "retention archive")?,
        interval: optional_seconds(ruby, r, "interval_seconds", "retention interval")?,
        batch_size: setting(ruby, r, "batch_size")?,
    })
}

/// A setting in seconds, within `tasker_core::limits::MAX_SECONDS`.
fn seconds_setting(ruby: &Ruby, config: RHash, key: &str, what: &str) -> Result<Duration, Error> {
    args::finite_seconds(ruby, "ConfigurationError", what, args::get(config, key))
}

guarded! {
    /// Connect, register the templates and start the services (GVL released; an interrupt
    /// raises here, and the engine, once started in the background, is dropped there, which
    /// shuts it down).
    fn start(ruby: &Ruby, config: RHash) -> Result<RbEngine, Error> {
        let defaults = EngineConfig::default();
        let cfg = EngineConfig {
            database_url: crate::native::url(ruby, args::get(config, "database_url"))?,
            namespaces: setting(ruby, config, "namespaces")?,
            template_paths: setting::<Vec<String>>(ruby, config, "template_paths")?
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            concurrency: setting(ruby, config, "concurrency")?,
            pool_size: setting(ruby, config, "pool_size")?,
            poll_interval: Duration::from_millis(setting(ruby, config, "poll_interval_ms")?),
            worker_id: args::optional_text(ruby, "ConfigurationError", "worker_id", args::get(config, "worker_id"))?,
            claim_grace: Duration::from_secs(setting(ruby, config, "claim_grace_seconds")?),
            string_cache_capacity: setting(ruby, config, "string_cache_capacity")?,
            requeue_after: seconds_setting(ruby, config, "requeue_after_seconds", "requeue_after")?,
            queue_lock_timeout: seconds_setting(ruby, config, "queue_lock_timeout_seconds", "queue_lock_timeout")?,
            queue_breaker: crate::circuit_breakers::parse_config(
                ruby,
                "circuit_breakers pgmq",
                setting(ruby, config, "queue_circuit_breaker")?,
                defaults.queue_breaker,
            )?,
            handler_breaker: crate::circuit_breakers::parse_config(
                ruby,
                "circuit_breakers handlers",
                setting(ruby, config, "handler_circuit_breaker")?,
                defaults.handler_breaker,
            )?,
            telemetry: None,
            schedules: schedule_docs(ruby, "ConfigurationError", "schedules", args::get(config, "schedules"))?,
            template_texts: setting::<Option<Vec<String>>>(ruby, config, "template_texts")?.unwrap_or_default(),
            retention: retention(ruby, config)?,
            transaction_pooling: setting(ruby, config, "transaction_pooling")?,
            listen_database_url: args::optional_text(
                ruby,
                "ConfigurationError",
                "listen_database_url",
                args::get(config, "listen_database_url"),
            )?,
        };
        let telemetry: Option<RHash> = setting(ruby, config, "telemetry")?;
        let cfg = EngineConfig {
            telemetry: telemetry
                .map(|t| -> Result<_, Error> {
                    Ok(tasker_core::telemetry::TelemetryConfig {
                        endpoint: args::optional_text(ruby, "ConfigurationError", "telemetry endpoint", args::get(t, "endpoint"))?,
                        service_name: args::text(ruby, "ConfigurationError", "telemetry service_name", args::get(t, "service_name"))?,
                        export_interval: seconds_setting(ruby, t, "export_interval_seconds", "telemetry export_interval")?,
                        sampling_ratio: setting(ruby, t, "sampling_ratio")?,
                    })
                })
                .transpose()?,
            ..cfg
        };
        let namespace_breakers: RHash = setting(ruby, config, "namespace_circuit_breakers")?;
        let handler_class_breakers: RHash = setting(ruby, config, "handler_class_circuit_breakers")?;
        let engine = nogvl::run(ruby, move || Engine::start(cfg))?
            .map_err(|p| internal(ruby, p))?
            .map_err(|e| to_ruby(ruby, e))?;
        let engine = Arc::new(engine);
        if let Err(e) = crate::circuit_breakers::configure_engine_breakers(
            ruby,
            &engine,
            namespace_breakers,
            handler_class_breakers,
        ) {
            let stopping = engine.clone();
            let _ = nogvl::run(ruby, move || stopping.shutdown(Duration::from_secs(5)));
            return Err(e);
        }
        Ok(RbEngine(engine))
    }

    /// `[{namespace, name, version, handlers, steps}, ...]` of the templates loaded at start.
    fn templates(ruby: &Ruby, rb_self: &RbEngine) -> Result<RArray, Error> {
        crate::native::template_summaries(ruby, rb_self.0.templates().iter().map(|r| &r.template))
    }

    fn is_running(ruby: &Ruby, rb_self: &RbEngine) -> Result<bool, Error> {
        let _ = ruby;
        Ok(rb_self.0.is_running())
    }

    fn memory_stats(ruby: &Ruby, rb_self: &RbEngine) -> Result<Option<RHash>, Error> {
        let Ok(engine) = rb_self.engine(ruby) else {
            return Ok(None);
        };
        let m = engine.memory_stats();
        let cache = ruby.hash_new();
        cache.aset("size", m.string_cache.size)?;
        cache.aset("capacity", m.string_cache.capacity)?;
        cache.aset("hits", m.string_cache.hits)?;
        cache.aset("misses", m.string_cache.misses)?;
        cache.aset("evictions", m.string_cache.evictions)?;
        let out = ruby.hash_new();
        out.aset("string_cache", cache)?;
        out.aset("dispatch_queue_depth", m.dispatch_queue_depth)?;
        out.aset("completions_pending", m.completions_pending)?;
        out.aset("templates", m.templates)?;
        Ok(Some(out))
    }

    /// Database reachability, the connection pool and queue depths; nil when the engine is
    /// not running.
    fn health(ruby: &Ruby, rb_self: &RbEngine) -> Result<Option<RHash>, Error> {
        let Ok(engine) = rb_self.engine(ruby) else {
            return Ok(None);
        };
        let h = engine.handle();
        let report = call(ruby, engine, async move { Ok(h.health().await) })?;
        let db = ruby.hash_new();
        db.aset("reachable", report.database_error.is_none())?;
        db.aset("latency_ms", report.database_latency.as_secs_f64() * 1000.0)?;
        db.aset("error", report.database_error)?;
        let pool = ruby.hash_new();
        pool.aset("size", report.pool.size)?;
        pool.aset("max", report.pool.max)?;
        pool.aset("idle", report.pool.idle)?;
        pool.aset("recent_failures", report.pool.recent_failures)?;
        pool.aset("last_failure", report.pool.last_failure)?;
        db.aset("pool", pool)?;
        let queues = ruby.hash_new();
        for q in report.queues {
            let e = ruby.hash_new();
            e.aset("depth", q.depth)?;
            e.aset("oldest_message_age_seconds", q.oldest_message_age_seconds)?;
            queues.aset(q.namespace, e)?;
        }
        let breakers = crate::circuit_breakers::breakers_hash(ruby, &engine.queue_breakers())?;
        let handler_breakers =
            crate::circuit_breakers::breakers_hash(ruby, &engine.handler_breakers().all())?;
        let out = ruby.hash_new();
        out.aset("database", db)?;
        out.aset("queues", queues)?;
        out.aset("queue_breakers", breakers)?;
        out.aset("handler_breakers", handler_breakers)?;
        Ok(Some(out))
    }

    fn begin_shutdown(ruby: &Ruby, rb_self: &RbEngine) -> Result<(), Error> {
        if let Ok(engine) = rb_self.engine(ruby) {
            engine.begin_shutdown();
        }
        Ok(())
    }

    /// Stop the engine: wait for handed-back results to be applied, close the pool.
    /// `timeout`: seconds, or `Float::INFINITY` for no limit. False when it was not running.
    fn shutdown(ruby: &Ruby, rb_self: &RbEngine, timeout: Value) -> Result<bool, Error> {
        let timeout = args::seconds(ruby, "ValidationError", "stop timeout", timeout, true)?
            .unwrap_or(Duration::from_secs_f64(tasker_core::limits::MAX_SECONDS));
        let Ok(engine) = rb_self.engine(ruby) else {
            return Ok(false);
        };
        let engine = engine.clone();
        nogvl::run(ruby, move || engine.shutdown(timeout))?.map_err(|p| internal(ruby, p))?;
        Ok(true)
    }

    /// Wait up to `timeout` seconds for a step. Returns a StepEvent, nil on timeout, or false
    /// once the engine is shutting down and nothing is left to run.
    fn next_step(ruby: &Ruby, rb_self: &RbEngine, timeout: Value) -> Result<Value, Error> {
        let timeout = args::seconds(ruby, "ValidationError", "next_step timeout", timeout, true)?;
        let Ok(engine) = rb_self.engine(ruby) else {
            return Ok(ruby.qfalse().as_value());
        };
        let event = |dispatch| RbStepEvent::new(engine.handed_out(dispatch), engine.clone());
        // A step already waiting is taken without releasing the GVL (no park, no wake-up).
        if let Ok(dispatch) = engine.dispatch_receiver().try_recv() {
            return Ok(event(dispatch).into_value_with(ruby));
        }
        match nogvl::recv(engine.dispatch_receiver(), timeout) {
            Waited::Value(dispatch) => Ok(event(dispatch).into_value_with(ruby)),
            Waited::TimedOut => Ok(ruby.qnil().as_value()),
            Waited::Closed => Ok(ruby.qfalse().as_value()),
            Waited::Interrupted => {
                ruby.thread_check_ints()?;
                Ok(ruby.qnil().as_value())
            }
            Waited::Panicked(p) => Err(internal(ruby, p)),
        }
    }

    /// Change, at runtime, the breaker of a namespace queue (`kind` "namespace") or of a
    /// handler class (`kind` "handler").
    fn configure_breaker(ruby: &Ruby, rb_self: &RbEngine, kind: String, name: Value, settings: RHash) -> Result<(), Error> {
        let engine = rb_self.engine(ruby)?;
        let (namespaces, handlers) = (ruby.hash_new(), ruby.hash_new());
        match kind.as_str() {
            "namespace" => namespaces.aset(name, settings)?,
            "handler" => handlers.aset(name, settings)?,
            other => {
                return Err(error(ruby, "ConfigurationError", format!("unknown breaker kind {other:?}")))
            }
        }
        crate::circuit_breakers::configure_engine_breakers(ruby, engine, namespaces, handlers)
    }

    /// The engine's breakers of one kind ("queue" or "handler").
    fn breaker_metrics(ruby: &Ruby, rb_self: &RbEngine, kind: String) -> Result<RHash, Error> {
        let engine = rb_self.engine(ruby)?;
        match kind.as_str() {
            "queue" => crate::circuit_breakers::breakers_hash(ruby, &engine.queue_breakers()),
            "handler" => crate::circuit_breakers::breakers_hash(ruby, &engine.handler_breakers().all()),
            other => Err(error(ruby, "ConfigurationError", format!("unknown breaker kind {other:?}"))),
        }
    }
}

/// Run a core future on the engine and wait for it with the GVL released. An interrupt raises
/// in this thread; the operation itself still completes in the background.
fn call<T, F>(ruby: &Ruby, engine: &Engine, fut: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: std::future::Future<Output = tasker_core::Result<T>> + Send + 'static,
{
    let rx = engine.spawn_call(fut);
    loop {
        match nogvl::recv(&rx, None) {
            Waited::Value(r) => return r.map_err(|e| to_ruby(ruby, e)),
            Waited::Interrupted => ruby.thread_check_ints()?,
            Waited::Panicked(p) => return Err(internal(ruby, p)),
            Waited::TimedOut | Waited::Closed => {
                return Err(error(
                    ruby,
                    "NotStartedError",
                    "the engine stopped during the call",
                ))
            }
        }
    }
}

fn parse_uuid(ruby: &Ruby, what: &str, value: Value) -> Result<Uuid, Error> {
    let s = args::text(ruby, "ValidationError", what, value)?;
    Uuid::parse_str(&s).map_err(|_| {
        let shown: String = s.chars().take(64).collect();
        error(
            ruby,
            "ValidationError",
            format!("{what} is not a UUID: {shown:?}"),
        )
    })
}

fn optional_uuid(ruby: &Ruby, args: RHash, key: &str) -> Result<Option<Uuid>, Error> {
    let v = args::get(args, key);
    if v.is_nil() {
        return Ok(None);
    }
    parse_uuid(ruby, key, v).map(Some)
}

/// A required text argument of a call's Hash.
fn text_arg(ruby: &Ruby, args: RHash, key: &str) -> Result<String, Error> {
    args::text(ruby, "ValidationError", key, args::get(args, key))
}

/// An optional text argument of a call's Hash.
fn optional_text_arg(ruby: &Ruby, args: RHash, key: &str) -> Result<Option<String>, Error> {
    args::optional_text(ruby, "ValidationError", key, args::get(args, key))
}

/// A task request from its argument Hash (checked text, UUIDs, the context as JSON).
fn task_request(ruby: &Ruby, args: RHash) -> Result<TaskRequest, Error> {
    Ok(TaskRequest {
        namespace: text_arg(ruby, args, "namespace")?,
        name: text_arg(ruby, args, "name")?,
        version: text_arg(ruby, args, "version")?,
        context: convert::to_json(ruby, args::get(args, "context"), "context")?,
        correlation_id: optional_uuid(ruby, args, "correlation_id")?,
        parent_correlation_id: optional_uuid(ruby, args, "parent_correlation_id")?,
        idempotency_key: optional_text_arg(ruby, args, "idempotency_key")?,
        priority: args::integer(
            ruby,
            "ValidationError",
            "priority",
            args::get(args, "priority"),
            -100,
            100,
        )? as i16,
        traceparent: optional_text_arg(ruby, args, "traceparent")?,
        run_at: optional_text_arg(ruby, args, "run_at")?
            .map(|t| tasker_core::limits::parse_time("run_at", &t))
            .transpose()
            .map_err(|e| to_ruby(ruby, e))?,
        flow: {
            let flow = args::get(args, "flow");
            if flow.is_nil() {
                None
            } else {
                Some(convert::to_json(ruby, flow, "flow")?)
            }
        },
    })
}

fn created_hash(ruby: &Ruby, created: &tasker_core::CreatedTask) -> Result<RHash, Error> {
    let out = ruby.hash_new();
    out.aset("uuid", created.task_uuid.to_string())?;
    out.aset("correlation_id", created.correlation_id.to_string())?;
    out.aset(
        "parent_correlation_id",
        created.parent_correlation_id.map(|u| u.to_string()),
    )?;
    out.aset("status", created.status.as_str())?;
    out.aset("created", created.created)?;
    Ok(out)
}

/// Most tasks one `create_tasks` call takes.
const MAX_CREATE_BATCH: usize = 10_000;

guarded! {
    fn create_task(ruby: &Ruby, rb_self: &RbEngine, args: RHash) -> Result<RHash, Error> {
        let engine = rb_self.engine(ruby)?;
        let req = task_request(ruby, args)?;
        let h = engine.handle();
        let created = call(ruby, engine, async move { h.create_task(req).await })?;
        created_hash(ruby, &created)
    }

    /// Several tasks in one transaction and one round trip; all or none are written.
    fn create_tasks(ruby: &Ruby, rb_self: &RbEngine, list: RArray) -> Result<RArray, Error> {
        let engine = rb_self.engine(ruby)?;
        let reqs = task_requests(ruby, list)?;
        let out = ruby.ary_new_capa(reqs.len());
        if reqs.is_empty() {
            return Ok(out);
        }
        let h = engine.handle();
        let created = call(ruby, engine, async move { h.create_tasks(reqs).await })?;
        for c in &created {
            out.push(created_hash(ruby, c)?)?;
        }
        Ok(out)
    }

    /// The JSON text of `tasker.create_tasks_json`'s argument for these task requests, to run
    /// on the application's own connection (inside its transaction).
    fn create_call(ruby: &Ruby, rb_self: &RbEngine, list: RArray) -> Result<String, Error> {
        let engine = rb_self.engine(ruby)?;
        let reqs = task_requests(ruby, list)?;
        let h = engine.handle();
        let doc = call(ruby, engine, async move { h.create_call(reqs).await })?;
        serde_json::to_string(&doc).map_err(|e| error(ruby, "InternalError", format!("cannot encode the tasks: {e}")))
    }

    fn find_task(ruby: &Ruby, rb_self: &RbEngine, uuid: Value) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let h = engine.handle();
        let view = call(ruby, engine, async move { h.find_task(task_uuid).await })?;
        match view {
            Some(v) => {
                ruby_json!(ruby, "task", &v)
            }
            None => Ok(ruby.qnil().as_value()),
        }
    }

    fn request_task(ruby: &Ruby, rb_self: &RbEngine, args: RHash) -> Result<i64, Error> {
        let engine = rb_self.engine(ruby)?;
        let mut request = convert::to_json(ruby, args.as_value(), "request")?;
        if let Some(map) = request.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        let h = engine.handle();
        call(ruby, engine, async move { h.request_task(request).await })
    }

    fn find_tasks(ruby: &Ruby, rb_self: &RbEngine, args: RHash) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let correlation_id = optional_uuid(ruby, args, "correlation_id")?;
        let parent_correlation_id = optional_uuid(ruby, args, "parent_correlation_id")?;
        let limit = args::integer(
            ruby,
            "ValidationError",
            "limit",
            args::get(args, "limit"),
            1,
            tasker_core::limits::MAX_LIST_LIMIT,
        )?;
        let h = engine.handle();
        let tasks = call(ruby, engine, async move {
            h.find_tasks(correlation_id, parent_correlation_id, limit)
                .await
        })?;
        ruby_json!(ruby, "tasks", &tasks)
    }

    /// Block until the task is terminal and return its status; raise TimeoutError after
    /// `timeout` seconds (`Float::INFINITY`: no limit). The waiting is the core's
    /// (`EngineHandle::wait_for`), in slices of at most a second with the GVL released, so that
    /// an interrupt (`Thread#raise`, `Timeout`) ends it within one.
    fn wait_for(ruby: &Ruby, rb_self: &RbEngine, uuid: Value, timeout: Value) -> Result<String, Error> {
        let limit = args::seconds(ruby, "ValidationError", "wait_for timeout", timeout, true)?;
        let engine = rb_self.engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(Duration::from_secs(1), |l| l.min(Duration::from_secs(1)));
            let h = engine.handle();
            match call(ruby, engine, async move { h.wait_for(task_uuid, slice).await })? {
                TaskWait::Finished(state) => return Ok(state.as_str().to_owned()),
                TaskWait::Running(state) if left.is_some_and(|l| l <= slice) => {
                    return Err(error(
                        ruby,
                        "TimeoutError",
                        format!(
                            "task {task_uuid} is still {state} after {}s",
                            limit.unwrap_or_default().as_secs_f64()
                        ),
                    ))
                }
                TaskWait::Running(_) => {}
            }
        }
    }
}

fn intervention(ruby: &Ruby, who: RHash) -> Result<Intervention, Error> {
    Ok(Intervention {
        actor: optional_text_arg(ruby, who, "actor")?,
        reason: optional_text_arg(ruby, who, "reason")?,
    })
}

fn step_name(ruby: &Ruby, step: Value) -> Result<String, Error> {
    args::text(ruby, "ValidationError", "step name", step)
}

guarded! {
    fn cancel_task(ruby: &Ruby, rb_self: &RbEngine, uuid: Value, who: RHash) -> Result<String, Error> {
        let engine = rb_self.engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let who = intervention(ruby, who)?;
        let h = engine.handle();
        let state = call(ruby, engine, async move { h.cancel_task(task_uuid, who).await })?;
        Ok(state.as_str().to_owned())
    }

    fn retry_step(ruby: &Ruby, rb_self: &RbEngine, uuid: Value, step: Value, who: RHash) -> Result<String, Error> {
        let engine = rb_self.engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let step = step_name(ruby, step)?;
        let who = intervention(ruby, who)?;
        let h = engine.handle();
        let state = call(ruby, engine, async move {
            h.retry_step(task_uuid, step, who).await
        })?;
        Ok(state.as_str().to_owned())
    }

    fn resolve_step_manually(
        ruby: &Ruby,
        rb_self: &RbEngine,
        uuid: Value,
        step: Value,
        result: Value,
        who: RHash,
    ) -> Result<String, Error> {
        let engine = rb_self.engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let step = step_name(ruby, step)?;
        let result = convert::to_json(ruby, result, "result")?;
        let who = intervention(ruby, who)?;
        let h = engine.handle();
        let state = call(ruby, engine, async move {
            h.resolve_step_manually(task_uuid, step, result, who).await
        })?;
        Ok(state.as_str().to_owned())
    }
}

/// Queue figures as JSON.
fn queues_json(queues: &[tasker_core::engine::QueueHealth]) -> serde_json::Value {
    queues
        .iter()
        .map(|q| {
            serde_json::json!({
                "namespace": q.namespace, "depth": q.depth,
                "oldest_message_age_seconds": q.oldest_message_age_seconds,
            })
        })
        .collect()
}

/// A dashboard task filter from its Hash (every key optional).
fn task_filter(
    ruby: &Ruby,
    args: RHash,
) -> Result<tasker_core::store::dashboard::TaskFilter, Error> {
    let status = optional_text_arg(ruby, args, "status")?;
    if let Some(s) = &status {
        s.parse::<tasker_core::state::TaskState>()
            .map_err(|e| to_ruby(ruby, e))?;
    }
    let context = args::get(args, "context");
    let time = |key: &str| -> Result<_, Error> {
        optional_text_arg(ruby, args, key)?
            .map(|t| tasker_core::limits::parse_time(key, &t))
            .transpose()
            .map_err(|e| to_ruby(ruby, e))
    };
    Ok(tasker_core::store::dashboard::TaskFilter {
        status,
        namespace: optional_text_arg(ruby, args, "namespace")?,
        name: optional_text_arg(ruby, args, "name")?,
        version: optional_text_arg(ruby, args, "version")?,
        created_from: time("created_from")?,
        created_to: time("created_to")?,
        correlation_id: optional_uuid(ruby, args, "correlation_id")?,
        idempotency_key: optional_text_arg(ruby, args, "idempotency_key")?,
        task_uuid: optional_uuid(ruby, args, "task_uuid")?,
        context: if context.is_nil() {
            None
        } else {
            Some(convert::to_json(ruby, context, "context filter")?)
        },
    })
}

guarded! {
    /// The dashboard's overview: `{"tasks" => counts, "steps" => counts, "throughput" =>
    /// [{minute, completed, failed}] (the last hour), "namespaces", "queues" => [{namespace,
    /// depth, oldest_message_age_seconds}]}`; counts are `{"exact", "total", "states" =>
    /// [{state, count}]}`.
    fn dashboard_overview(ruby: &Ruby, rb_self: &RbEngine) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let h = engine.handle();
        let (overview, queues) = call(ruby, engine, async move { h.dashboard_overview().await })?;
        let mut json = serde_json::to_value(&overview)
            .map_err(|e| error(ruby, "InternalError", format!("cannot encode the overview: {e}")))?;
        json["queues"] = queues_json(&queues);
        convert::to_ruby(ruby, &json)
    }

    /// Every registered namespace, by name.
    fn namespaces(ruby: &Ruby, rb_self: &RbEngine) -> Result<Vec<String>, Error> {
        let engine = rb_self.engine(ruby)?;
        let h = engine.handle();
        call(ruby, engine, async move { h.namespaces().await })
    }

    /// `{"namespaces" => [...], "queues" => [{namespace, depth, oldest_message_age_seconds}]}`.
    fn dashboard_queues(ruby: &Ruby, rb_self: &RbEngine) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let h = engine.handle();
        let (namespaces, queues) = call(ruby, engine, async move { h.dashboard_queues().await })?;
        convert::to_ruby(ruby, &serde_json::json!({ "namespaces": namespaces, "queues": queues_json(&queues) }))
    }

    /// One page of tasks, newest first: `{"tasks" => [...], "next" => cursor or nil}`.
    fn list_tasks(ruby: &Ruby, rb_self: &RbEngine, filter: RHash, cursor: Value, limit: Value) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let filter = task_filter(ruby, filter)?;
        let cursor = args::optional_text(ruby, "ValidationError", "cursor", cursor)?;
        let limit = args::integer(ruby, "ValidationError", "limit", limit, 1, tasker_core::store::dashboard::MAX_PAGE)?;
        let h = engine.handle();
        let page = call(ruby, engine, async move { h.list_tasks(filter, cursor, limit).await })?;
        ruby_json!(ruby, "tasks", &page)
    }
}

guarded! {
    /// Every engine's heartbeat: `[{instance_id, worker_id, hostname, pid, namespaces,
    /// concurrency, busy, started_at, heartbeat_at, silent_seconds}]`.
    fn processes(ruby: &Ruby, rb_self: &RbEngine) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let h = engine.handle();
        let rows = call(ruby, engine, async move { h.processes().await })?;
        ruby_json!(ruby, "processes", &rows)
    }

    /// Dead letters of `namespace`'s queue (nil: the task requests queue), newest first, before
    /// message id `before`: `{"queue", "letters" => [...], "next"}`.
    fn dead_letters(ruby: &Ruby, rb_self: &RbEngine, namespace: Value, before: Value, limit: Value) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let namespace = args::optional_text(ruby, "ValidationError", "namespace", namespace)?;
        let before = if before.is_nil() {
            None
        } else {
            Some(args::integer(ruby, "ValidationError", "before", before, 1, i64::MAX)?)
        };
        let limit = args::integer(ruby, "ValidationError", "limit", limit, 1, tasker_core::store::dashboard::MAX_PAGE)?;
        let h = engine.handle();
        let page = call(ruby, engine, async move { h.dead_letters(namespace, before, limit).await })?;
        ruby_json!(ruby, "dead letters", &page)
    }
}

fn namespace_arg(ruby: &Ruby, namespace: Value) -> Result<String, Error> {
    let namespace = args::text(ruby, "ValidationError", "namespace", namespace)?;
    tasker_core::messaging::queue::validate_namespace(&namespace).map_err(|e| to_ruby(ruby, e))?;
    Ok(namespace)
}

/// Schedules given as an Array of Hashes (or one Hash for `one`), as `ScheduleDoc`s.
fn schedule_docs(
    ruby: &Ruby,
    class: &str,
    what: &str,
    value: Value,
) -> Result<Vec<ScheduleDoc>, Error> {
    if value.is_nil() {
        return Ok(Vec::new());
    }
    let json = convert::to_json(ruby, value, what)?;
    let list = match json {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, item)| {
            let label = item
                .get("name")
                .and_then(|n| n.as_str())
                .map(|n| format!("schedule {n:?}"))
                .unwrap_or_else(|| format!("schedule #{}", i + 1));
            serde_json::from_value::<ScheduleDoc>(item)
                .map_err(|e| error(ruby, class, format!("{what}: {label}: {e}")))
        })
        .collect()
}

/// The task requests of an Array of Hashes (create_tasks' argument), at most MAX_CREATE_BATCH.
fn task_requests(ruby: &Ruby, list: RArray) -> Result<Vec<TaskRequest>, Error> {
    if list.len() > MAX_CREATE_BATCH {
        return Err(error(
            ruby,
            "ValidationError",
            format!(
                "create_tasks takes at most {MAX_CREATE_BATCH} tasks at once, got {}",
                list.len()
            ),
        ));
    }
    let mut reqs = Vec::with_capacity(list.len());
    for (i, item) in list.into_iter().enumerate() {
        let args = RHash::from_value(item).ok_or_else(|| {
            error(
                ruby,
                "ValidationError",
                format!("create_tasks: item {i} is not a Hash"),
            )
        })?;
        reqs.push(task_request(ruby, args).map_err(|e| {
            error(
                ruby,
                "ValidationError",
                format!("create_tasks: item {i}: {e}"),
            )
        })?);
    }
    Ok(reqs)
}

fn schedule_name(ruby: &Ruby, name: Value) -> Result<String, Error> {
    let name = args::text(ruby, "ValidationError", "schedule name", name)?;
    tasker_core::schedule::check_name(&name).map_err(|m| error(ruby, "ValidationError", m))?;
    Ok(name)
}

guarded! {
    /// Send a dead letter of `namespace`'s queue (nil: the task requests queue) back to it;
    /// returns the new message's id.
    fn replay_dead_letter(ruby: &Ruby, rb_self: &RbEngine, namespace: Value, msg_id: Value) -> Result<i64, Error> {
        let engine = rb_self.engine(ruby)?;
        let namespace = args::optional_text(ruby, "ValidationError", "namespace", namespace)?;
        let msg_id = args::integer(ruby, "ValidationError", "id", msg_id, 1, i64::MAX)?;
        let h = engine.handle();
        call(ruby, engine, async move { h.replay_dead_letter(namespace, msg_id).await })
    }

    /// Run retention now: `{tasks, steps, transitions, archived, batches}` deleted.
    fn run_maintenance(ruby: &Ruby, rb_self: &RbEngine) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let h = engine.handle();
        let report = call(ruby, engine, async move { h.run_maintenance().await })?;
        ruby_json!(ruby, "maintenance report", &report)
    }

    /// `[{name, namespace, task_name, version, cron, timezone, context, missed, source, paused, last_tick, updated_at}]`.
    fn schedules(ruby: &Ruby, rb_self: &RbEngine) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let h = engine.handle();
        let rows = call(ruby, engine, async move { h.schedules().await })?;
        ruby_json!(ruby, "schedules", &rows)
    }

    /// The ticks a schedule fired, newest first: `[{tick, kind, task_uuid, fired_at}]`.
    fn schedule_fires(ruby: &Ruby, rb_self: &RbEngine, name: Value, limit: Value) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let name = schedule_name(ruby, name)?;
        let limit = args::integer(ruby, "ValidationError", "limit", limit, 1, 10_000)?;
        let h = engine.handle();
        let rows = call(ruby, engine, async move { h.schedule_fires(&name, limit).await })?;
        ruby_json!(ruby, "schedule fires", &rows)
    }

    /// Create a schedule from a Hash (name, cron, namespace, task, version, timezone, context, missed).
    fn create_schedule(ruby: &Ruby, rb_self: &RbEngine, doc: Value) -> Result<(), Error> {
        let engine = rb_self.engine(ruby)?;
        let mut docs = schedule_docs(ruby, "ValidationError", "schedules.create", doc)?;
        let doc = docs.pop().ok_or_else(|| error(ruby, "ValidationError", "schedules.create: no schedule given"))?;
        let h = engine.handle();
        call(ruby, engine, async move { h.create_schedule(doc).await })
    }

    /// Pause (true) or resume (false) a schedule; false when it was already so.
    fn set_schedule_paused(ruby: &Ruby, rb_self: &RbEngine, name: Value, paused: bool) -> Result<bool, Error> {
        let engine = rb_self.engine(ruby)?;
        let name = schedule_name(ruby, name)?;
        let h = engine.handle();
        call(ruby, engine, async move { h.set_schedule_paused(&name, paused).await })
    }

    /// Delete a schedule; false when there was none.
    fn delete_schedule(ruby: &Ruby, rb_self: &RbEngine, name: Value) -> Result<bool, Error> {
        let engine = rb_self.engine(ruby)?;
        let name = schedule_name(ruby, name)?;
        let h = engine.handle();
        call(ruby, engine, async move { h.delete_schedule(&name).await })
    }

    /// Fire a schedule now; returns `{uuid, correlation_id, status, created}`.
    fn trigger_schedule(ruby: &Ruby, rb_self: &RbEngine, name: Value) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let name = schedule_name(ruby, name)?;
        let h = engine.handle();
        let task = call(ruby, engine, async move { h.trigger_schedule(&name).await })?;
        ruby_json!(ruby, "triggered task", &serde_json::json!({
            "uuid": task.task_uuid.to_string(),
            "correlation_id": task.correlation_id.to_string(),
            "status": task.status.as_str(),
            "created": task.created,
        }))
    }

    /// Register a template given as YAML or JSON text; returns its summary.
    fn register_template(ruby: &Ruby, rb_self: &RbEngine, text: Value) -> Result<RArray, Error> {
        let engine = rb_self.engine(ruby)?;
        let text = args::text(ruby, "ValidationError", "template", text)?;
        let h = engine.handle();
        let registered = call(ruby, engine, async move { h.register_template(&text).await })?;
        crate::native::template_summaries(ruby, std::iter::once(&registered.template))
    }

    /// One start under rate limit `key`: 0.0 when taken now, else the seconds until one may be.
    fn acquire_rate(ruby: &Ruby, rb_self: &RbEngine, key: Value, limit: Value, per: Value) -> Result<f64, Error> {
        let engine = rb_self.engine(ruby)?;
        let key = args::text(ruby, "ValidationError", "key", key)?;
        if key.is_empty() || key.chars().count() > 400 {
            return Err(error(ruby, "ValidationError", "a rate limit's key must be 1-400 characters"));
        }
        let max = tasker_core::template::flow::MAX_LIMIT as i64;
        let limit = args::integer(ruby, "ValidationError", "limit", limit, 1, max)? as u32;
        let per = args::finite_seconds(ruby, "ValidationError", "per", per)?.as_secs_f64();
        if !(0.001..=tasker_core::template::flow::MAX_PER_SECONDS).contains(&per) {
            return Err(error(ruby, "ValidationError", format!(
                "per must be between 0.001 and {} seconds", tasker_core::template::flow::MAX_PER_SECONDS)));
        }
        let h = engine.handle();
        let wait = call(ruby, engine, async move { h.acquire_rate(&key, limit, per).await })?;
        Ok(wait.map_or(0.0, |w| w.as_secs_f64()))
    }
}

/// A template name (as a template's `name`), or nil.
fn template_arg(ruby: &Ruby, template: Value) -> Result<Option<String>, Error> {
    let Some(name) = args::optional_text(ruby, "ValidationError", "template", template)? else {
        return Ok(None);
    };
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(error(
            ruby,
            "ValidationError",
            format!(
                "template {name:?} is not a template name (1-128 letters, digits, '_', '-' or '.')"
            ),
        ));
    }
    Ok(Some(name))
}

guarded! {
    /// Pause `namespace` (or one `template` of it) for every process; `who` carries actor and
    /// reason.
    fn pause(ruby: &Ruby, rb_self: &RbEngine, namespace: Value, template: Value, who: RHash) -> Result<(), Error> {
        let engine = rb_self.engine(ruby)?;
        let namespace = namespace_arg(ruby, namespace)?;
        let template = template_arg(ruby, template)?;
        let who = intervention(ruby, who)?;
        let h = engine.handle();
        call(ruby, engine, async move { h.pause(&namespace, template.as_deref(), who).await })
    }

    /// Resume `namespace` (or one `template` of it); false when it was not paused.
    fn resume(ruby: &Ruby, rb_self: &RbEngine, namespace: Value, template: Value) -> Result<bool, Error> {
        let engine = rb_self.engine(ruby)?;
        let namespace = namespace_arg(ruby, namespace)?;
        let template = template_arg(ruby, template)?;
        let h = engine.handle();
        call(ruby, engine, async move { h.resume(&namespace, template.as_deref()).await })
    }

    /// `[{namespace, template, paused_at, actor, reason}]`.
    fn paused(ruby: &Ruby, rb_self: &RbEngine) -> Result<Value, Error> {
        let engine = rb_self.engine(ruby)?;
        let h = engine.handle();
        let rows = call(ruby, engine, async move { h.paused().await })?;
        ruby_json!(ruby, "paused namespaces", &rows)
    }
}
