//! `TaskerCore::Native::CircuitBreakers`: the process's named breakers (core's
//! `BreakerRegistry`), for handler code guarding third-party calls.

use std::time::Duration;

use magnus::{block::Proc, function, prelude::*, Error, RHash, RModule, Ruby, Value};
use tasker_core::resilience::{registry, CircuitBreakerConfig};

use crate::errors::class;

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

/// Every named breaker of the process.
fn metrics(ruby: &Ruby) -> Result<RHash, Error> {
    breakers_hash(ruby, &registry().all())
}
