//! Wake-up round trip between processes: one connection commits `pg_notify('tasker_wakeup',
//! namespace)` (what a send does at commit), another — the engine's listener connection —
//! receives it. Prints p50/p95/p99 over N round trips.
//!
//!     DATABASE_URL=... cargo run --release -p tasker-core-benches --bin notify [N]

use std::time::Instant;

use sqlx::postgres::PgListener;
use tasker_core_benches::percentile;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let mut listener = PgListener::connect(&url).await.expect("listener");
        listener.listen("tasker_wakeup").await.expect("LISTEN");
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 50 {
            let started = Instant::now();
            sqlx::query("SELECT pg_notify('tasker_wakeup', 'bench_notify')")
                .execute(&pool)
                .await
                .expect("notify");
            let got = listener.recv().await.expect("recv");
            let took = started.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(got.payload(), "bench_notify");
            if i >= 50 {
                samples.push(took); // the first 50 warm the connections up
            }
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        println!(
            "notification round trip over {n} wake-ups: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms (notify committed → listener received)",
            percentile(&samples, 50.0),
            percentile(&samples, 95.0),
            percentile(&samples, 99.0)
        );
    });
}
