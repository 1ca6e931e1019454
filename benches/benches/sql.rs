//! Criterion benchmarks of the hot-path SQL on a 1,000-step task: claiming a step
//! (`tasker.claim_steps`) and applying its result (`tasker.apply_step_results`, which also
//! finalizes the task). Needs DATABASE_URL; prints a note and measures nothing without it.
//!
//!     DATABASE_URL=... cargo bench -p tasker-core-benches --bench sql

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tasker_core::{Engine, TaskRequest};
use tasker_core_benches::sql::{apply_success, claim_next, Claimed};

const STEPS: usize = 1000;
const NAMESPACE: &str = "bench_sql";

/// A root step and 999 leaves that depend on it: after the root, 999 claimable steps.
fn template_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-sql-templates");
    std::fs::create_dir_all(&dir).expect("template dir");
    let mut t = format!("name: wide\nnamespace: {NAMESPACE}\nversion: \"1.0.0\"\nsteps:\n  - name: root\n    handler: {{ callable: Noop }}\n");
    for i in 1..STEPS {
        t.push_str(&format!(
            "  - name: leaf_{i}\n    handler: {{ callable: Noop }}\n    dependencies: [root]\n"
        ));
    }
    std::fs::write(dir.join("wide.yaml"), t).expect("template");
    dir
}

fn sql(c: &mut Criterion) {
    let Some(engine) = tasker_core_benches::sql::engine("sql", template_dir()) else {
        return;
    };
    let h = engine.handle();
    let pool = h.pool().clone();
    // A claimable leaf, making a new 1,000-step task (and completing its root) when none is left.
    let next = move |engine: &Engine| -> Claimed {
        loop {
            let pool2 = pool.clone();
            if let Some(c) = engine
                .block_on(async move { claim_next(&pool2, NAMESPACE).await })
                .flatten()
            {
                return c;
            }
            let h = h.clone();
            let pool3 = pool.clone();
            engine.block_on(async move {
                h.create_task(TaskRequest {
                    namespace: NAMESPACE.into(),
                    name: "wide".into(),
                    version: "1.0.0".into(),
                    context: json!({}),
                    correlation_id: None,
                    parent_correlation_id: None,
                    idempotency_key: None,
                    priority: 0,
                    traceparent: None,
                    run_at: None,
                    flow: None,
                })
                .await
                .expect("create");
                let root = claim_next(&pool3, NAMESPACE).await.expect("root");
                apply_success(&pool3, NAMESPACE, &root).await;
            });
        }
    };
    let pool = engine.handle().pool().clone();
    let mut group = c.benchmark_group("sql, 1,000-step task");
    group.bench_function("claim (tasker.claim_steps)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Measure the claim of the next leaf; release it again untimed.
                let started = Instant::now();
                let c = next(&engine);
                total += started.elapsed();
                let pool = pool.clone();
                engine.block_on(async move { apply_success(&pool, NAMESPACE, &c).await });
            }
            total
        })
    });
    group.bench_function("apply (tasker.apply_step_results, with finalize)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let c = next(&engine);
                let pool = pool.clone();
                let started = Instant::now();
                engine.block_on(async move { apply_success(&pool, NAMESPACE, &c).await });
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    engine.shutdown(Duration::from_secs(5));
}

criterion_group!(benches, sql);
criterion_main!(benches);
