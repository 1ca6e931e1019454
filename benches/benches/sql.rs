//! Criterion benchmarks of the hot-path SQL on a 1,000-step task: reading + claiming a step
//! (`tasker.claim_step`) and applying its result (`tasker.apply_step_result`, which also
//! finalizes the task). Needs DATABASE_URL; prints a note and measures nothing without it.
//!
//!     DATABASE_URL=... cargo bench -p tasker-core-benches --bench sql

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use tasker_core::{Engine, EngineConfig, TaskRequest};
use uuid::Uuid;

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

struct Claimed {
    task: Uuid,
    step: Uuid,
    token: Uuid,
    msg_id: i64,
    correlation: Uuid,
}

async fn claim_next(pool: &sqlx::PgPool) -> Option<Claimed> {
    let msg: Option<(i64, Value)> = sqlx::query_as(&format!(
        "WITH next AS (SELECT msg_id FROM pgmq.q_tasker_ns_{NAMESPACE} WHERE vt <= clock_timestamp() \
         ORDER BY msg_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         UPDATE pgmq.q_tasker_ns_{NAMESPACE} m SET vt = clock_timestamp() + interval '30 seconds', \
           read_ct = read_ct + 1 FROM next WHERE m.msg_id = next.msg_id RETURNING m.msg_id, m.message"
    ))
    .fetch_optional(pool)
    .await
    .ok()?;
    let (msg_id, body) = msg?;
    let task: Uuid = body["task_uuid"].as_str()?.parse().ok()?;
    let step: Uuid = body["step_uuid"].as_str()?.parse().ok()?;
    let token = Uuid::now_v7();
    let (outcome,): (String,) = sqlx::query_as(
        "SELECT outcome FROM tasker.claim_step($1, $2, $3, 'bench', 30, $4, $5, 2000)",
    )
    .bind(step)
    .bind(task)
    .bind(token)
    .bind(format!("tasker_ns_{NAMESPACE}"))
    .bind(msg_id)
    .fetch_one(pool)
    .await
    .ok()?;
    (outcome == "claimed").then(|| Claimed {
        task,
        step,
        token,
        msg_id,
        correlation: Uuid::nil(),
    })
}

async fn apply(pool: &sqlx::PgPool, c: &Claimed) {
    sqlx::query(
        "SELECT * FROM tasker.apply_step_result($1, $2, $3, $4, $5, $6, $7, 0::smallint, true, \
         '{\"ok\": true}'::jsonb, '{}'::jsonb, NULL, false, 0, true, 2000)",
    )
    .bind(c.task)
    .bind(c.step)
    .bind(c.token)
    .bind(format!("tasker_ns_{NAMESPACE}"))
    .bind(c.msg_id)
    .bind(NAMESPACE)
    .bind(c.correlation)
    .execute(pool)
    .await
    .expect("apply_step_result");
}

fn sql(c: &mut Criterion) {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("sql bench: DATABASE_URL is not set; nothing measured");
        return;
    };
    tasker_core::runtime::migrate(&url).expect("migrations");
    let engine = Engine::start(EngineConfig {
        database_url: url,
        template_paths: vec![template_dir()],
        ..EngineConfig::default()
    })
    .expect("engine");
    let h = engine.handle();
    let pool = h.pool().clone();
    // A claimable leaf, making a new 1,000-step task (and completing its root) when none is left.
    let next = move |engine: &Engine| -> Claimed {
        loop {
            let pool2 = pool.clone();
            if let Some(c) = engine
                .block_on(async move { claim_next(&pool2).await })
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
                })
                .await
                .expect("create");
                let root = claim_next(&pool3).await.expect("root");
                apply(&pool3, &root).await;
            });
        }
    };
    let pool = engine.handle().pool().clone();
    let mut group = c.benchmark_group("sql, 1,000-step task");
    group.bench_function("read + claim_step", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Measure the claim of the next leaf; release it again untimed.
                let started = Instant::now();
                let c = next(&engine);
                total += started.elapsed();
                let pool = pool.clone();
                engine.block_on(async move { apply(&pool, &c).await });
            }
            total
        })
    });
    group.bench_function("apply_step_result (with finalize)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let c = next(&engine);
                let pool = pool.clone();
                let started = Instant::now();
                engine.block_on(async move { apply(&pool, &c).await });
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
