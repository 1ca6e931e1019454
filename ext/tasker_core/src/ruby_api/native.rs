//! `TaskerCore::Native`: the internal module the Ruby facade calls. It owns the process-wide
//! engine (rebuilt after `fork`), and converts arguments at the boundary.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magnus::{
    function, prelude::*, value::ReprValue, Error, IntoValue, RArray, RHash, RModule, Ruby, Value,
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

static ENGINE: Mutex<Option<Arc<Engine>>> = Mutex::new(None);

pub fn init(ruby: &Ruby) -> Result<RModule, Error> {
    let root = ruby.define_module("TaskerCore")?;
    let native = root.define_module("Native")?;
    native.const_set("LOADED", true)?;
    native.const_set("LIMITS", limits(ruby)?)?;
    native.const_set("DEFAULTS", defaults(ruby)?)?;
    native.const_set("PRIORITIES", priorities(ruby)?)?;
    native.define_singleton_method("seconds", function!(seconds, 3))?;
    native.define_singleton_method("namespace_problem", function!(namespace_problem, 1))?;
    native.define_singleton_method("check_json", function!(check_json, 2))?;
    native.define_singleton_method("migrate", function!(migrate, 1))?;
    native.define_singleton_method("migration_status", function!(migration_status, 1))?;
    native.define_singleton_method("rollback", function!(rollback, 2))?;
    native.define_singleton_method("validate_templates", function!(validate_templates, 1))?;
    native.define_singleton_method("start", function!(start, 1))?;
    native.define_singleton_method("running?", function!(is_running, 0))?;
    native.define_singleton_method("memory_stats", function!(memory_stats, 0))?;
    native.define_singleton_method("health", function!(health, 0))?;
    native.define_singleton_method("begin_shutdown", function!(begin_shutdown, 0))?;
    native.define_singleton_method("shutdown", function!(shutdown, 1))?;
    native.define_singleton_method("next_step", function!(next_step, 1))?;
    native.define_singleton_method("create_task", function!(create_task, 1))?;
    native.define_singleton_method("create_tasks", function!(create_tasks, 1))?;
    native.define_singleton_method("find_task", function!(find_task, 1))?;
    native.define_singleton_method("find_tasks", function!(find_tasks, 1))?;
    native.define_singleton_method("request_task", function!(request_task, 1))?;
    native.define_singleton_method("wait_for", function!(wait_for, 2))?;
    native.define_singleton_method("cancel_task", function!(cancel_task, 2))?;
    native.define_singleton_method("retry_step", function!(retry_step, 3))?;
    native.define_singleton_method("resolve_step_manually", function!(resolve_step_manually, 4))?;
    Ok(native)
}

/// The running engine of this process, if any (no error value is built when there is none).
pub fn running_engine() -> Option<Arc<Engine>> {
    match ENGINE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(e) if e.is_current_process() => Some(e.clone()),
        _ => None,
    }
}

/// The running engine of this process. A child forked after start abandons the parent's
/// engine (its threads do not exist here) and must start its own.
pub fn engine(ruby: &Ruby) -> Result<Arc<Engine>, Error> {
    let mut slot = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(e) if e.is_current_process() => Ok(e.clone()),
        Some(_) => {
            abandon(slot.take());
            Err(error(
                ruby,
                "NotStartedError",
                "TaskerCore was started in a parent process; call TaskerCore.start in this process",
            ))
        }
        None => Err(error(
            ruby,
            "NotStartedError",
            "TaskerCore is not started; call TaskerCore.start first",
        )),
    }
}

fn abandon(engine: Option<Arc<Engine>>) {
    if let Some(e) = engine {
        match Arc::try_unwrap(e) {
            Ok(e) => e.abandon(),
            Err(shared) => std::mem::forget(shared),
        }
    }
}

/// `TaskerCore::Native::LIMITS`: the bounds of `tasker_core::limits`, for Ruby's own checks.
fn limits(ruby: &Ruby) -> Result<RHash, Error> {
    use tasker_core::limits::*;
    let h = ruby.hash_new();
    h.aset("max_json_depth", MAX_JSON_DEPTH)?;
    h.aset("max_integer_digits", MAX_INTEGER_DIGITS)?;
    h.aset("max_seconds", MAX_SECONDS)?;
    h.aset("max_list_limit", MAX_LIST_LIMIT)?;
    h.aset("max_failure_text_bytes", MAX_FAILURE_TEXT_BYTES)?;
    h.aset("max_backtrace_lines", MAX_BACKTRACE_LINES)?;
    let priorities = tasker_core::orchestration::create::PRIORITY_RANGE;
    h.aset("min_priority", *priorities.start())?;
    h.aset("max_priority", *priorities.end())?;
    h.aset(
        "retry_after_ceiling_seconds",
        tasker_core::orchestration::backoff::RETRY_AFTER_CEILING.as_secs_f64(),
    )?;
    h.freeze();
    Ok(h)
}

/// `TaskerCore::Native::PRIORITIES`: the named task priorities (`low` … `critical`).
fn priorities(ruby: &Ruby) -> Result<RHash, Error> {
    let h = ruby.hash_new();
    for (name, value) in tasker_core::orchestration::create::NAMED_PRIORITIES {
        h.aset(name, value)?;
    }
    h.freeze();
    Ok(h)
}

/// `TaskerCore::Native::DEFAULTS`: the engine's defaults (`tasker_core::defaults`), which the
/// Ruby configuration reads instead of restating them. Durations in seconds.
fn defaults(ruby: &Ruby) -> Result<RHash, Error> {
    use tasker_core::defaults::*;
    let breaker = |c: tasker_core::resilience::CircuitBreakerConfig| -> Result<RHash, Error> {
        let h = ruby.hash_new();
        h.aset("failure_threshold", c.failure_threshold)?;
        h.aset("timeout", c.open_timeout.as_secs_f64())?;
        h.aset("success_threshold", c.success_threshold)?;
        h.freeze();
        Ok(h)
    };
    let profile = |p: BreakerProfile| -> Result<RHash, Error> {
        let h = ruby.hash_new();
        h.aset("defaults", breaker(p.defaults)?)?;
        h.aset("pgmq", breaker(p.queues)?)?;
        h.aset("handlers", breaker(p.handlers)?)?;
        h.freeze();
        Ok(h)
    };
    let breakers = ruby.hash_new();
    breakers.aset("production", profile(PRODUCTION_BREAKERS)?)?;
    breakers.aset("quick", profile(QUICK_BREAKERS)?)?;
    breakers.freeze();
    let h = ruby.hash_new();
    h.aset("concurrency", CONCURRENCY)?;
    h.aset("pool_headroom", POOL_HEADROOM)?;
    h.aset("poll_interval", POLL_INTERVAL.as_secs_f64())?;
    h.aset("claim_grace", CLAIM_GRACE.as_secs())?;
    h.aset("requeue_after", REQUEUE_AFTER.as_secs_f64())?;
    h.aset("queue_lock_timeout", QUEUE_LOCK_TIMEOUT.as_secs_f64())?;
    h.aset("string_cache_capacity", STRING_CACHE_CAPACITY)?;
    h.aset("log_filter", LOG_FILTER)?;
    h.aset("circuit_breakers", breakers)?;
    h.freeze();
    Ok(h)
}

/// A database URL from Ruby (checked text: it goes to the connection parser).
fn url(ruby: &Ruby, value: Value) -> Result<String, Error> {
    args::text(ruby, "ConfigurationError", "database_url", value)
}

guarded! {
    /// `value` as a number of seconds by the engine's one rule (`tasker_core::limits::seconds`),
    /// for Ruby code that checks an argument before acting on it: the Float, `Float::INFINITY`
    /// for "no limit" when `infinite_ok`, else a ValidationError naming `what`.
    fn seconds(ruby: &Ruby, what: String, value: Value, infinite_ok: bool) -> Result<f64, Error> {
        let secs = args::seconds(ruby, "ValidationError", &what, value, infinite_ok)?;
        Ok(secs.map_or(f64::INFINITY, |d| d.as_secs_f64()))
    }

    fn migrate(ruby: &Ruby, database_url: Value) -> Result<(), Error> {
        let database_url = url(ruby, database_url)?;
        nogvl::run(ruby, || tasker_core::engine::migrate(&database_url))?
            .map_err(|p| internal(ruby, p))?
            .map_err(|e| to_ruby(ruby, e))
    }

    /// Why `name` cannot be a namespace, or nil when it can: the engine's one rule
    /// (`tasker_core::messaging::queue::validate_namespace`), for Ruby's configuration checks.
    fn namespace_problem(ruby: &Ruby, name: Value) -> Result<Option<String>, Error> {
        let name = args::text(ruby, "ConfigurationError", "a namespace", name)?;
        Ok(tasker_core::messaging::queue::validate_namespace(&name)
            .err()
            .map(|e| e.to_string()))
    }

    /// Raise ValidationError naming the path where `value` stops having a JSON form, exactly as
    /// the engine converts a handler's result (`convert::to_json`: the one definition, depth
    /// bound included); nil when it has one.
    fn check_json(ruby: &Ruby, value: Value, what: String) -> Result<(), Error> {
        convert::to_json(ruby, value, &what).map(|_| ())
    }

    /// Revert the migrations newer than `target` (0: all; pgmq stays installed).
    fn rollback(ruby: &Ruby, database_url: Value, target: Value) -> Result<(), Error> {
        let database_url = url(ruby, database_url)?;
        let target = args::integer(ruby, "ValidationError", "the target version", target, 0, i64::MAX)?;
        nogvl::run(ruby, || tasker_core::engine::rollback(&database_url, target))?
            .map_err(|p| internal(ruby, p))?
            .map_err(|e| to_ruby(ruby, e))
    }

    /// [[version, description, applied?], ...] of the project's migrations.
    fn migration_status(ruby: &Ruby, database_url: Value) -> Result<Vec<(i64, String, bool)>, Error> {
        let database_url = url(ruby, database_url)?;
        nogvl::run(ruby, || tasker_core::engine::migration_status(&database_url))?
            .map_err(|p| internal(ruby, p))?
            .map_err(|e| to_ruby(ruby, e))
    }
}

fn template_summaries<'a>(
    ruby: &Ruby,
    templates: impl Iterator<Item = &'a tasker_core::template::Template>,
) -> Result<RArray, Error> {
    let out = ruby.ary_new();
    for t in templates {
        let h = ruby.hash_new();
        h.aset("namespace", &*t.namespace)?;
        h.aset("name", &*t.name)?;
        h.aset("version", &*t.version)?;
        let handlers = ruby.ary_new();
        for c in t.handler_classes() {
            handlers.push(&*c)?;
        }
        h.aset("handlers", handlers)?;
        let steps = ruby.ary_new();
        for s in &t.steps {
            steps.push(&*s.name)?;
        }
        h.aset("steps", steps)?;
        out.push(h)?;
    }
    Ok(out)
}

/// A setting of the configuration Hash, converted; a wrong type is a ConfigurationError.
fn setting<T: magnus::TryConvert>(ruby: &Ruby, config: RHash, key: &str) -> Result<T, Error> {
    args::fetch(ruby, "ConfigurationError", config, key)
}

/// A setting in seconds, within `tasker_core::limits::MAX_SECONDS`.
fn seconds_setting(ruby: &Ruby, config: RHash, key: &str, what: &str) -> Result<Duration, Error> {
    args::finite_seconds(ruby, "ConfigurationError", what, args::get(config, key))
}

guarded! {
    fn validate_templates(ruby: &Ruby, paths: Vec<String>) -> Result<RArray, Error> {
        let templates = tasker_core::template::load_paths(&paths).map_err(|e| to_ruby(ruby, e))?;
        template_summaries(ruby, templates.iter())
    }

    fn start(ruby: &Ruby, config: RHash) -> Result<RArray, Error> {
        {
            let mut slot = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(e) if e.is_current_process() => {
                    return Err(error(
                        ruby,
                        "ConfigurationError",
                        "TaskerCore is already started",
                    ))
                }
                Some(_) => abandon(slot.take()),
                None => {}
            }
        }
        let defaults = EngineConfig::default();
        let cfg = EngineConfig {
            database_url: url(ruby, args::get(config, "database_url"))?,
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
            requeue_after: seconds_setting(ruby, config, "requeue_after_seconds", "requeue_after")?
                .max(Duration::from_millis(100)),
            queue_lock_timeout: seconds_setting(ruby, config, "queue_lock_timeout_seconds", "queue_lock_timeout")?
                .max(Duration::from_millis(1)),
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
        };
        let telemetry: Option<RHash> = setting(ruby, config, "telemetry")?;
        let cfg = EngineConfig {
            telemetry: telemetry
                .map(|t| -> Result<_, Error> {
                    Ok(tasker_core::telemetry::TelemetryConfig {
                        endpoint: args::optional_text(ruby, "ConfigurationError", "telemetry endpoint", args::get(t, "endpoint"))?,
                        service_name: args::text(ruby, "ConfigurationError", "telemetry service_name", args::get(t, "service_name"))?,
                        export_interval: seconds_setting(ruby, t, "export_interval_seconds", "telemetry export_interval")?
                            .max(Duration::from_millis(100)),
                        sampling_ratio: setting(ruby, t, "sampling_ratio")?,
                    })
                })
                .transpose()?,
            ..cfg
        };
        let namespace_breakers: RHash = setting(ruby, config, "namespace_circuit_breakers")?;
        let handler_class_breakers: RHash = setting(ruby, config, "handler_class_circuit_breakers")?;
        let engine = nogvl::run(ruby, || Engine::start(cfg))?
            .map_err(|p| internal(ruby, p))?
            .map_err(|e| to_ruby(ruby, e))?;
        if let Err(e) = crate::circuit_breakers::configure_engine_breakers(
            ruby,
            &engine,
            namespace_breakers,
            handler_class_breakers,
        ) {
            let _ = nogvl::run(ruby, move || engine.shutdown(Duration::from_secs(5)));
            return Err(e);
        }
        let summaries = template_summaries(ruby, engine.templates().iter().map(|r| &r.template))?;
        *ENGINE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(engine));
        Ok(summaries)
    }

    fn memory_stats(ruby: &Ruby) -> Result<Option<RHash>, Error> {
        let Some(engine) = running_engine() else {
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
    fn health(ruby: &Ruby) -> Result<Option<RHash>, Error> {
        let Some(engine) = running_engine() else {
            return Ok(None);
        };
        let h = engine.handle();
        let report = call(ruby, &engine, async move { Ok(h.health().await) })?;
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

    fn is_running(ruby: &Ruby) -> Result<bool, Error> {
        let _ = ruby;
        Ok(running_engine().is_some())
    }

    fn begin_shutdown(ruby: &Ruby) -> Result<(), Error> {
        if let Ok(engine) = engine(ruby) {
            engine.begin_shutdown();
        }
        Ok(())
    }

    /// Stop the engine: wait for handed-back results to be applied, close the pool.
    /// `timeout`: seconds, or `Float::INFINITY` for no limit.
    fn shutdown(ruby: &Ruby, timeout: Value) -> Result<bool, Error> {
        let timeout = args::seconds(ruby, "ValidationError", "stop timeout", timeout, true)?
            .unwrap_or(Duration::from_secs_f64(tasker_core::limits::MAX_SECONDS));
        let taken = {
            let mut slot = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_ref() {
                Some(e) if !e.is_current_process() => {
                    abandon(slot.take());
                    return Ok(false);
                }
                _ => slot.take(),
            }
        };
        let Some(mut shared) = taken else {
            return Ok(false);
        };
        shared.begin_shutdown();
        let deadline = Instant::now() + timeout;
        // Other Ruby threads may still hold the engine for a moment (a finishing wait_for).
        let engine = loop {
            match Arc::try_unwrap(shared) {
                Ok(e) => break Some(e),
                Err(again) if Instant::now() < deadline => {
                    shared = again;
                    let _ = nogvl::run(ruby, || std::thread::sleep(Duration::from_millis(5)));
                }
                Err(_) => break None,
            }
        };
        match engine {
            Some(e) => {
                nogvl::run(ruby, || {
                    e.shutdown(deadline.saturating_duration_since(Instant::now()))
                })?
                .map_err(|p| internal(ruby, p))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Wait up to `timeout` seconds for a step. Returns a StepEvent, nil on timeout, or false
    /// once the engine is shutting down and nothing is left to run.
    fn next_step(ruby: &Ruby, timeout: Value) -> Result<Value, Error> {
        let timeout = args::seconds(ruby, "ValidationError", "next_step timeout", timeout, true)?;
        let engine = match engine(ruby) {
            Ok(e) => e,
            Err(_) => return Ok(ruby.qfalse().as_value()),
        };
        // A step already waiting is taken without releasing the GVL (no park, no wake-up).
        if let Ok(dispatch) = engine.dispatch_receiver().try_recv() {
            return Ok(RbStepEvent::new(engine.handed_out(dispatch)).into_value_with(ruby));
        }
        match nogvl::recv(engine.dispatch_receiver(), timeout) {
            Waited::Value(dispatch) => {
                Ok(RbStepEvent::new(engine.handed_out(dispatch)).into_value_with(ruby))
            }
            Waited::TimedOut => Ok(ruby.qnil().as_value()),
            Waited::Closed => Ok(ruby.qfalse().as_value()),
            Waited::Interrupted => {
                ruby.thread_check_ints()?;
                Ok(ruby.qnil().as_value())
            }
            Waited::Panicked(p) => Err(internal(ruby, p)),
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
    fn create_task(ruby: &Ruby, args: RHash) -> Result<RHash, Error> {
        let engine = engine(ruby)?;
        let req = task_request(ruby, args)?;
        let h = engine.handle();
        let created = call(ruby, &engine, async move { h.create_task(req).await })?;
        created_hash(ruby, &created)
    }

    /// Several tasks in one transaction and one round trip; all or none are written.
    fn create_tasks(ruby: &Ruby, list: RArray) -> Result<RArray, Error> {
        let engine = engine(ruby)?;
        if list.len() > MAX_CREATE_BATCH {
            return Err(error(
                ruby,
                "ValidationError",
                format!("create_tasks takes at most {MAX_CREATE_BATCH} tasks at once, got {}", list.len()),
            ));
        }
        let mut reqs = Vec::with_capacity(list.len());
        for (i, item) in list.into_iter().enumerate() {
            let args = RHash::from_value(item).ok_or_else(|| {
                error(ruby, "ValidationError", format!("create_tasks: item {i} is not a Hash"))
            })?;
            reqs.push(task_request(ruby, args).map_err(|e| {
                error(ruby, "ValidationError", format!("create_tasks: item {i}: {e}"))
            })?);
        }
        let out = ruby.ary_new_capa(reqs.len());
        if reqs.is_empty() {
            return Ok(out);
        }
        let h = engine.handle();
        let created = call(ruby, &engine, async move { h.create_tasks(reqs).await })?;
        for c in &created {
            out.push(created_hash(ruby, c)?)?;
        }
        Ok(out)
    }

    fn find_task(ruby: &Ruby, uuid: Value) -> Result<Value, Error> {
        let engine = engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let h = engine.handle();
        let view = call(ruby, &engine, async move { h.find_task(task_uuid).await })?;
        match view {
            Some(v) => {
                let json = serde_json::to_value(&v)
                    .map_err(|e| error(ruby, "InternalError", format!("cannot encode task: {e}")))?;
                convert::to_ruby(ruby, &json)
            }
            None => Ok(ruby.qnil().as_value()),
        }
    }

    fn request_task(ruby: &Ruby, args: RHash) -> Result<i64, Error> {
        let engine = engine(ruby)?;
        let mut request = convert::to_json(ruby, args.as_value(), "request")?;
        if let Some(map) = request.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        let h = engine.handle();
        call(ruby, &engine, async move { h.request_task(request).await })
    }

    fn find_tasks(ruby: &Ruby, args: RHash) -> Result<Value, Error> {
        let engine = engine(ruby)?;
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
        let tasks = call(ruby, &engine, async move {
            h.find_tasks(correlation_id, parent_correlation_id, limit)
                .await
        })?;
        let json = serde_json::to_value(&tasks)
            .map_err(|e| error(ruby, "InternalError", format!("cannot encode tasks: {e}")))?;
        convert::to_ruby(ruby, &json)
    }

    /// Block until the task is terminal and return its status; raise TimeoutError after
    /// `timeout` seconds (`Float::INFINITY`: no limit). The waiting is the core's
    /// (`EngineHandle::wait_for`), in slices of at most a second with the GVL released, so that
    /// an interrupt (`Thread#raise`, `Timeout`) ends it within one.
    fn wait_for(ruby: &Ruby, uuid: Value, timeout: Value) -> Result<String, Error> {
        let limit = args::seconds(ruby, "ValidationError", "wait_for timeout", timeout, true)?;
        let engine = engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let slice = left.map_or(Duration::from_secs(1), |l| l.min(Duration::from_secs(1)));
            let h = engine.handle();
            match call(ruby, &engine, async move { h.wait_for(task_uuid, slice).await })? {
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
    fn cancel_task(ruby: &Ruby, uuid: Value, who: RHash) -> Result<String, Error> {
        let engine = engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let who = intervention(ruby, who)?;
        let h = engine.handle();
        let state = call(
            ruby,
            &engine,
            async move { h.cancel_task(task_uuid, who).await },
        )?;
        Ok(state.as_str().to_owned())
    }

    fn retry_step(ruby: &Ruby, uuid: Value, step: Value, who: RHash) -> Result<String, Error> {
        let engine = engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let step = step_name(ruby, step)?;
        let who = intervention(ruby, who)?;
        let h = engine.handle();
        let state = call(ruby, &engine, async move {
            h.retry_step(task_uuid, step, who).await
        })?;
        Ok(state.as_str().to_owned())
    }

    fn resolve_step_manually(
        ruby: &Ruby,
        uuid: Value,
        step: Value,
        result: Value,
        who: RHash,
    ) -> Result<String, Error> {
        let engine = engine(ruby)?;
        let task_uuid = parse_uuid(ruby, "task uuid", uuid)?;
        let step = step_name(ruby, step)?;
        let result = convert::to_json(ruby, result, "result")?;
        let who = intervention(ruby, who)?;
        let h = engine.handle();
        let state = call(ruby, &engine, async move {
            h.resolve_step_manually(task_uuid, step, result, who).await
        })?;
        Ok(state.as_str().to_owned())
    }
}
