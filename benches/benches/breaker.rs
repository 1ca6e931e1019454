//! Criterion micro-benchmarks of the circuit breaker's overhead per call: a closed breaker's
//! `try_acquire` + `success`, its async `call` on a future that is ready at once (polled by
//! hand with a no-op waker, no runtime, so the figure is the breaker's and not an executor's),
//! an open breaker's rejection, and two threads sharing one closed breaker. The baselines run
//! the same operation (and poll the same ready future) without a breaker.
//!
//!     cargo bench -p tasker-core-benches --bench breaker

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tasker_core::resilience::{CircuitBreaker, CircuitBreakerConfig};

/// The protected operation: as little as possible, kept opaque to the optimizer.
fn op() -> Result<u64, ()> {
    Ok(black_box(1))
}

fn new_breaker() -> CircuitBreaker {
    CircuitBreaker::new("bench", CircuitBreakerConfig::default())
}

/// A waker that does nothing (`Waker::noop` needs Rust 1.85; the workspace allows 1.80).
fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(|_| RAW, |_| {}, |_| {}, |_| {});
    const RAW: RawWaker = RawWaker::new(std::ptr::null(), &VTABLE);
    // SAFETY: every vtable function ignores the (null) data pointer.
    unsafe { Waker::from_raw(RAW) }
}

/// Poll a future that must complete on its first poll. Inlined, so the future is built where it
/// is polled instead of being copied into this function's frame (which alone cost ~15 ns).
#[inline(always)]
fn poll_ready<F: Future>(future: F, cx: &mut Context<'_>) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmarked future is always ready"),
    }
}

/// One admitted call reported as a success.
fn acquire_success(b: &CircuitBreaker) {
    match b.try_acquire() {
        Ok(permit) => {
            let _ = black_box(op());
            permit.success();
        }
        Err(_) => panic!("a closed breaker admits every call"),
    }
}

fn baseline(c: &mut Criterion) {
    c.bench_function("baseline", |b| b.iter(op));
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    c.bench_function("baseline poll", |b| {
        b.iter(|| poll_ready(async { op() }, &mut cx))
    });
}

fn closed(c: &mut Criterion) {
    let breaker = new_breaker();
    c.bench_function("closed try_acquire+success", |b| {
        b.iter(|| acquire_success(black_box(&breaker)))
    });

    let breaker = new_breaker();
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    c.bench_function("closed call", |b| {
        b.iter(|| poll_ready(black_box(&breaker).call(async { op() }), &mut cx))
    });
    let m = breaker.metrics();
    assert_eq!(
        m.failures + m.rejections,
        0,
        "closed runs must only succeed"
    );
}

fn open(c: &mut Criterion) {
    let breaker = new_breaker();
    breaker.force_open();
    c.bench_function("open rejection", |b| {
        b.iter(|| {
            let r = black_box(&breaker).try_acquire();
            assert!(r.is_err(), "a forced-open breaker rejects every call");
            black_box(r.err())
        })
    });
}

/// Two threads, each making `iters` calls on the same closed breaker after a common start;
/// the time reported is the slower thread's, so it is the time per call as each thread sees
/// it (the pair completes two calls in that time).
fn contended(c: &mut Criterion) {
    const THREADS: usize = 2;
    let breaker = new_breaker();
    c.bench_function("contended 2 threads", |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(THREADS);
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            let t0 = Instant::now();
                            for _ in 0..iters {
                                acquire_success(black_box(&breaker));
                            }
                            t0.elapsed()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("worker thread"))
                    .max()
                    .unwrap_or(Duration::ZERO)
            })
        })
    });
    let m = breaker.metrics();
    assert_eq!(
        m.failures + m.rejections,
        0,
        "contended runs must only succeed"
    );
}

criterion_group!(benches, baseline, closed, open, contended);
criterion_main!(benches);
