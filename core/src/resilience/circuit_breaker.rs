//! The circuit breaker: Closed → Open → HalfOpen → Closed, with an atomic fast path.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Settings of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before it lets a trial call through.
    pub open_timeout: Duration,
    /// Successful trial calls needed to close it again (at least 1).
    pub success_threshold: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        crate::defaults::PRODUCTION_BREAKERS.defaults
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are rejected until the open timeout elapses.
    Open,
    /// One trial call at a time goes through.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a protected call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitBreakerError<E> {
    /// The breaker is open (or a trial is already running): the operation was not run.
    Open {
        breaker: Arc<str>,
        /// When a trial call will be allowed.
        retry_after: Duration,
    },
    /// The operation ran and failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for CircuitBreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CircuitBreakerError::Open {
                breaker,
                retry_after,
            } => write!(
                f,
                "circuit breaker {breaker} is open; retry in {:.1}s",
                retry_after.as_secs_f64()
            ),
            CircuitBreakerError::Inner(e) => e.fmt(f),
        }
    }
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    pub at: SystemTime,
    pub reason: &'static str,
}

/// Counters and state of a breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerMetrics {
    pub name: Arc<str>,
    pub state: CircuitState,
    pub calls: u64,
    pub successes: u64,
    pub failures: u64,
    pub rejections: u64,
    pub consecutive_failures: u32,
    pub last_transition_at: Option<SystemTime>,
}

const TRANSITION_LOG: usize = 64;

struct Inner {
    config: CircuitBreakerConfig,
    consecutive_failures: u32,
    trial_successes: u32,
    trial_in_flight: bool,
    opened_at: Option<Instant>,
    forced: bool,
    transitions: VecDeque<Transition>,
}

/// A thread-safe circuit breaker. Cheap to share behind an `Arc`.
pub struct CircuitBreaker {
    name: Arc<str>,
    state: AtomicU8,
    inner: Mutex<Inner>,
    calls: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rejections: AtomicU64,
    /// `Inner::consecutive_failures`, readable without the lock (written under it).
    streak: AtomicU32,
}

/// Permission to run one call; report how it went with [`Permit::success`] or
/// [`Permit::failure`]. Dropping it unreported counts as a failure (the call did not finish).
pub type Permit<'a> = Admission<&'a CircuitBreaker>;

/// A [`Permit`] that owns its breaker, for a call that outlives the caller's borrow (a step
/// handed to a Ruby thread holds its handler's breaker until the outcome comes back).
pub type OwnedPermit = Admission<Arc<CircuitBreaker>>;

/// An admitted call of the breaker `B` refers to (borrowed or shared).
pub struct Admission<B: std::ops::Deref<Target = CircuitBreaker>> {
    breaker: B,
    trial: bool,
    reported: bool,
}

impl<B: std::ops::Deref<Target = CircuitBreaker>> Admission<B> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(true, self.trial);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(false, self.trial);
    }

    /// The verdict on a call that returned or failed: only a fault (the component misbehaved:
    /// a timeout, an unclassified error) counts against the breaker; a business outcome (a
    /// permanent error the component reported on purpose) is a healthy call. The one rule for
    /// handler breakers and named breakers alike.
    pub fn settle(self, fault: bool) {
        if fault {
            self.failure()
        } else {
            self.success()
        }
    }

    /// The call did not reach the component (it was abandoned for another reason): no verdict,
    /// and a half-open breaker may admit its next trial.
    pub fn release(mut self) {
        self.reported = true;
        if self.trial {
            self.breaker.lock().trial_in_flight = false;
        }
    }

    /// Whether this call is a half-open breaker's trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

impl<B: std::ops::Deref<Target = CircuitBreaker>> Drop for Admission<B> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(false, self.trial);
        }
    }
}

impl<B: std::ops::Deref<Target = CircuitBreaker>> fmt::Debug for Admission<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("breaker", &self.breaker.name())
            .field("trial", &self.trial)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(name: impl Into<Arc<str>>, config: CircuitBreakerConfig) -> Self {
        CircuitBreaker {
            name: name.into(),
            state: AtomicU8::new(CircuitState::Closed.as_u8()),
            inner: Mutex::new(Inner {
                config: sanitize(config),
                consecutive_failures: 0,
                trial_successes: 0,
                trial_in_flight: false,
                opened_at: None,
                forced: false,
                transitions: VecDeque::new(),
            }),
            calls: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            streak: AtomicU32::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state (an open breaker whose timeout elapsed reports half-open).
    pub fn state(&self) -> CircuitState {
        let state = CircuitState::from_u8(self.state.load(Ordering::Acquire));
        if state == CircuitState::Open {
            return Self::effective(state, &self.lock());
        }
        state
    }

    /// An open breaker whose timeout elapsed admits a trial: it is half-open in effect.
    fn effective(state: CircuitState, inner: &Inner) -> CircuitState {
        let elapsed = inner
            .opened_at
            .is_some_and(|t| t.elapsed() >= inner.config.open_timeout);
        if state == CircuitState::Open && !inner.forced && elapsed {
            CircuitState::HalfOpen
        } else {
            state
        }
    }

    /// Ask to run a call. Closed: always. Open: rejected until the timeout elapses, then the
    /// first caller becomes the trial. Half-open: one trial at a time.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        self.admit().map(|trial| Admission {
            breaker: self,
            trial,
            reported: false,
        })
    }

    /// [`CircuitBreaker::try_acquire`] for a call that must hold the breaker by itself.
    pub fn try_acquire_owned(self: &Arc<Self>) -> Result<OwnedPermit, Duration> {
        self.admit().map(|trial| Admission {
            breaker: self.clone(),
            trial,
            reported: false,
        })
    }

    /// Admit a call (Ok(is_trial)) or say how long until one may be admitted.
    fn admit(&self) -> Result<bool, Duration> {
        if self.state.load(Ordering::Acquire) == CircuitState::Closed.as_u8() {
            self.calls.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let mut inner = self.lock();
        let state = CircuitState::from_u8(self.state.load(Ordering::Acquire));
        let granted = match state {
            CircuitState::Closed => Ok(false),
            CircuitState::Open => {
                let waited = if inner.forced {
                    Duration::ZERO
                } else {
                    inner.opened_at.map_or(Duration::ZERO, |t| t.elapsed())
                };
                if inner.forced {
                    Err(inner.config.open_timeout)
                } else if waited >= inner.config.open_timeout {
                    self.transition(&mut inner, CircuitState::HalfOpen, "open timeout elapsed");
                    inner.trial_in_flight = true;
                    Ok(true)
                } else {
                    Err(inner.config.open_timeout - waited)
                }
            }
            CircuitState::HalfOpen => {
                if inner.trial_in_flight {
                    Err(Duration::from_millis(100))
                } else {
                    inner.trial_in_flight = true;
                    Ok(true)
                }
            }
        };
        drop(inner);
        match granted {
            Ok(trial) => {
                self.calls.fetch_add(1, Ordering::Relaxed);
                Ok(trial)
            }
            Err(retry_after) => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
                Err(retry_after)
            }
        }
    }

    /// Run `operation` under the breaker: rejected without running while open.
    pub async fn call<F, T, E>(&self, operation: F) -> Result<T, CircuitBreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self
            .try_acquire()
            .map_err(|retry_after| CircuitBreakerError::Open {
                breaker: self.name.clone(),
                retry_after,
            })?;
        match operation.await {
            Ok(v) => {
                permit.success();
                Ok(v)
            }
            Err(e) => {
                permit.failure();
                Err(CircuitBreakerError::Inner(e))
            }
        }
    }

    fn record(&self, ok: bool, trial: bool) {
        if ok {
            self.successes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        // A success while closed with no failure streak changes nothing (no lock taken).
        if ok
            && !trial
            && self.state.load(Ordering::Acquire) == CircuitState::Closed.as_u8()
            && self.streak.load(Ordering::Acquire) == 0
        {
            return;
        }
        let mut inner = self.lock();
        let state = CircuitState::from_u8(self.state.load(Ordering::Acquire));
        if trial {
            inner.trial_in_flight = false;
        }
        match (state, ok) {
            (CircuitState::Closed, true) => inner.consecutive_failures = 0,
            (CircuitState::Closed, false) => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= inner.config.failure_threshold {
                    self.transition(&mut inner, CircuitState::Open, "failure threshold reached");
                }
            }
            (CircuitState::HalfOpen, true) if trial => {
                inner.trial_successes += 1;
                if inner.trial_successes >= inner.config.success_threshold {
                    self.transition(&mut inner, CircuitState::Closed, "trial calls succeeded");
                }
            }
            (CircuitState::HalfOpen, false) if trial => {
                inner.consecutive_failures += 1;
                self.transition(&mut inner, CircuitState::Open, "trial call failed");
            }
            // A call admitted before the breaker opened, finishing late: counted, no change.
            _ => {
                if !ok {
                    inner.consecutive_failures += 1;
                }
            }
        }
        self.streak
            .store(inner.consecutive_failures, Ordering::Release);
    }

    /// Open the breaker and keep it open until [`CircuitBreaker::force_closed`].
    pub fn force_open(&self) {
        let mut inner = self.lock();
        inner.forced = true;
        self.transition(&mut inner, CircuitState::Open, "forced open");
    }

    /// Close the breaker and forget past failures.
    pub fn force_closed(&self) {
        let mut inner = self.lock();
        inner.forced = false;
        self.transition(&mut inner, CircuitState::Closed, "forced closed");
    }

    /// Change the settings at runtime; the state is kept.
    pub fn reconfigure(&self, config: CircuitBreakerConfig) {
        self.lock().config = sanitize(config);
    }

    pub fn config(&self) -> CircuitBreakerConfig {
        self.lock().config
    }

    /// Counters and state.
    pub fn metrics(&self) -> BreakerMetrics {
        let inner = self.lock();
        BreakerMetrics {
            name: self.name.clone(),
            state: Self::effective(
                CircuitState::from_u8(self.state.load(Ordering::Acquire)),
                &inner,
            ),
            calls: self.calls.load(Ordering::Relaxed),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            consecutive_failures: inner.consecutive_failures,
            last_transition_at: inner.transitions.back().map(|t| t.at),
        }
    }

    /// The most recent state changes, oldest first (at most 64).
    pub fn transitions(&self) -> Vec<Transition> {
        self.lock().transitions.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Caller holds the lock.
    fn transition(&self, inner: &mut Inner, to: CircuitState, reason: &'static str) {
        let from = CircuitState::from_u8(self.state.load(Ordering::Acquire));
        match to {
            CircuitState::Open => {
                inner.opened_at = Some(Instant::now());
                inner.trial_successes = 0;
            }
            CircuitState::Closed => {
                inner.consecutive_failures = 0;
                inner.trial_successes = 0;
                inner.trial_in_flight = false;
                inner.opened_at = None;
            }
            CircuitState::HalfOpen => inner.trial_successes = 0,
        }
        self.state.store(to.as_u8(), Ordering::Release);
        self.streak
            .store(inner.consecutive_failures, Ordering::Release);
        if from != to {
            tracing::warn!(breaker = %self.name, from = %from, to = %to, reason, "circuit breaker state changed");
            if inner.transitions.len() == TRANSITION_LOG {
                inner.transitions.pop_front();
            }
            inner.transitions.push_back(Transition {
                from,
                to,
                at: SystemTime::now(),
                reason,
            });
        }
    }
}

fn sanitize(mut c: CircuitBreakerConfig) -> CircuitBreakerConfig {
    c.failure_threshold = c.failure_threshold.max(1);
    c.success_threshold = c.success_threshold.max(1);
    c
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, open_ms: u64, successes: u32) -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            CircuitBreakerConfig {
                failure_threshold: failures,
                open_timeout: Duration::from_millis(open_ms),
                success_threshold: successes,
            },
        )
    }

    fn fail(b: &CircuitBreaker) {
        b.try_acquire().expect("admitted").failure();
    }

    fn succeed(b: &CircuitBreaker) {
        b.try_acquire().expect("admitted").success();
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 10_000, 1);
        fail(&b);
        fail(&b);
        succeed(&b); // resets the streak
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        let m = b.metrics();
        assert_eq!((m.calls, m.successes, m.failures), (6, 1, 5));
    }

    #[test]
    fn rejects_while_open_without_running_the_operation() {
        let b = breaker(1, 10_000, 1);
        fail(&b);
        let retry = b.try_acquire().expect_err("rejected");
        assert!(retry > Duration::from_secs(9));
        let ran = std::cell::Cell::new(false);
        let r: Result<(), CircuitBreakerError<()>> = block_on(b.call(async {
            ran.set(true);
            Ok(())
        }));
        assert!(matches!(r, Err(CircuitBreakerError::Open { .. })));
        assert!(!ran.get());
        assert_eq!(b.metrics().rejections, 2);
    }

    #[test]
    fn half_open_after_the_timeout_then_closes_after_enough_trials() {
        let b = breaker(1, 20, 2);
        fail(&b);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        succeed(&b);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        succeed(&b);
        assert_eq!(b.state(), CircuitState::Closed);
        let path: Vec<(CircuitState, CircuitState)> =
            b.transitions().iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            path,
            [
                (CircuitState::Closed, CircuitState::Open),
                (CircuitState::Open, CircuitState::HalfOpen),
                (CircuitState::HalfOpen, CircuitState::Closed)
            ]
        );
    }

    #[test]
    fn a_failed_trial_reopens() {
        let b = breaker(1, 20, 1);
        fail(&b);
        std::thread::sleep(Duration::from_millis(30));
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire().is_err());
    }

    #[test]
    fn only_one_of_many_concurrent_callers_gets_the_half_open_trial() {
        let b = Arc::new(breaker(1, 20, 1));
        fail(&b);
        std::thread::sleep(Duration::from_millis(30));
        // Every caller asks while the trial is still running (the second barrier), so exactly
        // one is admitted whatever the thread scheduling.
        let asked = Arc::new(std::sync::Barrier::new(16));
        let answered = Arc::new(std::sync::Barrier::new(16));
        let admitted: Vec<bool> = (0..16)
            .map(|_| {
                let (b, asked, answered) = (b.clone(), asked.clone(), answered.clone());
                std::thread::spawn(move || {
                    asked.wait();
                    let permit = b.try_acquire();
                    answered.wait();
                    match permit {
                        Ok(p) => {
                            p.success();
                            true
                        }
                        Err(_) => false,
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(admitted.iter().filter(|a| **a).count(), 1);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.metrics().rejections, 15);
    }

    #[test]
    fn a_permit_dropped_unreported_counts_as_a_failure() {
        let b = breaker(1, 10_000, 1);
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn forced_states_hold_until_released() {
        let b = breaker(5, 10, 1);
        b.force_open();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire().is_err());
        b.force_closed();
        assert_eq!(b.state(), CircuitState::Closed);
        succeed(&b);
    }

    #[test]
    fn reconfigure_changes_thresholds_at_runtime() {
        let b = breaker(5, 10_000, 1);
        b.reconfigure(CircuitBreakerConfig {
            failure_threshold: 1,
            ..b.config()
        });
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.config().failure_threshold, 1);
    }

    /// Drive a future that never waits (the operations in these tests complete at once).
    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_released_trial_gives_no_verdict_and_frees_the_next_trial() {
        let b = Arc::new(breaker(1, 0, 1));
        fail(&b);
        let trial = b.try_acquire_owned().expect("trial admitted");
        assert!(trial.is_trial());
        assert!(b.try_acquire().is_err(), "one trial at a time");
        trial.release();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.metrics().failures, 1, "release is not a failure");
        let next = b.try_acquire_owned().expect("next trial admitted");
        drop(b.clone());
        next.success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn an_owned_permit_dropped_unreported_counts_as_a_failure() {
        let b = Arc::new(breaker(1, 60_000, 1));
        let permit = b.try_acquire_owned().expect("admitted");
        drop(permit);
        assert_eq!(b.state(), CircuitState::Open);
    }
}
