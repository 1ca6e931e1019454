//! Step handlers written in Rust, run on plain threads by [`RustExecutor`]: the native
//! counterpart of the Ruby worker (benchmarks compare the two; tests drive the engine with it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::event::{FailureKind, StepEvent, StepFailure, StepOutcome};
use crate::engine::{Engine, NextStep};

/// A step handler in Rust.
pub trait StepHandler: Send + Sync {
    /// Run the step and say how it went.
    fn call(&self, event: &StepEvent) -> StepOutcome;
}

impl<F> StepHandler for F
where
    F: Fn(&StepEvent) -> StepOutcome + Send + Sync,
{
    fn call(&self, event: &StepEvent) -> StepOutcome {
        self(event)
    }
}

/// Handlers by the class name templates give in `handler.callable`.
#[derive(Default, Clone)]
pub struct HandlerMap {
    handlers: HashMap<String, Arc<dyn StepHandler>>,
    fallback: Option<Arc<dyn StepHandler>>,
}

impl HandlerMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Run steps naming `callable` with `handler`.
    pub fn register(mut self, callable: &str, handler: impl StepHandler + 'static) -> Self {
        self.handlers.insert(callable.to_owned(), Arc::new(handler));
        self
    }

    /// Run every step with `handler` unless a more specific one is registered.
    pub fn fallback(mut self, handler: impl StepHandler + 'static) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }

    fn run(&self, event: &StepEvent) -> StepOutcome {
        match self
            .handlers
            .get(&*event.handler_class)
            .or(self.fallback.as_ref())
        {
            Some(h) => h.call(event),
            None => StepOutcome::Failure(StepFailure {
                kind: FailureKind::Permanent,
                error_class: "HandlerNotFound".into(),
                message: format!("no Rust handler for {}", event.handler_class),
                backtrace: Vec::new(),
                retry_after: None,
                fault: true,
                error_code: None,
                metadata: None,
            }),
        }
    }
}

/// Threads that take steps from an engine and run them with Rust handlers.
pub struct RustExecutor {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl RustExecutor {
    /// Start `threads` executor threads.
    pub fn spawn(engine: &Arc<Engine>, threads: usize, handlers: HandlerMap) -> RustExecutor {
        let stop = Arc::new(AtomicBool::new(false));
        let handlers = Arc::new(handlers);
        let threads = (0..threads)
            .map(|i| {
                let (engine, stop, handlers) = (engine.clone(), stop.clone(), handlers.clone());
                std::thread::Builder::new()
                    .name(format!("tasker-rust-worker-{i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match engine.next_step(Duration::from_millis(50)) {
                                NextStep::Step(d) => {
                                    let outcome = handlers.run(&d.event);
                                    if engine.complete(*d, outcome).is_err() {
                                        break;
                                    }
                                }
                                NextStep::Timeout => {}
                                NextStep::Closed => break,
                            }
                        }
                    })
                    .expect("spawning an executor thread")
            })
            .collect();
        RustExecutor { stop, threads }
    }

    /// Stop taking steps and join the threads (running handlers finish first).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
