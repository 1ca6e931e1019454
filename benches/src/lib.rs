//! Shared pieces of the benchmarks: percentiles, the example workflows' arithmetic as a Rust
//! handler, and task creation / waiting on an engine.

use std::time::Duration;

use serde_json::Value;
use tasker_core::{Engine, StepEvent, StepOutcome, TaskRequest};
use uuid::Uuid;

/// p-th percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The example DAGs' rule in Rust: a root squares `even_number`; other steps square the
/// product of their parents' results.
pub fn square_of_parents(event: &StepEvent) -> StepOutcome {
    let as_u128 = |v: &Value| v.to_string().parse::<u128>().unwrap_or(0);
    let base: u128 = if event.parent_names.is_empty() {
        event.context.get("even_number").map(as_u128).unwrap_or(0)
    } else {
        event
            .parent_names
            .iter()
            .map(|p| event.dependency_result(p).map(as_u128).unwrap_or(0))
            .product()
    };
    let squared = base.saturating_mul(base);
    StepOutcome::Success {
        result: serde_json::from_str(&squared.to_string()).unwrap_or(Value::Null),
        metadata: Value::Object(Default::default()),
    }
}

/// Create a task of the template `namespace`/`name` version 1.0.0 with the example DAGs'
/// context (`{"even_number": 2}`); panics when creation fails.
pub fn create_task(engine: &Engine, namespace: &str, name: &str) -> Uuid {
    let h = engine.handle();
    let req = TaskRequest {
        namespace: namespace.into(),
        name: name.into(),
        version: "1.0.0".into(),
        context: serde_json::json!({ "even_number": 2 }),
        correlation_id: None,
        parent_correlation_id: None,
        idempotency_key: None,
        priority: 0,
        traceparent: None,
        run_at: None,
        flow: None,
    };
    match engine.block_on(async move { h.create_task(req).await }) {
        Some(Ok(t)) => t.task_uuid,
        other => panic!("create_task failed: {other:?}"),
    }
}

/// Block until the task is complete, error or cancelled (woken by its finalization, re-checked
/// every 200 ms).
pub fn wait_terminal(engine: &Engine, task: Uuid) {
    let h = engine.handle();
    let waited = engine.block_on(async move { h.wait_for(task, Duration::from_secs(600)).await });
    assert!(
        matches!(waited, Some(Ok(tasker_core::TaskWait::Finished(_)))),
        "task {task} did not finish: {waited:?}"
    );
}

/// A handler that does nothing.
pub fn noop(_event: &StepEvent) -> StepOutcome {
    StepOutcome::Success {
        result: Value::Object(Default::default()),
        metadata: Value::Object(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
    }
}

/// The hot-path SQL as the engine issues it, for the SQL benchmarks.
pub mod sql {
    use tasker_core::{Engine, EngineConfig};
    use uuid::Uuid;

    /// An engine (no namespaces served) on DATABASE_URL, migrated, with the templates in
    /// `template_dir`; None (and a note) when DATABASE_URL is not set.
    pub fn engine(bench: &str, template_dir: std::path::PathBuf) -> Option<Engine> {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("{bench} bench: DATABASE_URL is not set; nothing measured");
            return None;
        };
        tasker_core::engine::migrate(&url).expect("migrations");
        Some(
            Engine::start(EngineConfig {
                database_url: url,
                template_paths: vec![template_dir],
                ..EngineConfig::default()
            })
            .expect("engine"),
        )
    }

    /// A step claimed by [`claim_next`], ready for [`apply_success`].
    pub struct Claimed {
        pub task: Uuid,
        pub step: Uuid,
        pub token: Uuid,
        pub msg_id: i64,
    }

    /// Read and claim the next claimable step, as the engine's pollers do
    /// (`tasker.claim_steps`, one message; stale messages are archived on the way).
    pub async fn claim_next(pool: &sqlx::PgPool, namespace: &str) -> Option<Claimed> {
        loop {
            type Row = (String, i64, Option<Uuid>, Option<Uuid>, Option<Uuid>);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT kind, msg_id, task_uuid, step_uuid, token \
                 FROM tasker.claim_steps($1, 1, 'bench', 30, 30, '{}', '{}', 2)",
            )
            .bind(format!("tasker_ns_{namespace}"))
            .fetch_all(pool)
            .await
            .ok()?;
            if rows.is_empty() {
                return None;
            }
            if let Some((_, msg_id, Some(task), Some(step), Some(token))) =
                rows.into_iter().find(|r| r.0 == "claimed")
            {
                return Some(Claimed {
                    task,
                    step,
                    token,
                    msg_id,
                });
            }
        }
    }

    /// The SQL that applies one success through `tasker.apply_step_results` (settles the
    /// message, releases children, sending their messages, and finalizes the task when it was
    /// the last step), with $1 task, $2 step, $3 token, $4 queue, $5 msg_id, $6 namespace.
    pub const APPLY_SUCCESS: &str = "SELECT * FROM tasker.apply_step_results(ARRAY[$1::uuid], \
         ARRAY[$2::uuid], ARRAY[$3::uuid], ARRAY[$4::text], ARRAY[$5::bigint], ARRAY[$6::text], \
         ARRAY['00000000-0000-0000-0000-000000000000'::uuid], ARRAY[0::smallint], ARRAY[true], \
         ARRAY['{\"ok\": true}'::jsonb], ARRAY['{}'::jsonb], ARRAY[NULL::jsonb], ARRAY[false], \
         ARRAY[0::float8], ARRAY[true], '{}'::text[], 0, '{}'::text[], 'bench', 30, 2000, 'bench')";

    /// Apply a success for a step claimed by [`claim_next`] ([`APPLY_SUCCESS`]).
    pub async fn apply_success(pool: &sqlx::PgPool, namespace: &str, c: &Claimed) {
        sqlx::query(APPLY_SUCCESS)
            .bind(c.task)
            .bind(c.step)
            .bind(c.token)
            .bind(format!("tasker_ns_{namespace}"))
            .bind(c.msg_id)
            .bind(namespace)
            .execute(pool)
            .await
            .expect("apply_step_results");
    }
}
