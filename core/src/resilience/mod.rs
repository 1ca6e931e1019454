//! Fault isolation: circuit breakers. A breaker watches one component (a queue, a handler
//! class, a third-party API); after `failure_threshold` consecutive failures it opens and
//! rejects calls at once for `open_timeout`, then lets one trial call through at a time
//! (half-open) and closes again after `success_threshold` trial successes.

mod circuit_breaker;
mod registry;

pub use circuit_breaker::{
    BreakerMetrics, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerError, CircuitState,
    OwnedPermit, Permit, Transition,
};
pub use registry::{registry, BreakerRegistry};
