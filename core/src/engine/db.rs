//! The engine's two connection pools and the account of failures for want of a connection.

use crate::store::DbPool;

use crate::trouble::ConnectionTrouble;

pub(crate) struct Db {
    pub pool: DbPool,
    /// Claims (which read and settle queue messages) and queue metrics: their statements wait
    /// at most `queue_lock_timeout` for a lock (see [`crate::store::connect_queue_pool`]).
    pub queue_pool: DbPool,
    /// Failures for want of a connection, counted and reported at a bounded rate.
    pub trouble: ConnectionTrouble,
}
