//! `TaskerCore::Native::CircuitBreakers`: the process's named breakers (core's
//! `BreakerRegistry`), for handler code guarding third-party calls.

use std::time::Duration;

use magnus::{
    block::Proc, function, prelude::*, r_hash::ForEach, Error, RHash, RModule, Ruby, Value,
};
use tasker_core::messaging::queue::QueueName;
use tasker_core::resilience::{registry, CircuitBreakerConfig};
use tasker_core::Engine;

use crate::args;
use crate::errors::{class, guarded};

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let m = native.define_module("CircuitBreakers")?;
    m.define_singleton_method("call", function!(call, 2))?;
    m.define_singleton_method("configure", function!(configure, 2))?;
    m.define_singleton_method("configure_defaults", function!(configure_defaults, 1))?;
    m.define_singleton_method("metrics", function!(metrics, 0))?;
    m.define_singleton_method("force_open", function!(force_open, 1))?;
    m.define_singleton_method("force_closed", function!(force_closed, 1))?;
    let _ = ruby;
    Ok(())
}

/// Run the block under the named breaker. While open: CircuitOpenError (a RetryableError with
/// `retry_after` = seconds until a trial call is allowed). Exceptions from the block count as
/// failures, except TaskerCore::PermanentError (a business outcome, not an outage).
fn call(ruby: &Ruby, name: Value, block: Proc) -> Result<Value, Error> {
    // Guarded like every entry point; the block's own exceptions come back as values
    // (magnus calls it under rb_protect), so nothing unwinds through here.
    crate::errors::guard(ruby, move || {
        let name = breaker_name(ruby, name)?;
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
                // A PermanentError is the component's answer, not its outage.
                let business = e
                    .value()
                    .is_some_and(|exc| exc.is_kind_of(class(ruby, "PermanentError")));
                permit.settle(!business);
                Err(e)
            }
        }
    })
}

fn open_error(ruby: &Ruby, name: &str, retry_after: Duration) -> Error {
    let message = format!(
        "circuit breaker {name} is open; retry in {:.1}s",
        retry_after.as_secs_f64()
    );
    crate::errors::open_error(ruby, message, retry_after)
}

/// A breaker's name from Ruby.
fn breaker_name(ruby: &Ruby, name: Value) -> Result<String, Error> {
    args::text(ruby, "ConfigurationError", "circuit breaker name", name)
}

/// Settings Ruby validated (`CircuitBreakerSettings`), checked again here so that no value can
/// make the core panic: thresholds from 1 to 1,000,000, a timeout in seconds within
/// `tasker_core::limits::MAX_SECONDS`. `what` names the breaker in errors.
pub fn parse_config(
    ruby: &Ruby,
    what: &str,
    settings: RHash,
    base: CircuitBreakerConfig,
) -> Result<CircuitBreakerConfig, Error> {
    let threshold = |key: &str| -> Result<Option<u32>, Error> {
        let v = args::get(settings, key);
        if v.is_nil() {
            return Ok(None);
        }
        let n = args::integer(
            ruby,
            "ConfigurationError",
            &format!("{what} {key}"),
            v,
            1,
            1_000_000,
        )?;
        Ok(Some(n as u32))
    };
    let timeout = args::get(settings, "timeout");
    let open_timeout = if timeout.is_nil() {
        base.open_timeout
    } else {
        args::finite_seconds(
            ruby,
            "ConfigurationError",
            &format!("{what} timeout"),
            timeout,
        )?
    };
    Ok(CircuitBreakerConfig {
        failure_threshold: threshold("failure_threshold")?.unwrap_or(base.failure_threshold),
        open_timeout,
        success_threshold: threshold("success_threshold")?.unwrap_or(base.success_threshold),
    })
}

guarded! {
    fn configure(ruby: &Ruby, name: Value, settings: RHash) -> Result<(), Error> {
        let name = breaker_name(ruby, name)?;
        let breaker = registry().get(&name);
        let config = parse_config(ruby, &format!("circuit breaker {name}"), settings, breaker.config())?;
        breaker.reconfigure(config);
        Ok(())
    }

    fn configure_defaults(ruby: &Ruby, settings: RHash) -> Result<(), Error> {
        let config = parse_config(ruby, "circuit breaker defaults", settings, CircuitBreakerConfig::default())?;
        registry().set_defaults(config);
        Ok(())
    }

    fn force_open(ruby: &Ruby, name: Value) -> Result<(), Error> {
        registry().get(&breaker_name(ruby, name)?).force_open();
        Ok(())
    }

    fn force_closed(ruby: &Ruby, name: Value) -> Result<(), Error> {
        registry().get(&breaker_name(ruby, name)?).force_closed();
        Ok(())
    }
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
    ruby: &Ruby,
    engine: &Engine,
    namespaces: RHash,
    handler_classes: RHash,
) -> Result<(), Error> {
    let queues = engine.queue_breaker_registry();
    namespaces.foreach(|namespace: Value, settings: RHash| {
        let namespace = args::text(
            ruby,
            "ConfigurationError",
            "circuit breaker namespace",
            namespace,
        )?;
        let queue = QueueName::for_namespace(&namespace)
            .map_err(|e| Error::new(class(ruby, "ConfigurationError"), e.to_string()))?;
        let current = queues.get(queue.as_str()).config();
        let config = parse_config(
            ruby,
            &format!("circuit breaker of namespace {namespace}"),
            settings,
            current,
        )?;
        queues.configure(queue.as_str(), config);
        Ok(ForEach::Continue)
    })?;
    let handlers = engine.handler_breakers();
    handler_classes.foreach(|handler: Value, settings: RHash| {
        let handler = args::text(
            ruby,
            "ConfigurationError",
            "circuit breaker handler class",
            handler,
        )?;
        let current = handlers.get(&handler).config();
        let config = parse_config(
            ruby,
            &format!("circuit breaker of handler {handler}"),
            settings,
            current,
        )?;
        handlers.configure(&handler, config);
        Ok(ForEach::Continue)
    })
}

guarded! {
    /// Every named breaker of the process.
    fn metrics(ruby: &Ruby) -> Result<RHash, Error> {
        breakers_hash(ruby, &registry().all())
    }
}
