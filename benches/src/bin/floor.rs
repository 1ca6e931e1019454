//! `rake bench:floor`, the Rust half: on the same PostgreSQL as the Ruby half
//! (benches/ruby/floor.rb),
//!   (a) a durable 1-row INSERT + COMMIT (BEGIN / INSERT / COMMIT, 3 round trips) and the
//!       autocommit INSERT, one connection;
//!   (b) pgmq's own cycle through the pgmq crate: `send` → `read` → `delete` of one message on
//!       one connection, and messages/s completed through that cycle by P producers × C
//!       consumers (each on its own connection, consumers reading one message at a time);
//!   (f) the 4-step chain (create → last handler done, and create → the task is seen
//!       terminal) and the no-op backlog drain with Rust-native handlers.
//! Prints `floor.<section>.<name>=<value>` lines; lines starting with `#` are notes.
//!
//!     DATABASE_URL=... cargo run --release -p tasker-core-benches --bin floor
//!
//! Environment: SAMPLES=2000 (a, b), SAMPLE_WARMUP=200, SWEEP=1x1,2x2,4x4,8x8,16x16,32x32,
//! SWEEP_SECONDS=4 (measured, per configuration, after SWEEP_WARMUP_SECONDS=1), CHAINS=1000,
//! WARMUP=50, DRAIN_TASKS=20000, CONCURRENCY=10, POOL_SIZE=16.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgmq::PGMQueueExt;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use tasker_core::worker::{HandlerMap, RustExecutor};
use tasker_core::{Engine, EngineConfig, StepEvent, TaskState};
use tasker_core_benches::{create_task, noop, percentile, square_of_parents, wait_terminal};
use uuid::Uuid;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const QUEUE: &str = "bench_floor";
/// Visibility timeout of the pgmq reads (seconds); nothing is redelivered within a run.
const VT: i32 = 30;
/// Producers pause while this many messages per consumer wait unread: the sweep measures the
/// completed cycle, not a backlog growing behind slower consumers.
const BACKLOG_PER_CONSUMER: u64 = 64;
/// Threads creating a drain's backlog.
const BACKLOG_THREADS: usize = 4;
/// A consumer that read nothing sleeps this long before it reads again.
const EMPTY_READ_PAUSE: Duration = Duration::from_millis(1);

struct Settings {
    samples: usize,
    sample_warmup: usize,
    sweep: Vec<(usize, usize)>,
    sweep_seconds: f64,
    sweep_warmup_seconds: f64,
    chains: usize,
    warmup: usize,
    drain_tasks: usize,
    concurrency: usize,
    pool_size: u32,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("floor: {name}={v} is not a valid value");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let sweep = std::env::var("SWEEP")
            .unwrap_or_else(|_| "1x1,2x2,4x4,8x8,16x16,32x32".into())
            .split(',')
            .map(|pair| {
                let (p, c) = pair.trim().split_once('x').unwrap_or(("", ""));
                match (p.parse(), c.parse()) {
                    (Ok(p), Ok(c)) if p > 0 && c > 0 => (p, c),
                    _ => {
                        eprintln!("floor: SWEEP: {pair:?} is not PRODUCERSxCONSUMERS");
                        std::process::exit(2)
                    }
                }
            })
            .collect();
        Settings {
            samples: env_or("SAMPLES", 2000),
            sample_warmup: env_or("SAMPLE_WARMUP", 200),
            sweep,
            sweep_seconds: env_or("SWEEP_SECONDS", 4.0),
            sweep_warmup_seconds: env_or("SWEEP_WARMUP_SECONDS", 1.0),
            chains: env_or("CHAINS", 1000),
            warmup: env_or("WARMUP", 50),
            drain_tasks: env_or("DRAIN_TASKS", 20000),
            concurrency: env_or("CONCURRENCY", 10),
            pool_size: env_or("POOL_SIZE", 16),
        }
    }
}

/// One machine-readable line.
fn out(key: &str, value: impl std::fmt::Display) {
    println!("floor.{key}={value}");
}

/// One machine-readable line, a time in ms (or any figure) to 3 decimals.
fn out_f(key: &str, value: f64) {
    out(key, format!("{value:.3}"));
}

/// Notes the 1-minute load average as a part of the run starts (a shared machine).
fn out_load(part: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    out(
        &format!("load.{part}"),
        load.split_whitespace().next().unwrap_or("?"),
    );
}

/// The same starting state for each timed part: no dead rows to walk, no checkpoint due.
async fn settle(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut *conn).await?;
    sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await?;
    Ok(())
}

/// Thread `i`'s share of `total` split over `parts`.
fn share(total: usize, parts: usize, i: usize) -> usize {
    total / parts + usize::from(i < total % parts)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("floor: set DATABASE_URL (rake bench:floor starts a private PostgreSQL)");
        std::process::exit(2);
    };
    let s = Settings::from_env();
    if let Err(e) = tasker_core::engine::migrate(&url) {
        eprintln!("floor: migration failed: {e}");
        std::process::exit(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt
        .block_on(durable_insert(&url, &s))
        .and_then(|()| rt.block_on(pgmq_cycle(&url, &s)))
        .and_then(|()| rt.block_on(pgmq_sweep(&url, &s)))
        .and_then(|()| native_handlers(&rt, &url, &s));
    if let Err(e) = result {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}

/// (a) BEGIN / INSERT / COMMIT and the autocommit INSERT, alternated, one connection.
async fn durable_insert(url: &str, s: &Settings) -> Res<()> {
    let mut conn = PgConnection::connect(url).await?;
    settle(&mut conn).await?;
    out_load("a");
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_floor_insert; \
         CREATE TABLE bench_floor_insert (id bigserial PRIMARY KEY, payload text NOT NULL, \
           created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut conn)
    .await?;
    let insert = "INSERT INTO bench_floor_insert (payload) VALUES ($1)";
    let (mut explicit, mut autocommit) = (Vec::new(), Vec::new());
    for i in 0..s.sample_warmup + s.samples {
        let payload = format!("row {i}");
        let started = Instant::now();
        sqlx::raw_sql("BEGIN").execute(&mut conn).await?;
        sqlx::query(insert)
            .bind(&payload)
            .execute(&mut conn)
            .await?;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
        let one = started.elapsed();
        let started = Instant::now();
        sqlx::query(insert)
            .bind(&payload)
            .execute(&mut conn)
            .await?;
        let auto = started.elapsed();
        if i >= s.sample_warmup {
            explicit.push(ms(one));
            autocommit.push(ms(auto));
        }
    }
    sqlx::raw_sql("DROP TABLE bench_floor_insert")
        .execute(&mut conn)
        .await?;
    let (explicit, autocommit) = (sorted(explicit), sorted(autocommit));
    out("a.samples", s.samples);
    out("a.warmup", s.sample_warmup);
    out_f("a.insert_commit_p50_ms", percentile(&explicit, 50.0));
    out_f("a.insert_commit_p95_ms", percentile(&explicit, 95.0));
    out_f("a.autocommit_p50_ms", percentile(&autocommit, 50.0));
    out_f("a.autocommit_p95_ms", percentile(&autocommit, 95.0));
    Ok(())
}

/// pgmq's client (its functions through the crate); the pool is never used: every call goes
/// through a connection of its own (`*_with_cxn`), so no pool acquire or ping is timed.
fn pgmq_client(url: &str) -> Res<PGMQueueExt> {
    let unused = PgPoolOptions::new().max_connections(1).connect_lazy(url)?;
    Ok(PGMQueueExt {
        url: url.to_owned(),
        connection: unused,
    })
}

/// A message the size of a step message.
fn message(i: u64) -> Value {
    json!({ "task_uuid": Uuid::now_v7(), "step_uuid": Uuid::now_v7(), "n": i })
}

async fn fresh_queue(pgmq: &PGMQueueExt, conn: &mut PgConnection) -> Res<()> {
    pgmq.drop_queue_with_cxn(QUEUE, &mut *conn).await.ok();
    pgmq.create_with_cxn(QUEUE, &mut *conn).await?;
    Ok(())
}

/// (b) One message through send → read → delete, one connection, the queue empty each time.
async fn pgmq_cycle(url: &str, s: &Settings) -> Res<()> {
    let pgmq = pgmq_client(url)?;
    let mut conn = PgConnection::connect(url).await?;
    fresh_queue(&pgmq, &mut conn).await?;
    settle(&mut conn).await?;
    out_load("b_cycle");
    let mut samples = Vec::with_capacity(s.samples);
    for i in 0..s.sample_warmup + s.samples {
        let msg = message(i as u64);
        let started = Instant::now();
        pgmq.send_with_cxn(QUEUE, &msg, &mut conn).await?;
        let read = pgmq
            .read_with_cxn::<_, Value>(QUEUE, VT, &mut conn)
            .await?
            .ok_or("pgmq read returned nothing after a send")?;
        if !pgmq.delete_with_cxn(QUEUE, read.msg_id, &mut conn).await? {
            return Err(format!("pgmq delete of message {} deleted nothing", read.msg_id).into());
        }
        if i >= s.sample_warmup {
            samples.push(ms(started.elapsed()));
        }
    }
    let samples = sorted(samples);
    out("b.samples", s.samples);
    out_f("b.cycle_p50_ms", percentile(&samples, 50.0));
    out_f("b.cycle_p95_ms", percentile(&samples, 95.0));
    Ok(())
}

/// (b) messages/s completed through send → read → delete over producers × consumers.
async fn pgmq_sweep(url: &str, s: &Settings) -> Res<()> {
    let pgmq = pgmq_client(url)?;
    let mut admin = PgConnection::connect(url).await?;
    out("b.sweep_seconds", s.sweep_seconds);
    out("b.sweep_warmup_seconds", s.sweep_warmup_seconds);
    out("b.sweep_backlog_per_consumer", BACKLOG_PER_CONSUMER);
    out("b.sweep_empty_read_pause_ms", EMPTY_READ_PAUSE.as_millis());
    let mut best: Option<(f64, usize, usize)> = None;
    for &(producers, consumers) in &s.sweep {
        fresh_queue(&pgmq, &mut admin).await?;
        settle(&mut admin).await?;
        out_load(&format!("b_{producers}x{consumers}"));
        let rate = sweep_one(&pgmq, url, producers, consumers, s).await?;
        println!("# pgmq {producers} producers x {consumers} consumers: {rate:.0} msg/s completed");
        out(
            &format!("b.sweep.{producers}x{consumers}_msg_per_s"),
            format!("{rate:.0}"),
        );
        let better = match best {
            Some((b, _, _)) => rate > b,
            None => true,
        };
        if better {
            best = Some((rate, producers, consumers));
        }
    }
    pgmq.drop_queue_with_cxn(QUEUE, &mut admin).await?;
    if let Some((rate, p, c)) = best {
        out("b.best_msg_per_s", format!("{rate:.0}"));
        out("b.best_config", format!("{p}x{c}"));
    }
    Ok(())
}

async fn sweep_one(
    pgmq: &PGMQueueExt,
    url: &str,
    producers: usize,
    consumers: usize,
    s: &Settings,
) -> Res<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let cap = BACKLOG_PER_CONSUMER * consumers as u64;
    let mut workers = Vec::new();
    for _ in 0..producers {
        let (pgmq, stop, sent, done) = (pgmq.clone(), stop.clone(), sent.clone(), done.clone());
        let mut conn = PgConnection::connect(url).await?;
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if sent.load(Ordering::Relaxed) >= done.load(Ordering::Relaxed) + cap {
                    tokio::time::sleep(EMPTY_READ_PAUSE).await;
                    continue;
                }
                let i = sent.fetch_add(1, Ordering::Relaxed);
                pgmq.send_with_cxn(QUEUE, &message(i), &mut conn).await?;
            }
            Ok::<_, pgmq::PgmqError>(())
        }));
    }
    for _ in 0..consumers {
        let (pgmq, stop, done) = (pgmq.clone(), stop.clone(), done.clone());
        let mut conn = PgConnection::connect(url).await?;
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match pgmq.read_with_cxn::<_, Value>(QUEUE, VT, &mut conn).await? {
                    Some(m) => {
                        if pgmq.delete_with_cxn(QUEUE, m.msg_id, &mut conn).await? {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => tokio::time::sleep(EMPTY_READ_PAUSE).await,
                }
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(s.sweep_warmup_seconds)).await;
    let (from, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(s.sweep_seconds)).await;
    let (to, elapsed) = (done.load(Ordering::Relaxed), started.elapsed());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await??;
    }
    Ok((to - from) as f64 / elapsed.as_secs_f64())
}

fn engine(url: &str, namespaces: &[&str], s: &Settings) -> Res<Engine> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(Engine::start(EngineConfig {
        database_url: url.to_owned(),
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        template_paths: vec![root.join("templates")],
        concurrency: s.concurrency,
        pool_size: s.pool_size,
        ..EngineConfig::default()
    })?)
}

/// (f) The chain and the drain with Rust-native handlers.
fn native_handlers(rt: &tokio::runtime::Runtime, url: &str, s: &Settings) -> Res<()> {
    out("f.concurrency", s.concurrency);
    let mut conn = rt.block_on(PgConnection::connect(url))?;
    rt.block_on(settle(&mut conn))?;
    out_load("f_chain");
    chain(url, s)?;
    drain(rt, url, s)
}

/// When each chain's last handler returned, by task.
type LastDone = Arc<Mutex<HashMap<Uuid, Instant>>>;

fn chain(url: &str, s: &Settings) -> Res<()> {
    let last_done: LastDone = Arc::default();
    let recorder = last_done.clone();
    let handlers = HandlerMap::new()
        .register(
            "TaskerCore::Bench::ChainLastHandler",
            move |event: &StepEvent| {
                let outcome = square_of_parents(event);
                let at = Instant::now();
                recorder
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(event.ticket.task_uuid, at);
                outcome
            },
        )
        .fallback(square_of_parents);
    let engine = Arc::new(engine(url, &["bench_chain"], s)?);
    let executor = RustExecutor::spawn(&engine, s.concurrency, handlers);
    let (mut chain_ms, mut wait_ms) = (Vec::new(), Vec::new());
    for i in 0..s.warmup + s.chains {
        let started = Instant::now();
        let task = create_task(&engine, "bench_chain", "chain");
        wait_terminal(&engine, task);
        let returned = started.elapsed();
        let h = engine.handle();
        let status = engine.block_on(async move { h.task_status(task).await });
        if !matches!(status, Some(Ok(Some(TaskState::Complete)))) {
            return Err(format!("chain {task} did not complete: {status:?}").into());
        }
        let last = last_done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&task)
            .ok_or_else(|| format!("chain {task}: its last handler did not record"))?;
        if i >= s.warmup {
            chain_ms.push(ms(last - started));
            wait_ms.push(ms(returned));
        }
    }
    executor.stop();
    shutdown(engine);
    let (chain_ms, wait_ms) = (sorted(chain_ms), sorted(wait_ms));
    out("f.chains", s.chains);
    out("f.warmup", s.warmup);
    for p in [50.0, 95.0, 99.0] {
        out_f(&format!("f.chain_p{p}_ms"), percentile(&chain_ms, p));
    }
    out_f("f.wait_p50_ms", percentile(&wait_ms, 50.0));
    Ok(())
}

fn shutdown(engine: Arc<Engine>) {
    engine.shutdown(Duration::from_secs(10));
}

/// No-op tasks of bench_noop still pending or in progress (every earlier phase's are done).
async fn unfinished_noops(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM tasker.tasks WHERE namespace = 'bench_noop' \
         AND status IN ('pending', 'in_progress')",
    )
    .fetch_one(conn)
    .await
}

fn drain(rt: &tokio::runtime::Runtime, url: &str, s: &Settings) -> Res<()> {
    let mut monitor = rt.block_on(PgConnection::connect(url))?;
    // The backlog, created by a client-only engine (BACKLOG_THREADS threads, not timed).
    let client = Arc::new(engine(url, &[], s)?);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..BACKLOG_THREADS {
            let (client, share) = (&client, share(s.drain_tasks, BACKLOG_THREADS, t));
            scope.spawn(move || {
                for _ in 0..share {
                    create_task(client, "bench_noop", "noop");
                }
            });
        }
    });
    let created_in = started.elapsed();
    shutdown(client);
    rt.block_on(settle(&mut monitor))?;
    out_load("f_drain");

    let returned = Arc::new(AtomicUsize::new(0));
    let counter = returned.clone();
    let handlers = HandlerMap::new().register(
        "TaskerCore::Bench::NoopHandler",
        move |event: &StepEvent| {
            let outcome = noop(event);
            counter.fetch_add(1, Ordering::Relaxed);
            outcome
        },
    );
    // From the worker's start to the last task seen finished in the database.
    let started = Instant::now();
    let worker = Arc::new(engine(url, &["bench_noop"], s)?);
    let executor = RustExecutor::spawn(&worker, s.concurrency, handlers);
    let deadline = started + Duration::from_secs(600);
    while returned.load(Ordering::Relaxed) < s.drain_tasks {
        if Instant::now() > deadline {
            return Err("the drain did not finish in 600 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    while rt.block_on(unfinished_noops(&mut monitor))? > 0 {
        if Instant::now() > deadline {
            return Err("the drain did not finish in 600 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    executor.stop();
    shutdown(worker);
    let not_complete: i64 = rt.block_on(
        sqlx::query_scalar(
            "SELECT count(*) FROM tasker.tasks WHERE namespace = 'bench_noop' \
             AND status <> 'complete'",
        )
        .fetch_one(&mut monitor),
    )?;
    out("f.drain_tasks", s.drain_tasks);
    out("f.backlog_threads", BACKLOG_THREADS);
    out(
        "f.backlog_create_per_s",
        format!("{:.0}", s.drain_tasks as f64 / created_in.as_secs_f64()),
    );
    out_f("f.drain_seconds", elapsed.as_secs_f64());
    out(
        "f.drain_steps_per_s",
        format!("{:.0}", s.drain_tasks as f64 / elapsed.as_secs_f64()),
    );
    out("f.drain_not_complete", not_complete);
    Ok(())
}
