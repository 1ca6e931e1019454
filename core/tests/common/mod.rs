//! Helpers for integration tests on a real PostgreSQL (`DATABASE_URL`, set by `bin/test`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tasker_core::worker::{HandlerMap, RustExecutor};
use tasker_core::{Engine, EngineConfig, StepEvent, StepOutcome};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must point at a PostgreSQL database for the integration tests (bin/test sets it)",
    )
}

pub fn migrate() {
    tasker_core::engine::migrate(&database_url()).expect("migrations apply");
}

/// A namespace no other test uses.
pub fn unique_namespace(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..8])
}

/// Write templates into a fresh directory.
pub fn template_dir(files: &[(&str, String)]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tpl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    dir
}

pub fn start(namespaces: Vec<String>, dir: PathBuf, concurrency: usize) -> Arc<Engine> {
    migrate();
    Arc::new(
        Engine::start(EngineConfig {
            database_url: database_url(),
            namespaces,
            template_paths: vec![dir],
            concurrency,
            poll_interval: Duration::from_millis(100),
            ..EngineConfig::default()
        })
        .expect("engine starts"),
    )
}

/// Executor threads that run `handler` for every dispatched step until stopped.
pub struct Executor;

impl Executor {
    pub fn spawn<F>(engine: &Arc<Engine>, threads: usize, handler: F) -> RustExecutor
    where
        F: Fn(&StepEvent) -> StepOutcome + Send + Sync + 'static,
    {
        RustExecutor::spawn(engine, threads, HandlerMap::new().fallback(handler))
    }
}

pub fn success(result: Value) -> StepOutcome {
    StepOutcome::Success {
        result,
        metadata: Value::Object(Default::default()),
    }
}

/// Poll `f` until it returns Some or the deadline passes.
pub fn eventually<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A request for a task of template `name` (version 1.0.0) in `ns`, with defaults elsewhere.
pub fn task_request(ns: &str, name: &str, context: Value) -> tasker_core::TaskRequest {
    tasker_core::TaskRequest {
        namespace: ns.into(),
        name: name.into(),
        version: "1.0.0".into(),
        context,
        correlation_id: None,
        parent_correlation_id: None,
        idempotency_key: None,
        priority: 0,
        traceparent: None,
        run_at: None,
        flow: None,
    }
}

/// Create a task and return what create_task returned.
pub fn create(engine: &Engine, req: tasker_core::TaskRequest) -> tasker_core::CreatedTask {
    let h = engine.handle();
    engine
        .block_on(async move { h.create_task(req).await })
        .expect("the engine runs")
        .expect("the task is created")
}

/// Poll until the task has `status`; returns its view.
pub fn wait_for_status(
    engine: &Engine,
    task: uuid::Uuid,
    status: &str,
) -> tasker_core::store::snapshot::TaskView {
    eventually(Duration::from_secs(20), || {
        let h = engine.handle();
        let view = engine
            .block_on(async move { h.find_task(task).await })
            .expect("the engine runs")
            .expect("the task can be read")
            .expect("the task exists");
        (view.status == status).then_some(view)
    })
}
