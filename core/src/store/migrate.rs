//! Schema migrations: pgmq's SQL (installed as plain SQL, no extension package) followed by
//! the numbered files in `migrations/`, compiled into the library. Both run under one session
//! advisory lock, so processes migrating at the same moment take turns; applying twice is a
//! no-op.

use sqlx::PgPool;

use crate::error::Result;

/// The project's own migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

const MIGRATION_LOCK: i64 = 0x7461_736b_6572_0001; // "tasker" + 1

/// Install or upgrade pgmq and apply pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let outcome = async {
        pgmq::install::install_sql_from_embedded(pool).await?;
        MIGRATOR.run(&mut *conn).await?;
        Ok(())
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    outcome.and(unlocked.map(|_| ()).map_err(Into::into))
}

/// Versions of the project's migrations that are applied, and those the library knows (with
/// their descriptions).
pub async fn status(pool: &PgPool) -> Result<(Vec<i64>, Vec<(i64, String)>)> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let known = MIGRATOR
        .iter()
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    Ok((applied, known))
}
