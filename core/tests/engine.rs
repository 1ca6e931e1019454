//! The engine end to end on a real PostgreSQL, with a Rust executor standing in for Ruby.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tasker_core::{FailureKind, StepFailure, StepOutcome, TaskRequest, TaskState};

fn linear_template(ns: &str) -> String {
    let mut t =
        format!("name: mathematical_sequence\nnamespace: {ns}\nversion: \"1.0.0\"\nsteps:\n");
    for i in 1..=4 {
        t.push_str(&format!(
            "  - name: linear_step_{i}\n    handler: {{ callable: Linear::Step{i} }}\n"
        ));
        if i > 1 {
            t.push_str(&format!("    dependencies: [linear_step_{}]\n", i - 1));
        }
    }
    t
}

fn request(ns: &str, context: Value) -> TaskRequest {
    task_request(ns, "mathematical_sequence", context)
}

/// Square the parent's result (or the input for the first step), as an exact big integer.
fn square_step(ev: &tasker_core::StepEvent) -> StepOutcome {
    let n: u128 = match ev
        .dependency_results
        .iter()
        .max_by_key(|(name, _)| name.clone())
    {
        Some((_, v)) => v.to_string().parse().unwrap(),
        None => ev.context["even_number"].to_string().parse().unwrap(),
    };
    let parent_name = format!(
        "linear_step_{}",
        ev.step_name[12..].parse::<u32>().unwrap() - 1
    );
    if ev.step_name.as_ref() != "linear_step_1" {
        assert!(ev.dependency_result(&parent_name).is_some());
    }
    let sq = n * n;
    success(serde_json::from_str(&sq.to_string()).unwrap())
}

#[test]
fn migrating_twice_is_a_no_op() {
    migrate();
    migrate();
}

#[test]
fn linear_workflow_runs_to_completion_with_history() {
    let ns = unique_namespace("lin");
    let dir = template_dir(&[("linear.yaml", linear_template(&ns))]);
    let engine = start(vec![ns.clone()], dir, 2);
    let exec = Executor::spawn(&engine, 2, square_step);

    let handle = engine.handle();
    let created = engine
        .block_on({
            let h = handle.clone();
            let req = request(&ns, json!({ "even_number": 6 }));
            async move { h.create_task(req).await }
        })
        .unwrap()
        .unwrap();
    assert!(created.created);
    assert_eq!(created.correlation_id.get_version_num(), 7);

    let waited = engine
        .block_on({
            let h = handle.clone();
            async move { h.wait_for(created.task_uuid, Duration::from_secs(20)).await }
        })
        .unwrap()
        .unwrap();
    assert_eq!(waited, tasker_core::TaskWait::Finished(TaskState::Complete));

    let view = engine
        .block_on({
            let h = handle.clone();
            async move { h.find_task(created.task_uuid).await }
        })
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(view.status, "complete");
    let results: Vec<String> = view
        .steps
        .iter()
        .map(|s| s.result.clone().unwrap().to_string())
        .collect();
    assert_eq!(results, ["36", "1296", "1679616", "2821109907456"]);
    for s in &view.steps {
        assert_eq!(s.state, "complete");
        assert_eq!(s.attempts, 1);
        let path: Vec<(Option<&str>, &str)> = s
            .transitions
            .iter()
            .map(|t| (t.from_state.as_deref(), t.to_state.as_str()))
            .collect();
        assert_eq!(
            path,
            [
                (None, "pending"),
                (Some("pending"), "enqueued"),
                (Some("enqueued"), "in_progress"),
                (Some("in_progress"), "complete")
            ]
        );
    }
    let task_path: Vec<&str> = view
        .transitions
        .iter()
        .map(|t| t.to_state.as_str())
        .collect();
    assert_eq!(task_path, ["pending", "in_progress", "complete"]);
    exec.stop();
    Arc::into_inner(engine)
        .unwrap()
        .shutdown(Duration::from_secs(5));
}

#[test]
fn retryable_failures_back_off_then_exhaust_into_error() {
    let ns = unique_namespace("retry");
    let tpl = format!(
        "name: flaky\nnamespace: {ns}\nversion: \"1.0.0\"\nsteps:\n  - name: only\n    handler: {{ callable: Flaky }}\n    retry: {{ max_attempts: 3, backoff_base_ms: 20, max_backoff_ms: 50 }}\n"
    );
    let dir = template_dir(&[("flaky.yaml", tpl)]);
    let engine = start(vec![ns.clone()], dir, 1);
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    let exec = Executor::spawn(&engine, 1, move |ev| {
        seen.fetch_add(1, Ordering::SeqCst);
        assert_eq!(ev.attempts as usize, seen.load(Ordering::SeqCst));
        StepOutcome::Failure(StepFailure {
            kind: FailureKind::Retryable,
            error_class: "RuntimeError".into(),
            message: format!("boom {}", ev.attempts),
            backtrace: vec!["handler.rb:1".into()],
            retry_after: None,
            fault: false,
            error_code: None,
            metadata: None,
        })
    });
    let mut req = request(&ns, json!({}));
    req.name = "flaky".into();
    let created = create(&engine, req);
    let view = wait_for_status(&engine, created.task_uuid, "error");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let step = &view.steps[0];
    assert_eq!(step.state, "error");
    assert_eq!(step.attempts, 3);
    assert_eq!(step.error.as_ref().unwrap()["message"], "boom 3");
    assert_eq!(step.error.as_ref().unwrap()["error_class"], "RuntimeError");
    let states: Vec<&str> = step
        .transitions
        .iter()
        .map(|t| t.to_state.as_str())
        .collect();
    assert_eq!(
        states,
        [
            "pending",
            "enqueued",
            "in_progress",
            "waiting_for_retry",
            "enqueued",
            "in_progress",
            "waiting_for_retry",
            "enqueued",
            "in_progress",
            "error"
        ]
    );
    exec.stop();
    Arc::into_inner(engine)
        .unwrap()
        .shutdown(Duration::from_secs(5));
}

#[test]
fn concurrent_creations_of_one_namespace_share_transactions_not_failures() {
    let ns = unique_namespace("lanes");
    let dir = template_dir(&[("linear.yaml", linear_template(&ns))]);
    let engine = start(vec![], dir, 1);
    let h = engine.handle();
    // Forty calls at once: while one transaction is in flight the others pile up and go
    // together; the one bad request must fail alone, and a repeated key make one task.
    let results = engine
        .block_on(async move {
            let calls: Vec<_> = (0..40)
                .map(|i| {
                    let h = h.clone();
                    let mut req = request(
                        &ns,
                        if i == 7 {
                            json!([1])
                        } else {
                            json!({ "i": i })
                        },
                    );
                    if i >= 30 {
                        req.idempotency_key = Some("shared-key".into());
                    }
                    tokio::spawn(async move { h.create_task(req).await })
                })
                .collect();
            let mut out = Vec::new();
            for call in calls {
                out.push(call.await.expect("the call ran"));
            }
            out
        })
        .unwrap();
    let mut uuids = std::collections::HashSet::new();
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (7, Err(e)) => assert!(
                e.to_string().contains("context must be a JSON object"),
                "{e}"
            ),
            (7, Ok(_)) => panic!("the bad request was accepted"),
            (_, Ok(c)) => {
                uuids.insert(c.task_uuid);
            }
            (_, Err(e)) => panic!("call {i} failed: {e}"),
        }
    }
    // 29 distinct tasks (0..30 without 7) and one for the ten calls sharing a key.
    assert_eq!(uuids.len(), 30);
    let created = results[30..]
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|c| c.created))
        .count();
    assert_eq!(created, 1);
    Arc::into_inner(engine)
        .unwrap()
        .shutdown(Duration::from_secs(5));
}

#[test]
fn bad_requests_are_refused_without_writing() {
    let ns = unique_namespace("bad");
    let dir = template_dir(&[("linear.yaml", linear_template(&ns))]);
    let engine = start(vec![], dir, 1);
    let h = engine.handle();
    let run = |req: TaskRequest| {
        let h = h.clone();
        engine
            .block_on(async move { h.create_task(req).await })
            .unwrap()
    };
    let e = run(request(&ns, json!([1, 2]))).unwrap_err();
    assert!(
        e.to_string().contains("context must be a JSON object"),
        "{e}"
    );
    let mut req = request(&ns, json!({}));
    req.version = "9.9.9".into();
    assert!(matches!(
        run(req).unwrap_err(),
        tasker_core::Error::TemplateNotFound { .. }
    ));
    let mut req = request(&ns, json!({}));
    req.idempotency_key = Some("order-1".into());
    let first = run(req.clone()).unwrap();
    let second = run(req).unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.task_uuid, second.task_uuid);
    // Nothing serves the namespace: a bounded wait ends with the task still running, and a
    // wait for a task that does not exist is refused.
    let wait = |task: uuid::Uuid| {
        let h = h.clone();
        engine
            .block_on(async move { h.wait_for(task, Duration::from_millis(300)).await })
            .unwrap()
    };
    let started = std::time::Instant::now();
    assert_eq!(
        wait(first.task_uuid).unwrap(),
        tasker_core::TaskWait::Running(first.status)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(matches!(
        wait(uuid::Uuid::now_v7()).unwrap_err(),
        tasker_core::Error::NotFound(_)
    ));
    Arc::into_inner(engine)
        .unwrap()
        .shutdown(Duration::from_secs(5));
}

#[test]
fn engines_starting_at_once_on_a_new_namespace_all_succeed() {
    let ns = unique_namespace("race");
    let dir = template_dir(&[("linear.yaml", linear_template(&ns))]);
    migrate();
    let starters: Vec<_> = (0..4)
        .map(|_| {
            let (dir, ns) = (dir.clone(), ns.clone());
            std::thread::spawn(move || {
                tasker_core::engine::migrate(&database_url())?;
                tasker_core::Engine::start(tasker_core::EngineConfig {
                    database_url: database_url(),
                    namespaces: vec![ns],
                    template_paths: vec![dir],
                    concurrency: 1,
                    ..tasker_core::EngineConfig::default()
                })
            })
        })
        .collect();
    for s in starters {
        let engine = s.join().unwrap().expect("every concurrent start succeeds");
        assert_eq!(engine.templates().len(), 1);
        engine.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn a_result_from_an_expired_claim_is_discarded() {
    let ns = unique_namespace("late");
    let tpl = format!(
        "name: one\nnamespace: {ns}\nversion: \"1.0.0\"\nsteps:\n  - name: only\n    handler: {{ callable: One }}\n"
    );
    let engine = start(vec![ns.clone()], template_dir(&[("one.yaml", tpl)]), 2);
    let h = engine.handle();
    let mut req = request(&ns, json!({}));
    req.name = "one".into();
    let created = create(&engine, req);
    let next = |engine: &tasker_core::Engine| match engine.next_step(Duration::from_secs(10)) {
        tasker_core::NextStep::Step(d) => *d,
        other => panic!("expected a step, got {other:?}"),
    };
    let first = next(&engine);
    assert_eq!(first.event.attempts, 1);

    // The first claim lapses (as if its process had died) and the message comes back.
    let queue_table = format!("pgmq.q_tasker_ns_{ns}");
    let step_uuid = first.event.ticket.step_uuid;
    engine
        .block_on({
            let pool = h.pool().clone();
            async move {
                sqlx::query("UPDATE tasker.workflow_steps SET claim_expires_at = now() - interval '1 second' WHERE step_uuid = $1")
                    .bind(step_uuid)
                    .execute(&pool)
                    .await?;
                sqlx::query(&format!("UPDATE {queue_table} SET vt = now()"))
                    .execute(&pool)
                    .await
            }
        })
        .unwrap()
        .unwrap();
    let second = next(&engine);
    assert_eq!(second.event.attempts, 2);
    assert_eq!(second.event.ticket.step_uuid, step_uuid);

    engine.complete(first, success(json!("late"))).unwrap();
    engine.complete(second, success(json!("fresh"))).unwrap();
    let view = wait_for_status(&engine, created.task_uuid, "complete");
    let step = &view.steps[0];
    assert_eq!(step.result, Some(json!("fresh")));
    let completions = step
        .transitions
        .iter()
        .filter(|t| t.to_state == "complete")
        .count();
    assert_eq!(completions, 1);
    Arc::into_inner(engine)
        .unwrap()
        .shutdown(Duration::from_secs(5));
}
