//! The step cycle's SQL functions, called directly, each on a fresh database of its own
//! (`#[sqlx::test]`, migrated by the library): every function and each of its outcome branches,
//! with the rows it leaves behind checked.

use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use uuid::Uuid;

const NS: &str = "sqlfn";
const QUEUE: &str = "tasker_ns_sqlfn";

/// Migrate, register one template and create its namespace queue (as an engine would).
async fn setup(pool: &PgPool) -> i64 {
    tasker_core::store::migrate::migrate(pool)
        .await
        .expect("migrations");
    sqlx::query("INSERT INTO tasker.task_namespaces (name) VALUES ($1)")
        .bind(NS)
        .execute(pool)
        .await
        .unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tasker.named_tasks (namespace, name, version, template) \
         VALUES ($1, 'diamond', '1.0.0', '{}') RETURNING named_task_id",
    )
    .bind(NS)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("SELECT pgmq.create($1)")
        .bind(QUEUE)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// A diamond: a → b, a → c, (b, c) → d.
struct Diamond {
    task: Uuid,
    steps: [Uuid; 4],
}

struct Claims<'a> {
    queues: &'a [&'a str],
    capacity: i32,
}

const NO_CLAIMS: Claims<'static> = Claims {
    queues: &[],
    capacity: 0,
};

async fn create(
    pool: &PgPool,
    named: i64,
    key: Option<&str>,
    max_attempts: i32,
    claims: &Claims<'_>,
    queue: &str,
) -> Result<(Diamond, Vec<sqlx::postgres::PgRow>), sqlx::Error> {
    create_at(pool, named, key, max_attempts, claims, queue, None).await
}

/// [`create`], its roots to start at `run_at` (None: at once).
async fn create_at(
    pool: &PgPool,
    named: i64,
    key: Option<&str>,
    max_attempts: i32,
    claims: &Claims<'_>,
    queue: &str,
    run_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(Diamond, Vec<sqlx::postgres::PgRow>), sqlx::Error> {
    let task = Uuid::now_v7();
    let steps = [
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    ];
    let rows = sqlx::query(
        "SELECT * FROM tasker.create_tasks($1, $2, $3, $4, $5::jsonb[], $6, $7, $8, $9, $10, $11, $12, \
           $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)",
    )
    .bind(vec![named])
    .bind(vec![NS])
    .bind(vec![queue])
    .bind(vec![task])
    .bind(vec![json!({"n": 1})])
    .bind(vec![Uuid::now_v7()])
    .bind(vec![None::<Uuid>])
    .bind(vec![key])
    .bind(vec![0i16])
    .bind(vec![None::<String>])
    .bind(vec![run_at])
    .bind(vec![1i32; 4])
    .bind(steps.to_vec())
    .bind(vec!["a", "b", "c", "d"])
    .bind(vec![0i32, 1, 2, 3])
    .bind(vec!["H"; 4])
    .bind(vec![max_attempts; 4])
    .bind(vec![true; 4])
    .bind(vec![10i32; 4])
    .bind(vec![1000i32; 4])
    .bind(vec![30i32; 4])
    .bind(vec![0i32, 1, 1, 2])
    .bind(vec!["", "a", "a", "a,b,c"])
    .bind(vec![None::<serde_json::Value>; 4])
    .bind(vec![1i32; 4])
    .bind(vec![steps[0], steps[0], steps[1], steps[2]])
    .bind(vec![steps[1], steps[2], steps[3], steps[3]])
    .bind(claims.queues)
    .bind(claims.capacity)
    .bind(Vec::<String>::new())
    .bind("w1")
    .bind(30i32)
    .bind(2000i32)
    .bind("test")
    .fetch_all(pool)
    .await?;
    Ok((Diamond { task, steps }, rows))
}

async fn state(pool: &PgPool, step: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM tasker.workflow_steps WHERE step_uuid = $1")
        .bind(step)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn status(pool: &PgPool, task: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM tasker.tasks WHERE task_uuid = $1")
        .bind(task)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn messages(pool: &PgPool, visible_only: bool) -> i64 {
    let sql = if visible_only {
        format!("SELECT count(*) FROM pgmq.q_{QUEUE} WHERE vt <= clock_timestamp()")
    } else {
        format!("SELECT count(*) FROM pgmq.q_{QUEUE}")
    };
    sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap()
}

/// `tasker.claim_steps` on the test queue: (kind, step, token, attempts, reason) per row.
async fn claim(
    pool: &PgPool,
    blocked: &[&str],
) -> Vec<(
    String,
    Option<Uuid>,
    Option<Uuid>,
    Option<i32>,
    Option<String>,
)> {
    sqlx::query(
        "SELECT kind, step_uuid, token, attempts, reason \
         FROM tasker.claim_steps($1, 10, 'w1', 30, 30, $2, '{}', 2)",
    )
    .bind(QUEUE)
    .bind(blocked)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        (
            r.get("kind"),
            r.get("step_uuid"),
            r.get("token"),
            r.get("attempts"),
            r.get("reason"),
        )
    })
    .collect()
}

/// An outcome for `tasker.apply_step_results`.
struct Outcome {
    task: Uuid,
    step: Uuid,
    token: Uuid,
    msg_id: Option<i64>,
    success: bool,
    retryable: bool,
}

/// Apply outcomes: (kind, step, outcome, step_state, enqueued_children, task_state) per row.
#[allow(clippy::type_complexity)]
async fn apply(
    pool: &PgPool,
    outcomes: &[Outcome],
    usable: bool,
    claims: &Claims<'_>,
) -> Vec<(
    String,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<String>,
)> {
    let n = outcomes.len();
    let error = json!({"error_class": "E", "message": "m"});
    sqlx::query(
        "SELECT kind, step_uuid, outcome, step_state, enqueued_children, task_state \
         FROM tasker.apply_step_results($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb[], $11::jsonb[], \
           $12::jsonb[], $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
    )
    .bind(outcomes.iter().map(|o| o.task).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.step).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.token).collect::<Vec<_>>())
    .bind(vec![QUEUE; n])
    .bind(outcomes.iter().map(|o| o.msg_id).collect::<Vec<_>>())
    .bind(vec![NS; n])
    .bind(vec![Uuid::nil(); n])
    .bind(vec![0i16; n])
    .bind(outcomes.iter().map(|o| o.success).collect::<Vec<_>>())
    .bind(
        outcomes
            .iter()
            .map(|o| if o.success { json!({"ok": 1}) } else { Value::Null })
            .collect::<Vec<_>>(),
    )
    .bind(vec![json!({}); n])
    .bind(
        outcomes
            .iter()
            .map(|o| if o.success { Value::Null } else { error.clone() })
            .collect::<Vec<_>>(),
    )
    .bind(outcomes.iter().map(|o| o.retryable).collect::<Vec<_>>())
    .bind(vec![50.0f64; n])
    .bind(vec![usable; n])
    .bind(claims.queues)
    .bind(claims.capacity)
    .bind(Vec::<String>::new())
    .bind("w1")
    .bind(30i32)
    .bind(2000i32)
    .bind("test")
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        (
            r.get("kind"),
            r.get("step_uuid"),
            r.get("outcome"),
            r.get("step_state"),
            r.get("enqueued_children"),
            r.get("task_state"),
        )
    })
    .collect()
}

/// Claim the given steps in one read and return (token, msg_id) of each.
async fn claim_steps(pool: &PgPool, steps: &[Uuid]) -> Vec<(Uuid, i64)> {
    let rows = claim(pool, &[]).await;
    let mut out = Vec::new();
    for &step in steps {
        let row = rows
            .iter()
            .find(|r| r.0 == "claimed" && r.1 == Some(step))
            .unwrap_or_else(|| panic!("step {step} claimed: {rows:?}"));
        let msg_id: i64 = sqlx::query_scalar(&format!(
            "SELECT msg_id FROM pgmq.q_{QUEUE} WHERE message->>'step_uuid' = $1"
        ))
        .bind(step.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((row.2.unwrap(), msg_id));
    }
    out
}

async fn claim_one(pool: &PgPool, step: Uuid) -> (Uuid, i64) {
    claim_steps(pool, &[step]).await[0]
}

fn success(d: &Diamond, i: usize, token: Uuid, msg_id: i64) -> Outcome {
    Outcome {
        task: d.task,
        step: d.steps[i],
        token,
        msg_id: Some(msg_id),
        success: true,
        retryable: false,
    }
}

#[sqlx::test(migrations = false)]
async fn next_task_state_is_one_rule(pool: PgPool) {
    setup(&pool).await;
    // (current, unfinished, active, failed) → next (NULL: unchanged)
    let cases = [
        ("in_progress", 0, 0, 0, Some("complete")),
        ("pending", 0, 0, 0, None),
        ("in_progress", 2, 1, 1, None),
        ("in_progress", 1, 0, 1, Some("error")),
        ("error", 1, 0, 1, None),
        ("error", 1, 1, 0, Some("in_progress")),
        ("pending", 3, 1, 0, Some("in_progress")),
        ("complete", 1, 1, 0, None),
        ("cancelled", 0, 0, 0, None),
    ];
    for (current, unfinished, active, failed, want) in cases {
        let got: Option<String> =
            sqlx::query_scalar("SELECT tasker.next_task_state($1, $2, $3, $4)")
                .bind(current)
                .bind(unfinished as i64)
                .bind(active as i64)
                .bind(failed as i64)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            got.as_deref(),
            want,
            "{current} {unfinished} {active} {failed}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn message_priority_is_total_over_any_json(pool: PgPool) {
    setup(&pool).await;
    for (message, want) in [
        (json!({"priority": 10}), "10"),
        (json!({"priority": -5}), "-5"),
        (json!({}), "0"),
        (json!({"priority": "high"}), "0"),
        (json!({"priority": 1e300}), "32767"),
        (json!({"priority": -1e300}), "-32768"),
        (json!([1, 2]), "0"),
        (json!("text"), "0"),
    ] {
        let got: String = sqlx::query_scalar("SELECT tasker.message_priority($1)::text")
            .bind(&message)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(got, want, "{message}");
    }
}

#[sqlx::test(migrations = false)]
async fn create_tasks_writes_the_task_and_sends_its_root_once_per_key(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, rows) = create(&pool, named, Some("k1"), 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let task_row = rows
        .iter()
        .find(|r| r.get::<String, _>("kind") == "task")
        .unwrap();
    assert!(task_row.get::<bool, _>("created"));
    assert_eq!(status(&pool, d.task).await, "in_progress");
    assert_eq!(state(&pool, d.steps[0]).await, "enqueued");
    assert_eq!(state(&pool, d.steps[3]).await, "pending");
    assert_eq!(messages(&pool, true).await, 1);
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = $1",
    )
    .bind(d.task)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(history, 5, "4 steps created, the root enqueued");

    // The same key again: the existing task, nothing new written or sent.
    let (_, again) = create(&pool, named, Some("k1"), 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let found = again
        .iter()
        .find(|r| r.get::<String, _>("kind") == "task")
        .unwrap();
    assert!(!found.get::<bool, _>("created"));
    assert_eq!(found.get::<Uuid, _>("task_uuid"), d.task);
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker.tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((tasks, messages(&pool, false).await), (1, 1));
}

#[sqlx::test(migrations = false)]
async fn create_tasks_claims_served_roots_and_hides_their_message(pool: PgPool) {
    let named = setup(&pool).await;
    let claims = Claims {
        queues: &[QUEUE],
        capacity: 1,
    };
    let (d, rows) = create(&pool, named, None, 3, &claims, QUEUE).await.unwrap();
    let claimed: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<String, _>("kind") == "claimed")
        .collect();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].get::<Uuid, _>("step_uuid"), d.steps[0]);
    assert_eq!(claimed[0].get::<i32, _>("attempts"), 1);
    assert_eq!(state(&pool, d.steps[0]).await, "in_progress");
    // Its message exists (a crash redelivers it) but shows only when the claim expires.
    assert_eq!(
        (messages(&pool, false).await, messages(&pool, true).await),
        (1, 0)
    );
}

#[sqlx::test(migrations = false)]
async fn create_tasks_holds_a_scheduled_tasks_roots_until_their_time(pool: PgPool) {
    let named = setup(&pool).await;
    let claims = Claims {
        queues: &[QUEUE],
        capacity: 4,
    };
    let at = chrono::Utc::now() + chrono::Duration::seconds(60);
    let (d, rows) = create_at(&pool, named, None, 3, &claims, QUEUE, Some(at))
        .await
        .unwrap();
    // Not claimed (even with free slots), not sent: waiting for its time as a retry would.
    assert!(rows.iter().all(|r| r.get::<String, _>("kind") == "task"));
    assert_eq!(messages(&pool, false).await, 0);
    assert_eq!(status(&pool, d.task).await, "in_progress");
    assert_eq!(state(&pool, d.steps[0]).await, "waiting_for_retry");
    assert_eq!(state(&pool, d.steps[1]).await, "pending");
    let (due, attempts): (chrono::DateTime<chrono::Utc>, i32) = sqlx::query_as(
        "SELECT next_retry_at, attempts FROM tasker.workflow_steps WHERE step_uuid = $1",
    )
    .bind(d.steps[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0);
    assert!(
        (due - at).num_milliseconds().abs() < 1,
        "next_retry_at is run_at"
    );
    let meta: Value = sqlx::query_scalar(
        "SELECT metadata FROM tasker.workflow_step_transitions WHERE step_uuid = $1 AND to_state = 'waiting_for_retry'",
    )
    .bind(d.steps[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(meta.get("scheduled_for").is_some(), "{meta}");

    // A run_at already passed starts at once, as without one.
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (now, _) = create_at(&pool, named, None, 3, &NO_CLAIMS, QUEUE, Some(past))
        .await
        .unwrap();
    assert_eq!(state(&pool, now.steps[0]).await, "enqueued");
    assert_eq!(messages(&pool, false).await, 1);
}

#[sqlx::test(migrations = false)]
async fn create_tasks_writes_nothing_when_the_queue_cannot_be_written(pool: PgPool) {
    let named = setup(&pool).await;
    let err = create(&pool, named, None, 3, &NO_CLAIMS, "tasker_ns_missing")
        .await
        .err()
        .expect("a missing queue table fails the call");
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("TQ001"), "{err}");
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker.tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tasks, 0);
}

#[sqlx::test(migrations = false)]
async fn claim_steps_claims_once_and_hides_the_message(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let rows = claim(&pool, &[]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1, rows[0].3),
        ("claimed", Some(d.steps[0]), Some(1))
    );
    assert!(rows[0].2.is_some(), "a claim token");
    assert_eq!(state(&pool, d.steps[0]).await, "in_progress");
    assert!(claim(&pool, &[]).await.is_empty(), "the message is hidden");
}

#[sqlx::test(migrations = false)]
async fn claim_steps_archives_what_is_not_a_live_step(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let unknown =
        json!({"task_uuid": d.task, "step_uuid": Uuid::now_v7(), "correlation_id": Uuid::nil()});
    for m in [
        json!("not an object"),
        json!({"step_uuid": "nope"}),
        unknown,
    ] {
        sqlx::query("SELECT pgmq.send($1, $2)")
            .bind(QUEUE)
            .bind(&m)
            .execute(&pool)
            .await
            .unwrap();
    }
    let rows = claim(&pool, &[]).await;
    let archived = rows.iter().filter(|r| r.0 == "archived").count();
    assert_eq!(archived, 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.0 != "archived" || r.4.is_some()),
        "each with a reason"
    );
    assert_eq!(rows.iter().filter(|r| r.0 == "claimed").count(), 1);
    let in_archive: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pgmq.a_{QUEUE} WHERE headers ? 'tasker_archive_reason'"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(in_archive, 3);
}

#[sqlx::test(migrations = false)]
async fn claim_steps_postpones_a_blocked_handler_without_an_attempt(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    // Messages written by the engine name their handler ("H"); this one was sent without it.
    sqlx::query(&format!(
        "UPDATE pgmq.q_{QUEUE} SET message = message || '{{\"handler\": \"H\"}}'"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let rows = claim(&pool, &["H"]).await;
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["postponed"]
    );
    assert_eq!(state(&pool, d.steps[0]).await, "enqueued");
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM tasker.workflow_steps WHERE step_uuid = $1")
            .bind(d.steps[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 0);
}

#[sqlx::test(migrations = false)]
async fn claim_steps_takes_over_an_expired_claim_and_reports_the_last_one(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 2, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let (first, _) = claim_one(&pool, d.steps[0]).await;
    let expire = |pool: PgPool, step: Uuid| async move {
        sqlx::query("UPDATE tasker.workflow_steps SET claim_expires_at = now() - interval '1 s' WHERE step_uuid = $1")
            .bind(step)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(&format!(
            "UPDATE pgmq.q_{QUEUE} SET vt = clock_timestamp() - interval '1 s'"
        ))
        .execute(&pool)
        .await
        .unwrap();
    };
    expire(pool.clone(), d.steps[0]).await;
    let (second, _) = claim_one(&pool, d.steps[0]).await;
    assert_ne!(first, second, "a new claim token");
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM tasker.workflow_steps WHERE step_uuid = $1")
            .bind(d.steps[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 2);
    // The last attempt's claim expires too: reported, left to fail_exhausted_claim.
    expire(pool.clone(), d.steps[0]).await;
    let rows = claim(&pool, &[]).await;
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["exhausted"]
    );
    let msg_id: i64 = sqlx::query_scalar(&format!("SELECT msg_id FROM pgmq.q_{QUEUE}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    let (failed, task_state): (bool, Option<String>) =
        sqlx::query_as("SELECT * FROM tasker.fail_exhausted_claim($1, $2, $3, $4, $5, 2000)")
            .bind(d.task)
            .bind(d.steps[0])
            .bind(QUEUE)
            .bind(NS)
            .bind(msg_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((failed, task_state.as_deref()), (true, Some("error")));
    assert_eq!(state(&pool, d.steps[0]).await, "error");
    assert_eq!(messages(&pool, false).await, 0, "its message settled");
    // A second call finds nothing to fail.
    let (again, _): (bool, Option<String>) =
        sqlx::query_as("SELECT * FROM tasker.fail_exhausted_claim($1, $2, $3, $4, $5, 2000)")
            .bind(d.task)
            .bind(d.steps[0])
            .bind(QUEUE)
            .bind(NS)
            .bind(msg_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!again);
}

#[sqlx::test(migrations = false)]
async fn apply_step_results_applies_only_the_current_claim_once(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let (token, msg) = claim_one(&pool, d.steps[0]).await;
    let stale = Outcome {
        token: Uuid::now_v7(),
        ..success(&d, 0, token, msg)
    };
    let rows = apply(&pool, &[stale], true, &NO_CLAIMS).await;
    assert_eq!(rows[0].2.as_deref(), Some("discarded"));
    assert_eq!(state(&pool, d.steps[0]).await, "in_progress");
    // The same outcome twice in one batch: applied once, both children released once each.
    let rows = apply(
        &pool,
        &[success(&d, 0, token, msg), success(&d, 0, token, msg)],
        true,
        &NO_CLAIMS,
    )
    .await;
    let outcomes: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "outcome")
        .map(|r| r.2.clone().unwrap())
        .collect();
    assert_eq!(outcomes, ["applied", "discarded"]);
    assert_eq!(rows[0].4, Some(2));
    assert_eq!(state(&pool, d.steps[0]).await, "complete");
    assert_eq!(
        (
            state(&pool, d.steps[1]).await,
            state(&pool, d.steps[2]).await
        ),
        ("enqueued".into(), "enqueued".into())
    );
    assert_eq!(
        messages(&pool, true).await,
        2,
        "the root's message deleted, two children sent"
    );
}

#[sqlx::test(migrations = false)]
async fn apply_step_results_releases_a_join_once_when_its_parents_finish_together(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let (t, m) = claim_one(&pool, d.steps[0]).await;
    apply(&pool, &[success(&d, 0, t, m)], true, &NO_CLAIMS).await;
    let both = claim_steps(&pool, &[d.steps[1], d.steps[2]]).await;
    let ((tb, mb), (tc, mc)) = (both[0], both[1]);
    let rows = apply(
        &pool,
        &[success(&d, 1, tb, mb), success(&d, 2, tc, mc)],
        true,
        &NO_CLAIMS,
    )
    .await;
    let released: i32 = rows
        .iter()
        .filter(|r| r.0 == "outcome")
        .map(|r| r.4.unwrap_or(0))
        .sum();
    assert_eq!(released, 1);
    assert_eq!(state(&pool, d.steps[3]).await, "enqueued");
    let pending: i32 = sqlx::query_scalar(
        "SELECT pending_parents FROM tasker.workflow_steps WHERE step_uuid = $1",
    )
    .bind(d.steps[3])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(pending, 0);
    assert_eq!(messages(&pool, false).await, 1, "one message for the join");
}

#[sqlx::test(migrations = false)]
async fn apply_step_results_retries_fails_and_finalizes(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 2, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let (t, m) = claim_one(&pool, d.steps[0]).await;
    let retry = Outcome {
        success: false,
        retryable: true,
        ..success(&d, 0, t, m)
    };
    let rows = apply(&pool, &[retry], true, &NO_CLAIMS).await;
    assert_eq!(rows[0].3.as_deref(), Some("waiting_for_retry"));
    let due: bool = sqlx::query_scalar(
        "SELECT next_retry_at > now() FROM tasker.workflow_steps WHERE step_uuid = $1",
    )
    .bind(d.steps[0])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(due);
    assert_eq!(status(&pool, d.task).await, "in_progress");
    // Released again (as the retry loop does), claimed, and failed on its last attempt.
    sqlx::query("UPDATE tasker.workflow_steps SET state = 'enqueued', next_retry_at = NULL WHERE step_uuid = $1")
        .bind(d.steps[0])
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "INSERT INTO pgmq.q_{QUEUE} (vt, message) VALUES (clock_timestamp(), $1)"
    ))
    .bind(json!({"task_uuid": d.task, "step_uuid": d.steps[0], "correlation_id": Uuid::nil()}))
    .execute(&pool)
    .await
    .unwrap();
    let (t, m) = claim_one(&pool, d.steps[0]).await;
    let last = Outcome {
        success: false,
        retryable: true,
        ..success(&d, 0, t, m)
    };
    let rows = apply(&pool, &[last], true, &NO_CLAIMS).await;
    assert_eq!(
        (rows[0].3.as_deref(), rows[0].5.as_deref()),
        (Some("error"), Some("error"))
    );
    assert_eq!(status(&pool, d.task).await, "error");
    let finished: bool = sqlx::query_scalar(
        "SELECT completed_at IS NOT NULL FROM tasker.tasks WHERE task_uuid = $1",
    )
    .bind(d.task)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(finished);
}

#[sqlx::test(migrations = false)]
async fn apply_step_results_claims_released_children_it_serves(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let (t, m) = claim_one(&pool, d.steps[0]).await;
    let claims = Claims {
        queues: &[QUEUE],
        capacity: 1,
    };
    let rows = apply(&pool, &[success(&d, 0, t, m)], true, &claims).await;
    let claimed: Vec<_> = rows.iter().filter(|r| r.0 == "claimed").collect();
    assert_eq!(claimed.len(), 1, "capacity 1 of the two released children");
    let fused = claimed[0].1.unwrap();
    assert_eq!(state(&pool, fused).await, "in_progress");
    // Both children have a message; only the unclaimed one's is visible.
    assert_eq!(
        (messages(&pool, false).await, messages(&pool, true).await),
        (2, 1)
    );
    let history: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions WHERE step_uuid = $1 AND metadata->>'fused' = 'true'",
    )
    .bind(fused)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(history, 1);
}

#[sqlx::test(migrations = false)]
async fn apply_step_results_keeps_outcomes_when_the_queue_is_not_written(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    let (t, m) = claim_one(&pool, d.steps[0]).await;
    let rows = apply(&pool, &[success(&d, 0, t, m)], false, &NO_CLAIMS).await;
    assert_eq!(rows[0].2.as_deref(), Some("applied"));
    assert_eq!(state(&pool, d.steps[0]).await, "complete");
    // The children are released without messages (the recovery loop sends them); the settled
    // message stays until the queue can be written.
    assert_eq!(state(&pool, d.steps[1]).await, "enqueued");
    assert_eq!(messages(&pool, false).await, 1);
}

#[sqlx::test(migrations = false)]
async fn release_children_and_finalize_tasks_serve_the_operator_path(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    for (i, s) in d.steps.iter().enumerate().take(3) {
        sqlx::query("UPDATE tasker.workflow_steps SET state = 'complete', results = $2 WHERE step_uuid = $1")
            .bind(s)
            .bind(json!({ "i": i }))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE tasker.workflow_steps SET pending_parents = 2 WHERE step_uuid = $1")
        .bind(d.steps[3])
        .execute(&pool)
        .await
        .unwrap();
    let released: Vec<Value> = sqlx::query_scalar(
        "SELECT message FROM tasker.release_children(ARRAY[$1, $2]::uuid[], ARRAY[$3]::uuid[], ARRAY[$4]::text[], \
           '{}', 0, '{}', NULL, 0)",
    )
    .bind(d.steps[1])
    .bind(d.steps[2])
    .bind(d.task)
    .bind(QUEUE)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0]["step_uuid"], json!(d.steps[3]));
    assert_eq!(state(&pool, d.steps[3]).await, "enqueued");
    // Unfinished work: no change. All done: complete, once.
    let none: Vec<String> =
        sqlx::query_scalar("SELECT status FROM tasker.finalize_tasks(ARRAY[$1]::uuid[])")
            .bind(d.task)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(none.is_empty());
    sqlx::query("UPDATE tasker.workflow_steps SET state = 'complete' WHERE step_uuid = $1")
        .bind(d.steps[3])
        .execute(&pool)
        .await
        .unwrap();
    let done: Vec<String> =
        sqlx::query_scalar("SELECT status FROM tasker.finalize_tasks(ARRAY[$1]::uuid[])")
            .bind(d.task)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(done, ["complete"]);
    let again: Vec<String> =
        sqlx::query_scalar("SELECT status FROM tasker.finalize_tasks(ARRAY[$1]::uuid[])")
            .bind(d.task)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(again.is_empty());
    // The join's dependency results: its ancestors by name, in template order.
    let deps: Value =
        sqlx::query_scalar("SELECT tasker.dependency_results($1, ARRAY['a', 'b', 'c'])")
            .bind(d.task)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        deps,
        json!([["a", {"i": 0}], ["b", {"i": 1}], ["c", {"i": 2}]])
    );
}

#[sqlx::test(migrations = false)]
async fn write_queue_contains_a_failure_in_its_subtransaction(pool: PgPool) {
    setup(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    let error: Option<String> = sqlx::query_scalar(
        "SELECT tasker.write_queue('tasker_ns_missing', 'missing', ARRAY['{}'::jsonb], NULL, 100)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(error.is_some_and(|e| e.contains("does not exist")));
    // The transaction is still usable, and a good write goes through.
    let ok: Option<String> =
        sqlx::query_scalar("SELECT tasker.write_queue($1, $2, ARRAY['{}'::jsonb], NULL, 100)")
            .bind(QUEUE)
            .bind(NS)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(ok, None);
    tx.commit().await.unwrap();
    assert_eq!(messages(&pool, false).await, 1);
}

#[sqlx::test(migrations = false)]
async fn transitions_are_appended_and_move_the_task(pool: PgPool) {
    let named = setup(&pool).await;
    let (d, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    sqlx::query("SELECT tasker.record_task_transition($1, 'in_progress', 'cancelled', '{\"reason\": \"x\"}')")
        .bind(d.task)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(status(&pool, d.task).await, "cancelled");
    sqlx::query("SELECT tasker.record_step_transition($1, $2, 'pending', 'cancelled', '{}')")
        .bind(d.steps[3])
        .bind(d.task)
        .execute(&pool)
        .await
        .unwrap();
    let last: String = sqlx::query_scalar(
        "SELECT to_state FROM tasker.workflow_step_transitions WHERE step_uuid = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(d.steps[3])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(last, "cancelled");
    let task_history: Vec<String> = sqlx::query_scalar(
        "SELECT to_state FROM tasker.task_transitions WHERE task_uuid = $1 ORDER BY id",
    )
    .bind(d.task)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(task_history.last().map(String::as_str), Some("cancelled"));
}

/// Three diamonds whose roots are under one concurrency limit (or `flow`).
async fn flowed_roots(pool: &PgPool, named: i64, flow: Value) -> Vec<Diamond> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(
            create(pool, named, None, 3, &NO_CLAIMS, QUEUE)
                .await
                .unwrap()
                .0,
        );
    }
    sqlx::query("UPDATE tasker.workflow_steps SET flow = $1 WHERE name = 'a'")
        .bind(&flow)
        .execute(pool)
        .await
        .unwrap();
    out
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = false)]
async fn admit_flow_holds_steps_over_a_concurrency_limit_and_a_freed_slot_wakes_one(pool: PgPool) {
    let named = setup(&pool).await;
    let tasks = flowed_roots(
        &pool,
        named,
        json!({"concurrency": {"key": "k", "limit": 1}}),
    )
    .await;
    let rows = claim(&pool, &[]).await;
    let claimed: Vec<_> = rows.iter().filter(|r| r.0 == "claimed").collect();
    let held: Vec<_> = rows.iter().filter(|r| r.0 == "postponed").collect();
    assert_eq!((claimed.len(), held.len()), (1, 2), "{rows:?}");
    assert!(held[0]
        .4
        .as_deref()
        .unwrap()
        .contains("concurrency limit of 1 reached for k"));
    // Held: enqueued, no attempt spent, hidden until the holder's claim expires, waiting.
    let first = tasks
        .iter()
        .find(|d| Some(d.steps[0]) == claimed[0].1)
        .unwrap();
    for d in tasks.iter().filter(|d| d.task != first.task) {
        assert_eq!(state(&pool, d.steps[0]).await, "enqueued");
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM tasker.workflow_steps WHERE name = 'a' AND attempts = 0"
        )
        .await,
        2
    );
    assert_eq!(messages(&pool, true).await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM tasker.concurrency_slots WHERE key = 'k'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM tasker.flow_waiters WHERE key = 'c:k'"
        )
        .await,
        2
    );

    // The holder's outcome frees its slot and makes the oldest waiter visible at once.
    let msg_id: i64 = sqlx::query_scalar(&format!(
        "SELECT msg_id FROM pgmq.q_{QUEUE} WHERE message->>'step_uuid' = $1"
    ))
    .bind(first.steps[0].to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    apply(
        &pool,
        &[success(first, 0, claimed[0].2.unwrap(), msg_id)],
        true,
        &NO_CLAIMS,
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM tasker.concurrency_slots").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM tasker.flow_waiters").await,
        1
    );
    // b and c of the finished root were released too: 2 visible children plus the woken root.
    assert_eq!(messages(&pool, true).await, 3);
    let rows = claim(&pool, &[]).await;
    assert_eq!(
        rows.iter().filter(|r| r.0 == "claimed").count(),
        3,
        "{rows:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn wake_waiters_drops_a_waiter_whose_message_is_gone_and_wakes_the_next(pool: PgPool) {
    let named = setup(&pool).await;
    flowed_roots(
        &pool,
        named,
        json!({"concurrency": {"key": "k", "limit": 1}}),
    )
    .await;
    claim(&pool, &[]).await;
    // The oldest waiter's message disappears (its step was finished elsewhere).
    let oldest: i64 = count(
        &pool,
        "SELECT msg_id FROM tasker.flow_waiters ORDER BY since LIMIT 1",
    )
    .await;
    sqlx::query(&format!("DELETE FROM pgmq.q_{QUEUE} WHERE msg_id = $1"))
        .bind(oldest)
        .execute(&pool)
        .await
        .unwrap();
    let woken: i32 = sqlx::query_scalar("SELECT tasker.wake_waiters(ARRAY['c:k'], ARRAY[1])")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(woken, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM tasker.flow_waiters").await,
        0
    );
    assert_eq!(messages(&pool, true).await, 1);
}

#[sqlx::test(migrations = false)]
async fn admit_flow_defers_steps_over_a_rate_limit_to_when_a_start_is_allowed(pool: PgPool) {
    let named = setup(&pool).await;
    flowed_roots(
        &pool,
        named,
        json!({"rate": {"key": "r", "limit": 2, "per": 60.0}}),
    )
    .await;
    let rows = claim(&pool, &[]).await;
    assert_eq!(
        rows.iter().filter(|r| r.0 == "claimed").count(),
        2,
        "{rows:?}"
    );
    let held: Vec<_> = rows.iter().filter(|r| r.0 == "postponed").collect();
    assert_eq!(held.len(), 1);
    assert!(held[0]
        .4
        .as_deref()
        .unwrap()
        .contains("rate limit of 2 per 60 s reached for r"));
    // Hidden until the oldest start leaves the window (60 s), not waiting on a wake-up.
    let hidden_for: f64 = sqlx::query_scalar(&format!(
        "SELECT extract(epoch FROM max(vt) - clock_timestamp())::float8 FROM pgmq.q_{QUEUE} \
          WHERE message->>'step_uuid' = $1"
    ))
    .bind(held[0].1.unwrap().to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!((58.0..=60.5).contains(&hidden_for), "{hidden_for}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM tasker.flow_waiters").await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT sum(n)::bigint FROM tasker.rate_starts WHERE key = 'r:r'"
        )
        .await,
        2
    );
}

#[sqlx::test(migrations = false)]
async fn rate_admit_and_acquire_rate_keep_every_window_within_the_limit(pool: PgPool) {
    tasker_core::store::migrate::migrate(&pool).await.unwrap();
    let row = sqlx::query("SELECT admitted, retry_at FROM tasker.rate_admit('x', 3, 60, 5)")
        .fetch_one(&pool)
        .await
        .unwrap();
    let retry: Vec<chrono::DateTime<chrono::Utc>> = row.get("retry_at");
    assert_eq!((row.get::<i32, _>("admitted"), retry.len()), (3, 2));
    // A lowered limit: nothing admitted, every refused one given a time (none lost).
    let row = sqlx::query("SELECT admitted, retry_at FROM tasker.rate_admit('x', 1, 60, 5)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("admitted"), 0);
    assert_eq!(
        row.get::<Vec<chrono::DateTime<chrono::Utc>>, _>("retry_at")
            .len(),
        3
    );
    let wait: f64 = sqlx::query_scalar("SELECT tasker.acquire_rate('y', 1, 30)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(wait, 0.0);
    let wait: f64 = sqlx::query_scalar("SELECT tasker.acquire_rate('y', 1, 30)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!((29.0..=30.0).contains(&wait), "{wait}");
}

#[sqlx::test(migrations = false)]
async fn a_paused_template_holds_its_claims_and_resume_wakes_them(pool: PgPool) {
    let named = setup(&pool).await;
    sqlx::query("INSERT INTO tasker.paused_templates (namespace, name) VALUES ($1, 'diamond')")
        .bind(NS)
        .execute(&pool)
        .await
        .unwrap();
    // Not claimed when created either (no fused claim while a template is paused).
    let claims = Claims {
        queues: &[QUEUE],
        capacity: 10,
    };
    let (d, rows) = create(&pool, named, None, 3, &claims, QUEUE).await.unwrap();
    assert!(rows.iter().all(|r| r.get::<String, _>("kind") == "task"));
    let rows = claim(&pool, &[]).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "postponed");
    assert!(
        rows[0].4.as_deref().unwrap().contains("is paused"),
        "{rows:?}"
    );
    assert_eq!(state(&pool, d.steps[0]).await, "enqueued");
    assert_eq!(messages(&pool, true).await, 0);
    let resumed: bool = sqlx::query_scalar("SELECT tasker.resume_template($1, 'diamond')")
        .bind(NS)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(resumed);
    assert_eq!(messages(&pool, true).await, 1);
    assert_eq!(claim(&pool, &[]).await[0].0, "claimed");
}

/// A created diamond, finished as `status` `age_days` ago (its steps complete, with a
/// transition each, as a finished task has).
async fn finished(pool: &PgPool, named: i64, status: &str, age_days: i32) -> Uuid {
    let (d, _) = create(pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    sqlx::query(
        "WITH s AS (UPDATE tasker.workflow_steps SET state = 'complete' WHERE task_uuid = $1 RETURNING step_uuid) \
         INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, to_state) \
         SELECT step_uuid, $1, 'complete' FROM s",
    )
    .bind(d.task)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE tasker.tasks SET status = $2, completed_at = now() - make_interval(days => $3) \
         WHERE task_uuid = $1",
    )
    .bind(d.task)
    .bind(status)
    .bind(age_days)
    .execute(pool)
    .await
    .unwrap();
    d.task
}

async fn rows_of(pool: &PgPool, task: Uuid) -> [i64; 4] {
    let one = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(task)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    [
        one("SELECT count(*) FROM tasker.tasks WHERE task_uuid = $1").await,
        one("SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = $1").await,
        one(
            "SELECT count(*) FROM tasker.workflow_step_edges e JOIN tasker.workflow_steps s \
             ON s.step_uuid = e.from_step_uuid WHERE s.task_uuid = $1",
        )
        .await,
        one(
            "SELECT (SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = $1) \
               + (SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = $1)",
        )
        .await,
    ]
}

#[sqlx::test(migrations = false)]
async fn purge_tasks_deletes_finished_tasks_past_their_window_and_nothing_else(pool: PgPool) {
    let named = setup(&pool).await;
    let old_done = finished(&pool, named, "complete", 8).await;
    let old_cancelled = finished(&pool, named, "cancelled", 8).await;
    let young_done = finished(&pool, named, "complete", 6).await;
    let old_error = finished(&pool, named, "error", 31).await;
    let young_error = finished(&pool, named, "error", 10).await;
    // Unfinished, however old: never a candidate.
    let (running, _) = create(&pool, named, None, 3, &NO_CLAIMS, QUEUE)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tasker.tasks SET created_at = now() - interval '90 days' WHERE task_uuid = $1",
    )
    .bind(running.task)
    .execute(&pool)
    .await
    .unwrap();
    let before = rows_of(&pool, old_done).await;
    assert_eq!(&before[..3], &[1, 4, 4]);
    let purge =
        "SELECT tasks, steps, transitions FROM tasker.purge_tasks(now() - interval '7 days', \
                 now() - interval '30 days', $1)";
    // A limit of 1 takes one task of each kind per call.
    let first: (i64, i64, i64) = sqlx::query_as(purge)
        .bind(1)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((first.0, first.1), (2, 8));
    let second: (i64, i64, i64) = sqlx::query_as(purge)
        .bind(1)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((second.0, second.1), (1, 4));
    let third: (i64, i64, i64) = sqlx::query_as(purge)
        .bind(1)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(third, (0, 0, 0));
    assert_eq!(first.2 + second.2, 3 * before[3]);
    for gone in [old_done, old_cancelled, old_error] {
        assert_eq!(rows_of(&pool, gone).await, [0, 0, 0, 0]);
    }
    for kept in [young_done, young_error, running.task] {
        assert_eq!(rows_of(&pool, kept).await[..3], [1, 4, 4]);
    }
    // NULL keeps a kind: errored tasks stay whatever their age.
    let older_error = finished(&pool, named, "error", 400).await;
    let none: (i64, i64, i64) =
        sqlx::query_as("SELECT * FROM tasker.purge_tasks(now(), NULL, 100)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(none.0, 1); // the young complete one; no errored one, however old
    assert_eq!(rows_of(&pool, older_error).await[0], 1);
}

#[sqlx::test(migrations = false)]
async fn purge_tasks_skips_a_task_another_transaction_holds(pool: PgPool) {
    let named = setup(&pool).await;
    let held = finished(&pool, named, "complete", 8).await;
    let free = finished(&pool, named, "complete", 8).await;
    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tasker.tasks WHERE task_uuid = $1 FOR UPDATE")
        .bind(held)
        .execute(&mut *other)
        .await
        .unwrap();
    let purged: (i64, i64, i64) =
        sqlx::query_as("SELECT * FROM tasker.purge_tasks(now() - interval '7 days', NULL, 10)")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(purged.0, 1);
    assert_eq!(rows_of(&pool, free).await[0], 0);
    other.rollback().await.unwrap();
    assert_eq!(rows_of(&pool, held).await[0], 1);
}

#[sqlx::test(migrations = false)]
async fn purge_archive_deletes_old_archived_messages_of_tasker_queues_only(pool: PgPool) {
    setup(&pool).await;
    sqlx::query("SELECT pgmq.create('someone_elses')")
        .execute(&pool)
        .await
        .unwrap();
    for queue in [QUEUE, "someone_elses"] {
        for _ in 0..3 {
            sqlx::query("SELECT pgmq.archive($1, (SELECT pgmq.send($1, '{}'::jsonb)))")
                .bind(queue)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(&format!(
            "UPDATE pgmq.a_{queue} SET archived_at = now() - interval '8 days' \
             WHERE msg_id IN (SELECT msg_id FROM pgmq.a_{queue} ORDER BY msg_id LIMIT 2)"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT * FROM tasker.purge_archive(now() - interval '7 days', 1)")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(QUEUE.to_owned(), 1)]);
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT * FROM tasker.purge_archive(now() - interval '7 days', 10)")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![(QUEUE.to_owned(), 1)]);
    assert_eq!(
        count(&pool, &format!("SELECT count(*) FROM pgmq.a_{QUEUE}")).await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM pgmq.a_someone_elses").await,
        3
    );
}

#[sqlx::test(migrations = false)]
async fn take_lease_is_held_by_one_until_it_expires(pool: PgPool) {
    setup(&pool).await;
    let take = |holder: &'static str, secs: f64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT tasker.take_lease('m', $1, $2)")
                .bind(holder)
                .bind(secs)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(take("a", 60.0).await);
    assert!(!take("b", 60.0).await);
    assert!(take("a", 60.0).await); // its holder extends it
    sqlx::query("UPDATE tasker.leases SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(take("b", 60.0).await); // expired: taken over
    assert!(!take("a", 60.0).await);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM tasker.leases WHERE holder = 'b'"
        )
        .await,
        1
    );
}
