//! Criterion micro-benchmarks of the boundary's Rust side: interning (hit and miss) and step
//! event construction, optimized (shared names) vs naive (every name copied).
//!
//!     cargo bench -p tasker-core-benches --bench boundary

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use tasker_core::messaging::queue::QueueName;
use tasker_core::orchestration::RegisteredTemplate;
use tasker_core::strings::StringCache;
use tasker_core::worker::{build_event, ClaimedRow};
use uuid::Uuid;

fn registered() -> RegisteredTemplate {
    let template = tasker_core::template::parse_str(
        "name: b\nnamespace: bench\nversion: \"1.0.0\"\nsteps:\n  - name: a\n    handler: { callable: A }\n  - name: b\n    handler: { callable: B }\n    dependencies: [a]\n",
        None,
    )
    .expect("template parses");
    RegisteredTemplate {
        named_task_id: 1,
        queue: QueueName::for_namespace("bench").expect("valid"),
        template,
    }
}

fn row() -> ClaimedRow {
    ClaimedRow {
        parent_trace: None,
        task_uuid: Uuid::nil(),
        step_uuid: Uuid::nil(),
        token: Uuid::nil(),
        msg_id: 1,
        correlation_id: Uuid::nil(),
        parent_correlation_id: None,
        priority: 0,
        step_name: "b".into(),
        attempts: 1,
        max_attempts: 3,
        timeout_seconds: 300,
        context: json!({ "order_id": 1 }),
        dependency_results: vec![("a".into(), json!({ "ok": true }))],
    }
}

fn interning(c: &mut Criterion) {
    let cache = StringCache::new(1024);
    cache.intern("linear_step_1");
    c.bench_function("intern hit", |b| {
        b.iter(|| cache.intern(black_box("linear_step_1")))
    });
    let mut i = 0u64;
    let names: Vec<String> = (0..4096).map(|n| format!("name_{n}")).collect();
    let small = StringCache::new(16);
    c.bench_function("intern miss (evicting)", |b| {
        b.iter(|| {
            i += 1;
            small.intern(black_box(&names[(i % 4096) as usize]))
        })
    });
}

fn events(c: &mut Criterion) {
    let reg = registered();
    let cache = StringCache::new(1024);
    c.bench_function("build_event optimized", |b| {
        b.iter_batched(
            row,
            |r| build_event(Some(&cache), &reg, &reg.queue, r),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("build_event naive", |b| {
        b.iter_batched(
            row,
            |r| build_event(None, &reg, &reg.queue, r),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, interning, events);
criterion_main!(benches);
