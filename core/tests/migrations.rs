//! The migrations on a database of their own: up, partly down, all the way down, up again —
//! each `.down.sql` undoes exactly its `.up.sql`, so the schema can be rebuilt from nothing.

mod common;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tasker_core::store::migrate::{migrate, rollback, MIGRATOR};

async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

async fn tasker_functions(pool: &PgPool) -> i64 {
    scalar_i64(
        pool,
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'tasker'",
    )
    .await
}

async fn tasker_tables(pool: &PgPool) -> i64 {
    scalar_i64(
        pool,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'tasker'",
    )
    .await
}

async fn requests_queue(pool: &PgPool) -> i64 {
    scalar_i64(
        pool,
        "SELECT count(*) FROM pgmq.meta WHERE queue_name = 'tasker_task_requests'",
    )
    .await
}

async fn applied(pool: &PgPool) -> i64 {
    scalar_i64(pool, "SELECT count(*) FROM _sqlx_migrations WHERE success").await
}

#[test]
fn migrations_go_up_down_and_up_again() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base: PgConnectOptions = common::database_url().parse().expect("DATABASE_URL");
        let name = format!("tasker_roundtrip_{}", std::process::id());
        let mut admin = PgConnection::connect_with(&base).await.expect("connect");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(base.clone().database(&name))
            .await
            .expect("connect to the scratch database");
        let versions: Vec<i64> = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        let known = versions.len() as i64;

        migrate(&pool).await.expect("up");
        assert_eq!(applied(&pool).await, known);
        let functions = tasker_functions(&pool).await;
        let tables = tasker_tables(&pool).await;
        assert!(functions >= 13, "the step cycle's functions exist ({functions})");
        assert_eq!(requests_queue(&pool).await, 1);
        // A namespace queue with its priority index, as an engine makes it: the down path must
        // not be blocked by it.
        sqlx::query("SELECT pgmq.create('tasker_ns_roundtrip')")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "CREATE INDEX q_tasker_ns_roundtrip_by_priority ON pgmq.q_tasker_ns_roundtrip \
             (tasker.message_priority(message) DESC, msg_id)",
        )
        .execute(&pool)
        .await
        .unwrap();

        // One at a time, newest first, down to the step cycle's: each down path reverts only
        // its own migration (the step cycle's functions go with the step cycle's, the tables
        // of the base schema and the requests queue stay).
        let step_cycle = MIGRATOR
            .iter()
            .find(|m| m.description.contains("step cycle"))
            .map(|m| m.version)
            .expect("the step cycle's migration");
        let mut newest = versions.len() - 1;
        let mut left = functions;
        while versions[newest] >= step_cycle {
            rollback(&pool, versions[newest - 1]).await.expect("down one");
            assert_eq!(applied(&pool).await, newest as i64);
            let now = tasker_functions(&pool).await;
            if versions[newest] == step_cycle {
                assert_eq!(now, 0, "after reverting the step cycle");
            } else {
                // A newer migration takes only its own functions (flow control's) with it.
                assert!((13..=left).contains(&now), "after reverting {}: {now}", versions[newest]);
            }
            left = now;
            newest -= 1;
        }
        assert!(tasker_tables(&pool).await < tables, "the newer migrations' tables are gone");
        assert_eq!(requests_queue(&pool).await, 1);

        // All of them: nothing of tasker is left; pgmq and its other queues stay.
        rollback(&pool, 0).await.expect("down all");
        assert_eq!(applied(&pool).await, 0);
        assert_eq!(
            scalar_i64(&pool, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tasker'").await,
            0
        );
        assert_eq!(requests_queue(&pool).await, 0);
        assert_eq!(
            scalar_i64(
                &pool,
                "SELECT count(*) FROM pgmq.meta WHERE queue_name = 'tasker_ns_roundtrip'"
            )
            .await,
            1
        );

        // And up again, to the same schema.
        migrate(&pool).await.expect("up again");
        assert_eq!(applied(&pool).await, known);
        assert_eq!(tasker_functions(&pool).await, functions);
        assert_eq!(tasker_tables(&pool).await, tables);
        assert_eq!(requests_queue(&pool).await, 1);

        let refused = rollback(&pool, 42).await;
        assert!(
            matches!(&refused, Err(tasker_core::Error::InvalidInput(m)) if m.contains("no migration has version 42")),
            "{refused:?}"
        );
        assert_eq!(applied(&pool).await, known);

        pool.close().await;
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}
