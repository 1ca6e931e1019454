//! Criterion benchmarks of the engine's SQL on a seeded dataset: 5,000 tasks of an 8-step
//! chain (40,000 steps) in mixed progress. Every query's `EXPLAIN (ANALYZE, BUFFERS)` is
//! written to `target/criterion/sql-plans/<bench>.txt` after it is measured, and criterion
//! keeps the previous run as the baseline it reports changes against (`--save-baseline NAME`
//! / `--baseline NAME` for named ones). Needs DATABASE_URL; measures nothing without it.
//!
//!     DATABASE_URL=... cargo bench -p tasker-core-benches --bench sql_dataset
//!
//! The dataset is seeded once per database (namespace `bench_dataset`) and reused.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::json;
use sqlx::PgPool;
use tasker_core::messaging::queue::QueueName;
use tasker_core::{Engine, TaskRequest};
use tasker_core_benches::sql::{apply_success, claim_next};
use uuid::Uuid;

const NAMESPACE: &str = "bench_dataset";
const TASKS: usize = 5_000;
const CHAIN: usize = 8;

fn template_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-dataset-templates");
    std::fs::create_dir_all(&dir).expect("template dir");
    let mut t = format!("name: chain\nnamespace: {NAMESPACE}\nversion: \"1.0.0\"\nsteps:\n");
    for i in 0..CHAIN {
        t.push_str(&format!(
            "  - name: s{i}\n    handler: {{ callable: Noop }}\n"
        ));
        if i > 0 {
            t.push_str(&format!("    dependencies: [s{}]\n", i - 1));
        }
    }
    std::fs::write(dir.join("chain.yaml"), t).expect("template");
    dir
}

/// Create the tasks (through the engine, as an application would), then move task i's first
/// i % 9 steps to complete so the dataset holds every stage of progress.
fn seed(engine: &Engine, pool: &PgPool) {
    let have: i64 = engine
        .block_on({
            let pool = pool.clone();
            async move {
                sqlx::query_scalar("SELECT count(*) FROM tasker.tasks WHERE namespace = $1")
                    .bind(NAMESPACE)
                    .fetch_one(&pool)
                    .await
            }
        })
        .and_then(Result::ok)
        .unwrap_or(0);
    if have as usize >= TASKS {
        return;
    }
    let started = Instant::now();
    let h = engine.handle();
    for i in have as usize..TASKS {
        let h = h.clone();
        engine
            .block_on(async move {
                h.create_task(TaskRequest {
                    namespace: NAMESPACE.into(),
                    name: "chain".into(),
                    version: "1.0.0".into(),
                    context: json!({ "i": i }),
                    correlation_id: None,
                    parent_correlation_id: None,
                    idempotency_key: Some(format!("seed-{i}")),
                    priority: 0,
                    traceparent: None,
                    run_at: None,
                    flow: None,
                })
                .await
            })
            .expect("runtime")
            .expect("create");
    }
    let pool = pool.clone();
    engine
        .block_on(async move {
            sqlx::query(
                "WITH t AS (SELECT task_uuid, (row_number() OVER (ORDER BY task_uuid)) % 9 AS done \
                   FROM tasker.tasks WHERE namespace = $1) \
                 UPDATE tasker.workflow_steps s SET \
                   state = CASE WHEN s.position < t.done THEN 'complete' \
                                WHEN s.position = t.done THEN 'enqueued' ELSE 'pending' END, \
                   pending_parents = CASE WHEN s.position <= t.done THEN 0 ELSE 1 END, \
                   results = CASE WHEN s.position < t.done THEN '{\"ok\": true}'::jsonb END \
                 FROM t WHERE s.task_uuid = t.task_uuid",
            )
            .bind(NAMESPACE)
            .execute(&pool)
            .await?;
            sqlx::query("ANALYZE").execute(&pool).await
        })
        .expect("runtime")
        .expect("seed progress");
    eprintln!(
        "sql_dataset: seeded {} tasks in {:.1}s",
        TASKS - have as usize,
        started.elapsed().as_secs_f64()
    );
}

/// Write the plan of `sql` (with `binds` as text parameters) next to criterion's reports.
fn explain(engine: &Engine, pool: &PgPool, name: &str, sql: &str, binds: &[String]) {
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("criterion/sql-plans");
    std::fs::create_dir_all(&dir).expect("plan dir");
    let pool = pool.clone();
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
    let binds = binds.to_vec();
    let plan: Vec<String> = engine
        .block_on(async move {
            let mut tx = pool.begin().await?;
            let mut q = sqlx::query_scalar(&sql);
            for b in &binds {
                q = q.bind(b);
            }
            let rows = q.fetch_all(&mut *tx).await;
            tx.rollback().await?; // EXPLAIN ANALYZE runs the statement: leave nothing behind
            rows
        })
        .expect("runtime")
        .unwrap_or_else(|e| vec![format!("EXPLAIN failed: {e}")]);
    let file = dir.join(format!("{}.txt", name.replace([' ', '/', ','], "_")));
    std::fs::write(&file, plan.join("\n")).expect("plan file");
    let execution = plan
        .iter()
        .find(|l| l.starts_with("Execution Time"))
        .cloned()
        .unwrap_or_default();
    eprintln!("plan of {name}: {execution} ({})", file.display());
}

fn run(engine: &Engine, pool: &PgPool, sql: &'static str, bind: Uuid) -> Duration {
    let pool = pool.clone();
    let started = Instant::now();
    engine
        .block_on(async move { sqlx::query(sql).bind(bind).fetch_all(&pool).await })
        .expect("runtime")
        .expect("query");
    started.elapsed()
}

const READINESS: &str = "SELECT s.step_uuid, s.name, s.state, \
       NOT EXISTS (SELECT 1 FROM tasker.workflow_step_edges e \
                   JOIN tasker.workflow_steps p ON p.step_uuid = e.from_step_uuid \
                   WHERE e.to_step_uuid = s.step_uuid AND p.state <> 'complete') AS ready \
     FROM tasker.workflow_steps s WHERE s.task_uuid = $1::uuid ORDER BY s.position";

const SUMMARY: &str = "SELECT t.status, count(*) FILTER (WHERE s.state = 'complete') AS complete, \
       count(*) FILTER (WHERE s.state = 'error') AS error, \
       count(*) FILTER (WHERE s.state IN ('enqueued', 'in_progress', 'waiting_for_retry')) AS running, \
       count(*) FILTER (WHERE s.state = 'pending') AS pending, count(*) AS total \
     FROM tasker.tasks t JOIN tasker.workflow_steps s USING (task_uuid) \
     WHERE t.task_uuid = $1::uuid GROUP BY t.status";

const ANCESTORS: &str = "WITH RECURSIVE ancestors(step_uuid, depth) AS ( \
       SELECT e.from_step_uuid, 1 FROM tasker.workflow_step_edges e WHERE e.to_step_uuid = $1::uuid \
       UNION ALL \
       SELECT e.from_step_uuid, a.depth + 1 FROM tasker.workflow_step_edges e \
         JOIN ancestors a ON e.to_step_uuid = a.step_uuid) \
     SELECT s.name, a.depth, s.results FROM ancestors a JOIN tasker.workflow_steps s USING (step_uuid)";

/// The plans of the statements inside claim, apply (with child enqueue) and a transition, as
/// PostgreSQL's auto_explain reports them for nested statements (psql, one rolled-back
/// transaction), written to `sql-plans/write paths.txt`.
fn explain_write_paths(engine: &Engine, pool: &PgPool) {
    let _ = (engine, pool);
    let queue = format!("tasker_ns_{NAMESPACE}");
    // Claim the next ready step and apply its success, as the engine does, in one rolled-back
    // transaction (the apply reads the claim's row).
    let script = format!(
        "BEGIN;\n\
         LOAD 'auto_explain';\n\
         SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;\n\
         SET auto_explain.log_buffers = on; SET auto_explain.log_nested_statements = on;\n\
         SET auto_explain.log_level = notice;\n\
         WITH c AS (SELECT * FROM tasker.claim_steps('{queue}', 1, 'bench', 30, 30, '{{}}', '{{}}', 2) \
                    WHERE kind = 'claimed') \
         SELECT r.kind, r.outcome, r.enqueued_children FROM c, LATERAL tasker.apply_step_results( \
           ARRAY[c.task_uuid], ARRAY[c.step_uuid], ARRAY[c.token], ARRAY['{queue}'], ARRAY[c.msg_id], \
           ARRAY['{NAMESPACE}'], ARRAY['{nil}'::uuid], ARRAY[0::smallint], ARRAY[true], ARRAY['{{}}'::jsonb], \
           ARRAY['{{}}'::jsonb], ARRAY[NULL::jsonb], ARRAY[false], ARRAY[0::float8], ARRAY[true], \
           '{{}}'::text[], 0, '{{}}'::text[], 'bench', 30, 2000, 'bench') r;\n\
         ROLLBACK;\n",
        nil = Uuid::nil()
    );
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let out = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &script,
        ])
        .output();
    let text = match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("psql could not run: {e}"),
    };
    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("criterion/sql-plans");
    let file = dir.join("write paths.txt");
    std::fs::write(&file, &text).expect("plan file");
    let statements = text.matches("Query Text:").count();
    eprintln!(
        "plans of the write paths (claim_steps, apply_step_results): {statements} nested statements ({})",
        file.display()
    );
}

/// Make the queue hold exactly one message per enqueued step of the dataset (the seed moved
/// steps without messages; earlier runs consumed some).
fn sync_queue(engine: &Engine, pool: &PgPool) {
    let pool = pool.clone();
    engine
        .block_on(async move {
            sqlx::query("SELECT pgmq.purge_queue($1)")
                .bind(format!("tasker_ns_{NAMESPACE}"))
                .execute(&pool)
                .await?;
            sqlx::query(
                "SELECT pgmq.send_batch($1, array( \
                   SELECT jsonb_build_object('task_uuid', s.task_uuid, 'step_uuid', s.step_uuid, \
                          'correlation_id', t.correlation_id, 'priority', 0, 'handler', s.handler_class) \
                   FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid) \
                   WHERE t.namespace = $2 AND s.state = 'enqueued' ORDER BY s.step_uuid), 0)",
            )
            .bind(format!("tasker_ns_{NAMESPACE}"))
            .bind(NAMESPACE)
            .execute(&pool)
            .await
        })
        .expect("runtime")
        .expect("queue sync");
}

fn sql_dataset(c: &mut Criterion) {
    let Some(engine) = tasker_core_benches::sql::engine("sql_dataset", template_dir()) else {
        return;
    };
    let pool = engine.handle().pool().clone();
    seed(&engine, &pool);
    sync_queue(&engine, &pool);

    // Fixed samples from the dataset: tasks at every stage, steps at every chain depth.
    let (tasks, by_depth): (Vec<Uuid>, Vec<Uuid>) = engine
        .block_on({
            let pool = pool.clone();
            async move {
                let tasks: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT task_uuid FROM tasker.tasks WHERE namespace = $1 ORDER BY task_uuid LIMIT 512",
                )
                .bind(NAMESPACE)
                .fetch_all(&pool)
                .await?;
                let steps: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 ORDER BY position",
                )
                .bind(tasks[0])
                .fetch_all(&pool)
                .await?;
                Ok::<_, sqlx::Error>((tasks, steps))
            }
        })
        .expect("runtime")
        .expect("samples");
    let mut next_task = {
        let mut i = 0;
        move || {
            i = (i + 1) % tasks.len();
            tasks[i]
        }
    };

    let mut group = c.benchmark_group("sql on 5,000 tasks");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(3));
    for (name, sql) in [
        ("step readiness of a task", READINESS),
        ("task execution summary", SUMMARY),
    ] {
        let task = next_task();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(&engine, &pool, sql, next_task()))
                    .sum()
            })
        });
        explain(&engine, &pool, name, sql, &[task.to_string()]);
    }
    for (depth, step) in by_depth.iter().enumerate() {
        let id = BenchmarkId::new("transitive dependencies", depth);
        group.bench_with_input(id, step, |b, &step| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(&engine, &pool, ANCESTORS, step))
                    .sum()
            })
        });
        if depth == CHAIN - 1 {
            explain(
                &engine,
                &pool,
                "transitive dependencies depth 7",
                ANCESTORS,
                &[step.to_string()],
            );
        }
    }
    // Ready work: the engine's own queue read, visibility 0 so the same messages stay ready.
    let queue = QueueName::for_namespace(NAMESPACE).expect("queue name");
    let read_sql = tasker_core::store::queues::read_sql(&queue);
    for batch in [1, 10, 50, 100] {
        let id = BenchmarkId::new("ready work (queue read)", batch);
        group.bench_with_input(id, &batch, |b, &n| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let pool = pool.clone();
                        let sql = read_sql.clone();
                        let started = Instant::now();
                        engine
                            .block_on(async move {
                                sqlx::query(&sql).bind(0f64).bind(n).fetch_all(&pool).await
                            })
                            .expect("runtime")
                            .expect("read");
                        started.elapsed()
                    })
                    .sum()
            })
        });
    }
    explain(
        &engine,
        &pool,
        "ready work (queue read) 100",
        &read_sql
            .replace("$1", "$1::float8")
            .replace("$2", "$2::int"),
        &["0".into(), "100".into()],
    );
    // One step transition (its history row), in a rolled-back transaction.
    group.bench_function("atomic state transition", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
            let pool = pool.clone();
            let task = next_task();
            let started = Instant::now();
            engine.block_on(async move {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "SELECT tasker.record_step_transition(s.step_uuid, s.task_uuid, s.state, s.state, '{}') \
                     FROM tasker.workflow_steps s WHERE s.task_uuid = $1 AND s.position = 0",
                )
                .bind(task)
                .execute(&mut *tx)
                .await?;
                tx.rollback().await
            })
            .expect("runtime")
            .expect("transition");
            started.elapsed()
                })
                .sum()
        })
    });
    // Claim and apply on the dataset: the oldest ready step of some task; applying its success
    // releases (and sends) the next step of the chain.
    group.bench_function("claim (tasker.claim_steps, one message)", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let pool = pool.clone();
                    let (took, claimed) = engine
                        .block_on(async move {
                            let started = Instant::now();
                            let c = claim_next(&pool, NAMESPACE).await.expect("a ready step");
                            let took = started.elapsed();
                            (took, (pool, c))
                        })
                        .expect("runtime");
                    engine.block_on(async move {
                        apply_success(&claimed.0, NAMESPACE, &claimed.1).await
                    });
                    took
                })
                .sum()
        })
    });
    group.bench_function("apply result (with child enqueue)", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let pool = pool.clone();
                    engine
                        .block_on(async move {
                            let c = claim_next(&pool, NAMESPACE).await.expect("a ready step");
                            let started = Instant::now();
                            apply_success(&pool, NAMESPACE, &c).await;
                            started.elapsed()
                        })
                        .expect("runtime")
                })
                .sum()
        })
    });
    group.finish();
    explain_write_paths(&engine, &pool);
    engine.shutdown(Duration::from_secs(5));
}

criterion_group!(benches, sql_dataset);
criterion_main!(benches);
