//! `TaskerCore::Native::Bench`: a boundary harness without a database. It prepares claimed
//! rows (what the database would return) and turns them into step events through the same
//! `build_event` and wrapper the runtime uses, so `rake bench:memory` and the allocation
//! budget check in `bin/test` can count what one step costs at the boundary.

use std::sync::{Mutex, OnceLock};

use magnus::{function, prelude::*, Error, IntoValue, RModule, Ruby, Value};
use serde_json::json;
use tasker_core::messaging::queue::QueueName;
use tasker_core::orchestration::RegisteredTemplate;
use tasker_core::strings::StringCache;
use tasker_core::worker::{build_event, ClaimedRow};
use tasker_core::Dispatch;
use uuid::Uuid;

use crate::errors::{error, guarded};
use crate::step_event::RbStepEvent;

const TEMPLATE: &str = r#"
name: boundary
namespace: bench
version: "1.0.0"
steps:
  - name: fetch_order
    handler: { callable: TaskerCore::Bench::NoopHandler }
  - name: price_order
    handler: { callable: TaskerCore::Bench::NoopHandler }
    dependencies: [fetch_order]
  - name: charge_order
    handler: { callable: TaskerCore::Bench::NoopHandler, initialization: { gateway: test } }
    dependencies: [price_order]
"#;

struct Harness {
    reg: RegisteredTemplate,
    names: StringCache,
    rows: Mutex<Vec<ClaimedRow>>,
}

fn harness(ruby: &Ruby) -> Result<&'static Harness, Error> {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    if let Some(h) = HARNESS.get() {
        return Ok(h);
    }
    let template = tasker_core::template::parse_str(TEMPLATE, Some("bench"))
        .map_err(|e| crate::errors::to_ruby(ruby, e))?;
    let queue = QueueName::for_namespace(&template.namespace)
        .map_err(|e| crate::errors::to_ruby(ruby, e))?;
    Ok(HARNESS.get_or_init(|| Harness {
        reg: RegisteredTemplate {
            named_task_id: 0,
            template,
            queue,
        },
        names: StringCache::default(),
        rows: Mutex::new(Vec::new()),
    }))
}

/// What the claim query returns for the third step of an order workflow.
fn row() -> ClaimedRow {
    ClaimedRow {
        parent_trace: None,
        task_uuid: Uuid::now_v7(),
        step_uuid: Uuid::now_v7(),
        token: Uuid::now_v7(),
        msg_id: 1,
        correlation_id: Uuid::now_v7(),
        parent_correlation_id: None,
        priority: 0,
        step_name: "charge_order".into(),
        attempts: 1,
        max_attempts: 3,
        timeout_seconds: 300,
        context: json!({ "order_id": 4242, "customer": { "id": "c-17", "tier": "gold" },
                         "items": [{ "sku": "A1", "quantity": 2 }, { "sku": "B7", "quantity": 1 }] }),
        dependency_results: vec![
            ("fetch_order".into(), json!({ "found": true, "lines": 2 })),
            (
                "price_order".into(),
                json!({ "total": 121.5, "currency": "EUR" }),
            ),
        ],
    }
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let bench = native.define_module("Bench")?;
    bench.define_singleton_method("prepare", function!(prepare, 1))?;
    bench.define_singleton_method("next_event", function!(next_event, 1))?;
    bench.define_singleton_method("heap_stats", function!(heap_stats, 0))?;
    bench.define_singleton_method("cache_stats", function!(cache_stats, 0))?;
    let _ = ruby;
    Ok(())
}

guarded! {
/// Prepare `count` claimed rows (the database's part, not measured).
fn prepare(ruby: &Ruby, count: usize) -> Result<usize, Error> {
    let h = harness(ruby)?;
    let mut rows = h.rows.lock().unwrap_or_else(|e| e.into_inner());
    rows.reserve(count);
    rows.extend((0..count).map(|_| row()));
    Ok(rows.len())
}

/// Build the next prepared row into a step event, optimized (interned names, lazy values) or
/// naive (every name copied, fresh Ruby strings).
fn next_event(ruby: &Ruby, naive: bool) -> Result<Value, Error> {
    let h = harness(ruby)?;
    let row = h
        .rows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .ok_or_else(|| {
            error(
                ruby,
                "Error",
                "no prepared rows left: call Bench.prepare(n)",
            )
        })?;
    let names = if naive { None } else { Some(&h.names) };
    let event = build_event(names, &h.reg, &h.reg.queue, row);
    Ok(RbStepEvent::with_mode(Dispatch::detached(event), naive, None).into_value_with(ruby))
}

    /// [total allocations, total bytes] of the Rust heap since the profiler started, or nil
    /// when the extension was built without the `dhat-heap` feature.
    fn heap_stats(ruby: &Ruby) -> Result<Option<(u64, u64)>, Error> {
        let _ = ruby;
        Ok(heap_totals())
    }
}

/// [total allocations, total bytes] of the Rust heap since the profiler started, or nil when
/// the extension was built without the `dhat-heap` feature.
#[cfg(feature = "dhat-heap")]
fn heap_totals() -> Option<(u64, u64)> {
    static PROFILER: Mutex<Option<dhat::Profiler>> = Mutex::new(None);
    let mut p = PROFILER.lock().unwrap_or_else(|e| e.into_inner());
    if p.is_none() {
        *p = Some(dhat::Profiler::builder().testing().build());
    }
    let stats = dhat::HeapStats::get();
    Some((stats.total_blocks, stats.total_bytes))
}

#[cfg(not(feature = "dhat-heap"))]
fn heap_totals() -> Option<(u64, u64)> {
    None
}

guarded! {
/// [size, capacity, hits, misses, evictions] of the harness's string cache.
fn cache_stats(ruby: &Ruby) -> Result<(usize, usize, u64, u64, u64), Error> {
    let s = harness(ruby)?.names.stats();
    Ok((s.size, s.capacity, s.hits, s.misses, s.evictions))
}
}
