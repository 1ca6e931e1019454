//! Connection trouble, counted and reported without flooding the log. When PostgreSQL refuses
//! connections or the pool has none to hand out, every loop of the engine fails at once and
//! keeps failing; each failure is noted here, and at most one warning per
//! [`REPORT_INTERVAL`] says how many there were. `TaskerCore.health` reads the recent count.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

/// At most one warning per this interval (the first failure is reported at once).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Failures older than this no longer count as recent (health is degraded while any do).
pub const TROUBLE_WINDOW: Duration = Duration::from_secs(60);

/// Whether an error means "no connection to be had" rather than a problem of the statement.
pub fn is_connection_trouble(e: &Error) -> bool {
    let Error::Database(e) = e else { return false };
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 53300: too many connections; 57P01–57P03: the
            // server is shutting down or not accepting connections yet.
            c.starts_with("08") || c == "53300" || c.starts_with("57P0")
        }),
        _ => false,
    }
}

#[derive(Default)]
struct State {
    /// Failures not yet reported in a warning.
    unreported: u64,
    last_report: Option<Instant>,
    /// Failures in the current window, and when it began.
    recent: u64,
    window_start: Option<Instant>,
    last_failure: Option<(Instant, String)>,
}

/// See the module documentation.
#[derive(Default)]
pub struct ConnectionTrouble {
    state: Mutex<State>,
}

impl ConnectionTrouble {
    /// Note `e` if it is connection trouble (and maybe log one line for all of them); returns
    /// false for any other error, which the caller reports itself.
    pub fn note(&self, what: &str, e: &Error) -> bool {
        if !is_connection_trouble(e) {
            return false;
        }
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.window_start
            .is_none_or(|w| now.duration_since(w) > TROUBLE_WINDOW)
        {
            s.window_start = Some(now);
            s.recent = 0;
        }
        s.recent += 1;
        s.unreported += 1;
        s.last_failure = Some((now, e.to_string()));
        let due = s
            .last_report
            .is_none_or(|at| now.duration_since(at) >= REPORT_INTERVAL);
        if due {
            let count = std::mem::take(&mut s.unreported);
            s.last_report = Some(now);
            drop(s);
            tracing::warn!(
                failures = count,
                last = what,
                error = %e,
                "database connections unavailable: {count} operation(s) failed since the last report \
                 (at most one line per {}s); the engine keeps retrying",
                REPORT_INTERVAL.as_secs()
            );
        }
        true
    }

    /// Failures in the last [`TROUBLE_WINDOW`], and the latest one's message.
    pub fn recent(&self) -> (u64, Option<String>) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &s.last_failure {
            Some((at, msg)) if at.elapsed() <= TROUBLE_WINDOW => (s.recent, Some(msg.clone())),
            _ => (0, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_errors_are_noted_and_counted() {
        let t = ConnectionTrouble::default();
        assert!(!t.note("x", &Error::InvalidInput("bad".into())));
        assert!(!t.note("x", &Error::Database(sqlx::Error::RowNotFound)));
        assert_eq!(t.recent().0, 0);
        for _ in 0..5 {
            assert!(t.note("x", &Error::Database(sqlx::Error::PoolTimedOut)));
        }
        let (count, last) = t.recent();
        assert_eq!(count, 5);
        assert!(last.unwrap().contains("pool timed out"));
    }
}
