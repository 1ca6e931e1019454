//! Named breakers shared by a process: the ones handler code uses for third-party calls
//! (`TaskerCore::CircuitBreaker.call(:name)`), created on first use with the defaults and
//! reconfigurable at runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::{CircuitBreaker, CircuitBreakerConfig};

/// Breakers by name, with the settings new ones get.
#[derive(Default)]
pub struct BreakerRegistry {
    inner: Mutex<(CircuitBreakerConfig, BTreeMap<String, Arc<CircuitBreaker>>)>,
}

impl BreakerRegistry {
    /// An empty registry whose breakers are created with `defaults`.
    pub fn with_defaults(defaults: CircuitBreakerConfig) -> Self {
        BreakerRegistry {
            inner: Mutex::new((defaults, BTreeMap::new())),
        }
    }

    /// The breaker called `name`, created with the defaults if it does not exist.
    pub fn get(&self, name: &str) -> Arc<CircuitBreaker> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = inner.1.get(name) {
            return found.clone();
        }
        let defaults = inner.0;
        inner
            .1
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(CircuitBreaker::new(name, defaults)))
            .clone()
    }

    /// Settings for one breaker (created if needed), effective at once.
    pub fn configure(&self, name: &str, config: CircuitBreakerConfig) -> Arc<CircuitBreaker> {
        let breaker = self.get(name);
        breaker.reconfigure(config);
        breaker
    }

    /// Settings for breakers created from now on.
    pub fn set_defaults(&self, config: CircuitBreakerConfig) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0 = config;
    }

    /// Every breaker, by name.
    pub fn all(&self) -> Vec<Arc<CircuitBreaker>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .values()
            .cloned()
            .collect()
    }
}

/// The process-wide registry.
pub fn registry() -> &'static BreakerRegistry {
    static REGISTRY: OnceLock<BreakerRegistry> = OnceLock::new();
    REGISTRY.get_or_init(BreakerRegistry::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn breakers_are_created_once_per_name_with_the_defaults() {
        let r = BreakerRegistry::default();
        r.set_defaults(CircuitBreakerConfig {
            failure_threshold: 2,
            open_timeout: Duration::from_secs(1),
            success_threshold: 1,
        });
        let a = r.get("payments");
        assert!(Arc::ptr_eq(&a, &r.get("payments")));
        assert_eq!(a.config().failure_threshold, 2);
        r.configure("payments", CircuitBreakerConfig::default());
        assert_eq!(a.config(), CircuitBreakerConfig::default());
        assert_eq!(r.all().len(), 1);
    }
}
