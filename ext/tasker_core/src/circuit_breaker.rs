//! `TaskerCore::Native::CircuitBreakers`: the process's named breakers (core's
//! `BreakerRegistry`), for handler code guarding third-party calls.

use std::time::Duration;

use magnus::{
    block::Proc, function, prelude::*, r_hash::ForEach, Error, RHash, RModule, Ruby, Value,
};
use tasker_core::messaging::queue::QueueName;
use tasker_core::resilience::{registry, CircuitBreakerConfig};
use tasker_core::Engine;

use crate::errors::class;

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let m = native.define_module("CircuitBreakers")?;
    m.define_singleton_method("call", function!(call, 2))?;
    m.define_singleton_method("configure", function!(configure, 2))?;
    m.define_singleton_method("configure_defaults", function!(configure_defaults, 1))?;
    m.define_singleton_method("metrics", function!(metrics, 0))?;
    m.define_singleton_method("force_open", function!(force_open, 1))?;
    m.define_singleton_method("force_closed", function!(force_closed, 1))?;
    m.define_singleton_method("configure_engine", function!(configure_engine, 3))?;
    m.define_singleton_method("engine_metrics", function!(engine_metrics, 1))?;
    let _ = ruby;
    Ok(())
}

/// Run the block under the named breaker. While open: CircuitOpenError (a RetryableError with
/// `retry_after` = seconds until a trial call is allowed). Exceptions from the block count as
/// failures, except TaskerCore::PermanentError (a business outcome, not an outage).
fn call(ruby: &Ruby, name: String, block: Proc) -> Result<Value, Error> {
    let breaker = registry().get(&name);
    let permit = match breaker.try_acquire() {
        Ok(p) => p,
        Err(retry_after) => return Err(open_error(ruby, &name, retry_after)),
    };
    match block.call::<_, Value>(()) {
        Ok(v) => {
            permit.success();
            Ok(v)
        }
        Err(e) => {
            let business = e
                .value()
                .is_some_and(|exc| exc.is_kind_of(class(ruby, "PermanentError")));
            if business {
                permit.success();
            } else {
                permit.failure();
            }
            Err(e)
        }
    }
}

fn open_error(ruby: &Ruby, name: &str, retry_after: Duration) -> Error {
    let message = format!(
        "circuit breaker {name} is open; retry in {:.1}s",
        retry_after.as_secs_f64()
    );
    crate::errors::open_error(ruby, message, retry_after)
}

pub fn parse_config(
    settings: RHash,
    base: CircuitBreakerConfig,
) -> Result<CircuitBreakerConfig, Error> {
    let failure: Option<u32> = settings.lookup("failure_threshold")?;
    let timeout: Option<f64> = settings.lookup("timeout")?;
    let success: Option<u32> = settings.lookup("success_threshold")?;
    Ok(CircuitBreakerConfig {
        failure_threshold: failure.unwrap_or(base.failure_threshold),
        open_timeout: timeout
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map_or(base.open_timeout, Duration::from_secs_f64),
        success_threshold: success.unwrap_or(base.success_threshold),
    })
}

fn configure(name: String, settings: RHash) -> Result<(), Error> {
    let breaker = registry().get(&name);
    let config = parse_config(settings, breaker.config())?;
    breaker.reconfigure(config);
    Ok(())
}

fn configure_defaults(settings: RHash) -> Result<(), Error> {
    registry().set_defaults(parse_config(settings, CircuitBreakerConfig::default())?);
    Ok(())
}

fn force_open(name: String) {
    registry().get(&name).force_open();
}

fn force_closed(name: String) {
    registry().get(&name).force_closed();
}

/// Breakers' states, counters and recent transitions, by name (as Ruby sees them).
pub fn breakers_hash(
    ruby: &Ruby,
    breakers: &[std::sync::Arc<tasker_core::resilience::CircuitBreaker>],
) -> Result<RHash, Error> {
    let out = ruby.hash_new();
    for b in breakers {
        let m = b.metrics();
        let h = ruby.hash_new();
        h.aset("state", m.state.as_str())?;
        h.aset("calls", m.calls)?;
        h.aset("successes", m.successes)?;
        h.aset("failures", m.failures)?;
        h.aset("rejections", m.rejections)?;
        h.aset("consecutive_failures", m.consecutive_failures)?;
        h.aset(
            "transitions",
            b.transitions()
                .iter()
                .map(|t| format!("{}->{} ({})", t.from, t.to, t.reason))
                .collect::<Vec<_>>(),
        )?;
        out.aset(b.name(), h)?;
    }
    Ok(out)
}

/// Apply per-namespace and per-handler-class settings to a started engine's breakers.
pub fn configure_engine_breakers(
    engine: &Engine,
    namespaces: RHash,
    handler_classes: RHash,
) -> Result<(), Error> {
    let queues = engine.queue_breaker_registry();
    namespaces.foreach(|namespace: String, settings: RHash| {
        let queue = QueueName::for_namespace(&namespace).map_err(|e| {
            Error::new(
                class(&Ruby::get().expect("Ruby thread"), "ConfigurationError"),
                e.to_string(),
            )
        })?;
        let current = queues.get(queue.as_str()).config();
        queues.configure(queue.as_str(), parse_config(settings, current)?);
        Ok(ForEach::Continue)
    })?;
    let handlers = engine.handler_breakers();
    handler_classes.foreach(|handler: String, settings: RHash| {
        let current = handlers.get(&handler).config();
        handlers.configure(&handler, parse_config(settings, current)?);
        Ok(ForEach::Continue)
    })
}

/// Change, at runtime, the breaker of a namespace queue (`kind` "namespace") or of a handler
/// class (`kind` "handler") of the running engine.
fn configure_engine(ruby: &Ruby, kind: String, name: String, settings: RHash) -> Result<(), Error> {
    let engine = crate::native::engine(ruby)?;
    let (namespaces, handlers) = (ruby.hash_new(), ruby.hash_new());
    match kind.as_str() {
        "namespace" => namespaces.aset(name, settings)?,
        "handler" => handlers.aset(name, settings)?,
        other => {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!("unknown breaker kind {other:?}"),
            ))
        }
    }
    configure_engine_breakers(&engine, namespaces, handlers)
}

/// The running engine's breakers of one kind ("queue" or "handler").
fn engine_metrics(ruby: &Ruby, kind: String) -> Result<RHash, Error> {
    let engine = crate::native::engine(ruby)?;
    match kind.as_str() {
        "queue" => breakers_hash(ruby, &engine.queue_breakers()),
        "handler" => breakers_hash(ruby, &engine.handler_breakers().all()),
        other => Err(Error::new(
            ruby.exception_arg_error(),
            format!("unknown breaker kind {other:?}"),
        )),
    }
}

/// Every named breaker of the process.
fn metrics(ruby: &Ruby) -> Result<RHash, Error> {
    breakers_hash(ruby, &registry().all())
}
