//! The dashboard's read models (`store::dashboard`) on a fresh database each: exact and
//! estimated counts, the last hour's throughput, keyset pages and every filter.

use serde_json::json;
use sqlx::PgPool;
use tasker_core::store::dashboard::{self, TaskFilter};
use tasker_core::store::DbPool;

/// Migrate and insert `n` tasks of one template (statuses cycling through three), one second
/// apart, the newest last.
async fn seed(pool: &PgPool, n: i32) {
    tasker_core::store::migrate::migrate(pool)
        .await
        .expect("migrations");
    sqlx::query("INSERT INTO tasker.task_namespaces (name) VALUES ('dash')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tasker.named_tasks (namespace, name, version, template) \
         VALUES ('dash', 'flow', '1.0.0', '{}'), ('dash', 'flow', '2.0.0', '{}')",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tasker.tasks (task_uuid, named_task_id, namespace, status, context, \
                                   correlation_id, idempotency_key, created_at) \
         SELECT gen_random_uuid(), 1 + (i % 2), 'dash', \
                (ARRAY['complete', 'error', 'pending'])[1 + i % 3], \
                jsonb_build_object('order_id', i, 'customer', jsonb_build_object('tier', \
                    CASE WHEN i % 5 = 0 THEN 'gold' ELSE 'basic' END)), \
                gen_random_uuid(), 'key-' || i, \
                timestamptz '2026-12-01 00:00:00+00' + i * interval '1 second' \
         FROM generate_series(1, $1) AS i",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

fn count(c: &dashboard::Counts, state: &str) -> i64 {
    c.states
        .iter()
        .find(|s| s.state == state)
        .map_or(0, |s| s.count)
}

#[sqlx::test(migrations = false)]
async fn counts_are_exact_when_small_and_estimates_when_large(pool: PgPool) {
    seed(&pool, 30).await;
    let exact = dashboard::overview(&DbPool::direct(pool.clone()))
        .await
        .unwrap();
    assert!(exact.tasks.exact);
    assert_eq!(exact.tasks.total, 30);
    assert_eq!(count(&exact.tasks, "error"), 10);
    assert_eq!(exact.namespaces, vec!["dash".to_string()]);
    assert_eq!(
        exact.throughput.len(),
        60,
        "one entry per minute, zeros included"
    );

    // The planner's statistics of a large table: its most common values scaled to reltuples.
    sqlx::query("ANALYZE tasker.tasks")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE pg_class SET reltuples = 3000000 WHERE oid = 'tasker.tasks'::regclass")
        .execute(&pool)
        .await
        .unwrap();
    let estimated = dashboard::overview(&DbPool::direct(pool.clone()))
        .await
        .unwrap();
    assert!(!estimated.tasks.exact);
    assert_eq!(estimated.tasks.total, 3_000_000);
    assert_eq!(count(&estimated.tasks, "error"), 1_000_000);
    assert!(estimated.steps.exact, "the step table is still small");
}

#[sqlx::test(migrations = false)]
async fn throughput_counts_finished_steps_per_minute(pool: PgPool) {
    seed(&pool, 1).await;
    sqlx::query(
        "INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, created_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'in_progress', s, now() - interval '1 minute' \
         FROM unnest(ARRAY['complete', 'complete', 'error', 'enqueued']) AS s \
         UNION ALL SELECT gen_random_uuid(), gen_random_uuid(), 'in_progress', 'complete', now() - interval '2 hours'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let o = dashboard::overview(&DbPool::direct(pool.clone()))
        .await
        .unwrap();
    let completed: i64 = o.throughput.iter().map(|m| m.completed).sum();
    let failed: i64 = o.throughput.iter().map(|m| m.failed).sum();
    assert_eq!(
        (completed, failed),
        (2, 1),
        "the last hour only, complete and error only"
    );
}

#[sqlx::test(migrations = false)]
async fn pages_by_keyset_newest_first_with_every_filter(pool: PgPool) {
    seed(&pool, 120).await;
    let all = TaskFilter::default();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            dashboard::list_tasks(&DbPool::direct(pool.clone()), &all, cursor.as_deref(), 50)
                .await
                .unwrap();
        seen.extend(page.tasks.iter().map(|t| (t.created_at, t.uuid)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 120);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, no task twice");

    let find = |filter: TaskFilter| {
        let pool = pool.clone();
        async move {
            dashboard::list_tasks(&DbPool::direct(pool.clone()), &filter, None, 200)
                .await
                .unwrap()
                .tasks
        }
    };
    let errors = find(TaskFilter {
        status: Some("error".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(errors.len(), 40);
    assert!(errors.iter().all(|t| t.status == "error"));
    let v2 = find(TaskFilter {
        name: Some("flow".into()),
        version: Some("2.0.0".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(v2.len(), 60);
    assert!(v2.iter().all(|t| t.version == "2.0.0"));
    let gold = find(TaskFilter {
        context: Some(json!({ "customer": { "tier": "gold" } })),
        ..Default::default()
    })
    .await;
    assert_eq!(gold.len(), 24);
    let one = find(TaskFilter {
        context: Some(json!({ "order_id": 42 })),
        idempotency_key: Some("key-42".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(one.len(), 1);
    let window = find(TaskFilter {
        created_from: Some(dashboard::parse_time("from", "2026-12-01T00:00:10Z").unwrap()),
        created_to: Some(dashboard::parse_time("to", "2026-12-01T00:00:20+00:00").unwrap()),
        ..Default::default()
    })
    .await;
    assert_eq!(window.len(), 10, "from inclusive, to exclusive");
    let by_uuid = find(TaskFilter {
        task_uuid: Some(one[0].uuid),
        correlation_id: Some(one[0].correlation_id),
        namespace: Some("dash".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_uuid.len(), 1);

    assert!(
        dashboard::list_tasks(&DbPool::direct(pool.clone()), &all, Some("nope"), 10)
            .await
            .is_err()
    );
    assert!(dashboard::parse_time("from", "yesterday").is_err());
    let array = TaskFilter {
        context: Some(json!([1])),
        ..Default::default()
    };
    assert!(
        dashboard::list_tasks(&DbPool::direct(pool.clone()), &array, None, 10)
            .await
            .is_err()
    );
}
