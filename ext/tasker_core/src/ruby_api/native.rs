//! `TaskerCore::Native`: the internal module the Ruby facade calls for what needs no running
//! engine (migrations, template checks, the engine's rules and bounds). The engine itself is a
//! `TaskerCore::Native::Engine` object (`engine.rs`) that the facade owns.

use magnus::{function, prelude::*, Error, RArray, RHash, RModule, Ruby, Value};

use crate::args;
use crate::convert;
use crate::errors::{guarded, internal, to_ruby};
use crate::nogvl;

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
    Ok(native)
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
    h.aset(
        "min_claim_grace_seconds",
        *tasker_core::defaults::CLAIM_GRACE_SECONDS.start(),
    )?;
    h.aset(
        "max_claim_grace_seconds",
        *tasker_core::defaults::CLAIM_GRACE_SECONDS.end(),
    )?;
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
    h.aset("pool_size", POOL_SIZE)?;
    h.aset("poll_interval", POLL_INTERVAL.as_secs_f64())?;
    h.aset("claim_grace", CLAIM_GRACE.as_secs())?;
    h.aset("requeue_after", REQUEUE_AFTER.as_secs_f64())?;
    h.aset("queue_lock_timeout", QUEUE_LOCK_TIMEOUT.as_secs_f64())?;
    h.aset("string_cache_capacity", STRING_CACHE_CAPACITY)?;
    let filter = ruby.str_new(LOG_FILTER);
    filter.freeze(); // shared by every configuration that takes the default
    h.aset("log_filter", filter)?;
    h.aset("circuit_breakers", breakers)?;
    let retention = ruby.hash_new();
    retention.aset("completed", RETENTION_COMPLETED.as_secs_f64())?;
    retention.aset("errored", RETENTION_ERRORED.as_secs_f64())?;
    retention.aset("archive", RETENTION_ARCHIVE.as_secs_f64())?;
    retention.aset("interval", MAINTENANCE_INTERVAL.as_secs_f64())?;
    retention.aset("batch_size", MAINTENANCE_BATCH)?;
    retention.aset("max_batch_size", *MAINTENANCE_BATCH_RANGE.end())?;
    retention.freeze();
    h.aset("retention", retention)?;
    h.freeze();
    Ok(h)
}

/// A database URL from Ruby (checked text: it goes to the connection parser).
pub fn url(ruby: &Ruby, value: Value) -> Result<String, Error> {
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
        nogvl::run(ruby, move || tasker_core::engine::migrate(&database_url))?
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
        nogvl::run(ruby, move || tasker_core::engine::rollback(&database_url, target))?
            .map_err(|p| internal(ruby, p))?
            .map_err(|e| to_ruby(ruby, e))
    }

    /// [[version, description, applied?], ...] of the project's migrations.
    fn migration_status(ruby: &Ruby, database_url: Value) -> Result<Vec<(i64, String, bool)>, Error> {
        let database_url = url(ruby, database_url)?;
        nogvl::run(ruby, move || tasker_core::engine::migration_status(&database_url))?
            .map_err(|p| internal(ruby, p))?
            .map_err(|e| to_ruby(ruby, e))
    }
}

/// `[{namespace, name, version, handlers, steps}, ...]` of templates.
pub fn template_summaries<'a>(
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

guarded! {
    fn validate_templates(ruby: &Ruby, paths: Vec<String>) -> Result<RArray, Error> {
        let templates = tasker_core::template::load_paths(&paths).map_err(|e| to_ruby(ruby, e))?;
        template_summaries(ruby, templates.iter())
    }
}
