//! End-to-end latency and throughput with Rust-native handlers (the counterpart of
//! benches/ruby/e2e.rb, which runs the same workflows with Ruby handlers).
//!
//!     DATABASE_URL=... cargo run --release -p tasker-core-benches --bin e2e -- [ITERATIONS] [TASKS]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasker_core::worker::{HandlerMap, RustExecutor};
use tasker_core::{Engine, EngineConfig, TaskState};
use tasker_core_benches::{create_task, noop, percentile, square_of_parents, wait_terminal};
use uuid::Uuid;

fn main() {
    let url = match std::env::var("DATABASE_URL") {
        Ok(u) => u,
        Err(_) => {
            eprintln!("e2e: set DATABASE_URL (rake bench:e2e starts a private PostgreSQL)");
            std::process::exit(2);
        }
    };
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let iterations = args.first().copied().unwrap_or(300);
    let tasks = args.get(1).copied().unwrap_or(5000);
    let concurrency = 4;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Err(e) = tasker_core::engine::migrate(&url) {
        eprintln!("e2e: migration failed: {e}");
        std::process::exit(1);
    }
    let engine = Arc::new(
        Engine::start(EngineConfig {
            database_url: url,
            namespaces: vec![
                "linear_workflow".into(),
                "diamond_workflow".into(),
                "bench_noop".into(),
            ],
            template_paths: vec![root.join("examples"), root.join("benches/templates")],
            concurrency,
            pool_size: 16,
            ..EngineConfig::default()
        })
        .unwrap_or_else(|e| {
            eprintln!("e2e: the engine did not start: {e}");
            std::process::exit(1);
        }),
    );
    let settings = engine
        .block_on({
            let pool = engine.handle().pool().clone();
            async move {
                let f: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await?;
                let s: String = sqlx::query_scalar("SHOW synchronous_commit")
                    .fetch_one(&pool)
                    .await?;
                Ok::<_, sqlx::Error>(format!("fsync={f}, synchronous_commit={s}"))
            }
        })
        .and_then(Result::ok)
        .unwrap_or_default();
    println!("Rust-native handlers; {concurrency} executor threads; PostgreSQL {settings}");

    let handlers = HandlerMap::new()
        .register("TaskerCore::Bench::NoopHandler", noop)
        .fallback(square_of_parents);
    let executor = RustExecutor::spawn(&engine, concurrency, handlers.clone());
    for (ns, name) in [
        ("linear_workflow", "mathematical_sequence"),
        ("diamond_workflow", "parallel_computation"),
    ] {
        for _ in 0..20 {
            run_one(&engine, ns, name);
        }
        let mut samples: Vec<f64> = (0..iterations)
            .map(|_| run_one(&engine, ns, name).as_secs_f64() * 1000.0)
            .collect();
        samples.sort_by(f64::total_cmp);
        println!(
            "{ns:<18} 4 steps  create->complete  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  ({iterations} runs)",
            percentile(&samples, 50.0),
            percentile(&samples, 95.0),
            percentile(&samples, 99.0)
        );
    }

    // Create while running: first create to last completion.
    let started = Instant::now();
    let created: Vec<Uuid> = (0..tasks)
        .map(|_| create_task(&engine, "bench_noop", "noop"))
        .collect();
    wait_all(&engine, &created);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "1-step no-op tasks, created while running: {tasks} steps in {elapsed:.2} s = {:.0} steps/s",
        tasks as f64 / elapsed
    );
    executor.stop();

    // Drain a backlog created beforehand.
    let backlog: Vec<Uuid> = (0..tasks)
        .map(|_| create_task(&engine, "bench_noop", "noop"))
        .collect();
    let started = Instant::now();
    let executor = RustExecutor::spawn(&engine, concurrency, handlers);
    wait_all(&engine, &backlog);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "1-step no-op tasks, draining a backlog:    {tasks} steps in {elapsed:.2} s = {:.0} steps/s",
        tasks as f64 / elapsed
    );
    executor.stop();
    engine.shutdown(Duration::from_secs(10));
}

/// Until none of `tasks` is pending or in progress (one count every 2 ms: waiting for each
/// task in turn would time thousands of status reads instead).
fn wait_all(engine: &Engine, tasks: &[Uuid]) {
    let pool = engine.handle().pool().clone();
    loop {
        let (pool, ids) = (pool.clone(), tasks.to_vec());
        let left = engine
            .block_on(async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM tasker.tasks \
                     WHERE task_uuid = ANY ($1) AND status IN ('pending', 'in_progress')",
                )
                .bind(ids)
                .fetch_one(&pool)
                .await
            })
            .expect("the engine's runtime")
            .expect("counting unfinished tasks");
        if left == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run_one(engine: &Engine, namespace: &str, name: &str) -> Duration {
    let started = Instant::now();
    let task = create_task(engine, namespace, name);
    wait_terminal(engine, task);
    let elapsed = started.elapsed();
    let h = engine.handle();
    let status = engine.block_on(async move { h.task_status(task).await });
    assert!(
        matches!(status, Some(Ok(Some(TaskState::Complete)))),
        "task {task} did not complete"
    );
    elapsed
}
