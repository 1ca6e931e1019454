//! What `TaskerCore.health` and `TaskerCore.memory_stats` report.

use std::time::Duration;

use super::db::Db;
use crate::messaging::queue::QueueName;
use crate::store;

/// How long `health` waits for a connection to ping the database with.
const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`super::EngineHandle::health`] found.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// None when `SELECT 1` succeeded.
    pub database_error: Option<String>,
    pub database_latency: Duration,
    pub pool: PoolHealth,
    pub queues: Vec<QueueHealth>,
}

/// The engine's connection pool, and how often it could not hand out a connection lately.
#[derive(Debug, Clone)]
pub struct PoolHealth {
    /// Connections open now.
    pub size: u32,
    /// Most connections the pool opens.
    pub max: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Database operations of the engine that failed for want of a connection (pool timeout,
    /// refused or lost connection) in the last [`crate::trouble::TROUBLE_WINDOW`].
    pub recent_failures: u64,
    /// The last such failure, if any in that window.
    pub last_failure: Option<String>,
}

/// One served queue.
#[derive(Debug, Clone)]
pub struct QueueHealth {
    pub namespace: String,
    /// Messages in the queue (None when it could not be read).
    pub depth: Option<i64>,
    pub oldest_message_age_seconds: Option<i32>,
}

/// See [`super::Engine::memory_stats`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryStats {
    pub string_cache: crate::strings::CacheStats,
    /// Claimed steps waiting for a handler thread.
    pub dispatch_queue_depth: usize,
    /// Outcomes handed back and not yet applied.
    pub completions_pending: usize,
    /// Templates held in memory (each is kept for the engine's lifetime).
    pub templates: usize,
}

/// Database reachability, the pool, and the depth of each of `namespaces`' queues.
pub(super) async fn check(db: &Db, namespaces: &[&str]) -> HealthReport {
    let started = std::time::Instant::now();
    // Bounded: a starved pool answers within seconds, not after the pool's own timeout.
    let ping = tokio::time::timeout(HEALTH_PING_TIMEOUT, store::ping(&db.pool)).await;
    let database_latency = started.elapsed();
    let database_error = match ping {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no connection from the pool within {}s (all {} in use?)",
            HEALTH_PING_TIMEOUT.as_secs(),
            db.pool.max_connections()
        )),
    };
    let (recent_failures, last_failure) = db.trouble.recent();
    let pool = PoolHealth {
        size: db.pool.size(),
        max: db.pool.max_connections(),
        idle: db.pool.num_idle() as u32,
        recent_failures,
        last_failure,
    };
    let queues = if database_error.is_none() {
        queue_health(db, namespaces).await
    } else {
        Vec::new()
    };
    HealthReport {
        database_error,
        database_latency,
        pool,
        queues,
    }
}

/// The depth and oldest message's age of each of `namespaces`' queues (None where unknown).
pub(crate) async fn queue_health(db: &Db, namespaces: &[&str]) -> Vec<QueueHealth> {
    let mut queues = Vec::with_capacity(namespaces.len());
    for &ns in namespaces {
        let Ok(queue) = QueueName::for_namespace(ns) else {
            continue;
        };
        // On the queue pool: a locked queue table answers "unknown" at once.
        let metrics = store::queues::metrics(&db.queue_pool, &queue).await.ok();
        queues.push(QueueHealth {
            namespace: ns.to_owned(),
            depth: metrics.map(|m| m.queue_length),
            oldest_message_age_seconds: metrics.and_then(|m| m.oldest_msg_age_sec),
        });
    }
    queues
}
