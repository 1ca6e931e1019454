//! Outcomes that can never be stored, and claims that can never run again, end their step
//! permanently: nothing is retried without end and `attempts` never passes `max_attempts`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tasker_core::{EngineConfig, NextStep, TaskRequest};

fn one_step_template(ns: &str, timeout_seconds: u32, max_attempts: u32) -> String {
    format!(
        "name: single\nnamespace: {ns}\nversion: \"1.0.0\"\nsteps:\n  - name: only\n    \
         handler: {{ callable: Spec::Only }}\n    timeout_seconds: {timeout_seconds}\n    \
         retry: {{ max_attempts: {max_attempts}, backoff_base_ms: 10, max_backoff_ms: 20 }}\n"
    )
}

fn request(ns: &str) -> TaskRequest {
    task_request(ns, "single", json!({}))
}

fn next(engine: &tasker_core::Engine) -> tasker_core::Dispatch {
    match engine.next_step(Duration::from_secs(10)) {
        NextStep::Step(d) => *d,
        other => panic!("expected a step, got {other:?}"),
    }
}

/// A result PostgreSQL refuses (a NUL byte in jsonb: SQLSTATE 22P05) is a permanent failure
/// of that outcome, recorded once, not an apply retried forever.
#[test]
fn an_outcome_postgresql_refuses_fails_the_step_permanently() {
    let ns = unique_namespace("unstorable");
    let dir = template_dir(&[("t.yaml", one_step_template(&ns, 30, 3))]);
    let engine = start(vec![ns.clone()], dir, 2);
    let created = create(&engine, request(&ns));
    let dispatch = next(&engine);
    engine
        .complete(dispatch, success(json!({ "text": "a\u{0}b" })))
        .expect("handed back");
    let view = wait_for_status(&engine, created.task_uuid, "error");
    let step = &view.steps[0];
    assert_eq!(step.state, "error");
    assert_eq!(
        step.attempts, 1,
        "no second attempt for an unstorable outcome"
    );
    let error = step.error.as_ref().expect("the failure is recorded");
    assert_eq!(
        error["error_class"],
        "TaskerCore::Errors::InvalidResultError"
    );
    assert_eq!(error["error_code"], "unstorable_outcome");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL cannot store"),
        "{error}"
    );
    engine.shutdown(Duration::from_secs(5));
}

/// A claim that expires on the last attempt (the process died mid-step) fails the step with
/// a recorded reason instead of running it an extra time.
#[test]
fn a_claim_expiring_on_the_last_attempt_fails_the_step() {
    let ns = unique_namespace("exhausted");
    let dir = template_dir(&[("t.yaml", one_step_template(&ns, 1, 1))]);
    migrate();
    let engine = tasker_core::Engine::start(EngineConfig {
        database_url: database_url(),
        namespaces: vec![ns.clone()],
        template_paths: vec![dir],
        concurrency: 2,
        poll_interval: Duration::from_millis(100),
        claim_grace: Duration::from_secs(1),
        ..EngineConfig::default()
    })
    .expect("engine starts");
    let created = create(&engine, request(&ns));
    // Taken and never handed back, as by a process killed mid-step.
    let abandoned = next(&engine);
    assert_eq!(abandoned.event.attempts, 1);
    let view = wait_for_status(&engine, created.task_uuid, "error");
    let step = &view.steps[0];
    assert_eq!(step.attempts, 1, "attempts never exceed max_attempts");
    let error = step.error.as_ref().expect("the failure is recorded");
    assert_eq!(error["error_code"], "claim_expired", "{error}");
    assert!(matches!(
        engine.next_step(Duration::from_millis(300)),
        NextStep::Timeout
    ));
    drop(abandoned);
    engine.shutdown(Duration::from_secs(5));
}
