//! The engine's two connection pools and the account of failures for want of a connection.

use sqlx::PgPool;

use crate::trouble::ConnectionTrouble;

pub(crate) struct Db {
    pub pool: PgPool,
    /// Claims (which read and settle queue messages) and queue metrics: their statements wait
    /// at most `queue_lock_timeout` for a lock (see [`crate::store::connect_queue_pool`]).
    pub queue_pool: PgPool,
    /// Failures for want of a connection, counted and reported at a bounded rate.
    pub trouble: ConnectionTrouble,
}
