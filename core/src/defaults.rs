//! The engine's defaults, each defined once. [`crate::EngineConfig::default`] and
//! [`crate::resilience::CircuitBreakerConfig::default`] are built from them, and the extension
//! hands them to Ruby as `TaskerCore::Native::DEFAULTS`, which `TaskerCore::Configuration` and
//! `TaskerCore::CircuitBreakerSettings` read instead of restating them.

use std::time::Duration;

use crate::resilience::CircuitBreakerConfig;

/// Handler threads (and steps claimed at once).
pub const CONCURRENCY: usize = 4;
/// Connections of a process's main pool when no pool size is set, however many handler threads
/// it runs: a handler thread holds no connection (its outcome goes to the applier), so the pool
/// serves task creation, the applier, the loops and reads.
pub const POOL_SIZE: u32 = 10;
/// How often an idle poller looks at its queue without a wake-up.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a claim outlives its step's timeout.
pub const CLAIM_GRACE: Duration = Duration::from_secs(30);
/// How long a step may stay enqueued without a message before it is sent again.
pub const REQUEUE_AFTER: Duration = Duration::from_secs(60);
/// How long a queue statement waits for a lock on its queue table.
pub const QUEUE_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds applied to the configuration by [`crate::EngineConfig::bounded`] (the one place).
/// Shortest `requeue_after`: the sweep for lost messages runs at most this often.
pub const MIN_REQUEUE_AFTER: Duration = Duration::from_millis(100);
/// Shortest `queue_lock_timeout`.
pub const MIN_QUEUE_LOCK_TIMEOUT: Duration = Duration::from_millis(1);
/// Shortest interval between two exports of telemetry.
pub const MIN_EXPORT_INTERVAL: Duration = Duration::from_millis(100);
/// Whole seconds `claim_grace` may be (checked, not clamped).
pub const CLAIM_GRACE_SECONDS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// Complete and cancelled tasks are deleted this long after they finished.
pub const RETENTION_COMPLETED: Duration = Duration::from_secs(7 * 86_400);
/// Errored tasks are deleted this long after they failed.
pub const RETENTION_ERRORED: Duration = Duration::from_secs(30 * 86_400);
/// Archived queue messages (dead letters, refused requests) and cron fires are deleted this
/// long after they were archived.
pub const RETENTION_ARCHIVE: Duration = Duration::from_secs(7 * 86_400);
/// How often a worker process tries to take the maintenance lease and run retention.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// Tasks (of each kind) and archived messages (per queue) deleted by one transaction.
pub const MAINTENANCE_BATCH: u32 = 500;
/// Bounds of the maintenance batch size.
pub const MAINTENANCE_BATCH_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;
/// Shortest maintenance interval.
pub const MIN_MAINTENANCE_INTERVAL: Duration = Duration::from_millis(100);
/// Distinct names the string cache keeps.
pub const STRING_CACHE_CAPACITY: usize = crate::strings::DEFAULT_CAPACITY;
/// The log filter when neither the configuration nor `TASKER_LOG` / `RUST_LOG` sets one.
pub const LOG_FILTER: &str = crate::logging::DEFAULT_FILTER;

/// Circuit breaker settings of one environment profile: every breaker's defaults, the
/// namespace queues' and the handler classes'.
#[derive(Debug, Clone, Copy)]
pub struct BreakerProfile {
    pub defaults: CircuitBreakerConfig,
    pub queues: CircuitBreakerConfig,
    pub handlers: CircuitBreakerConfig,
}

const fn breaker(
    failure_threshold: u32,
    open_secs: u64,
    success_threshold: u32,
) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold,
        open_timeout: Duration::from_secs(open_secs),
        success_threshold,
    }
}

/// Production (and any environment not named below): trips later, waits longer for a trial.
pub const PRODUCTION_BREAKERS: BreakerProfile = BreakerProfile {
    defaults: breaker(5, 30, 2),
    queues: breaker(5, 10, 1),
    handlers: breaker(5, 30, 1),
};

/// Development and test: recovers within seconds, so a broken local setup heals while you watch.
pub const QUICK_BREAKERS: BreakerProfile = BreakerProfile {
    defaults: breaker(3, 5, 1),
    queues: breaker(3, 2, 1),
    handlers: breaker(3, 5, 1),
};
