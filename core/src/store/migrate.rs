//! Schema migrations: pgmq's SQL (installed as plain SQL, no extension package) followed by
//! the numbered files in `migrations/` (each an `.up.sql` with its `.down.sql`), compiled into
//! the library. Applying and reverting run under one session advisory lock, so processes
//! migrating at the same moment take turns; applying twice is a no-op.

use sqlx::PgPool;

use crate::error::Result;

/// The project's own migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

const MIGRATION_LOCK: i64 = 0x7461_736b_6572_0001; // "tasker" + 1

/// Install or upgrade pgmq and apply pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    locked(&mut conn, async |conn| {
        pgmq::install::install_sql_from_embedded(pool).await?;
        MIGRATOR.run(&mut **conn).await?;
        Ok(())
    })
    .await
}

/// Revert the applied migrations newer than `target` (newest first, each by its `.down.sql`);
/// `target` 0 reverts them all. pgmq itself stays installed. Refuses a target that is not 0 or
/// the version of a known migration.
pub async fn rollback(pool: &PgPool, target: i64) -> Result<()> {
    if target != 0 && !MIGRATOR.iter().any(|m| m.version == target) {
        return Err(crate::Error::InvalidInput(format!(
            "no migration has version {target} (0 reverts them all)"
        )));
    }
    let mut conn = pool.acquire().await?;
    locked(&mut conn, async |conn| {
        MIGRATOR.undo(&mut **conn, target).await?;
        Ok(())
    })
    .await
}

/// Run `work` holding the migration lock on `conn`, and release it whatever happened.
async fn locked<F>(conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>, work: F) -> Result<()>
where
    F: AsyncFnOnce(&mut sqlx::pool::PoolConnection<sqlx::Postgres>) -> Result<()>,
{
    crate::store::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut **conn)
        .await?;
    let outcome = work(conn).await;
    let unlocked = crate::store::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut **conn)
        .await;
    outcome.and(unlocked.map(|_| ()).map_err(Into::into))
}

/// Versions of the project's migrations that are applied, and those the library knows (with
/// their descriptions).
pub async fn status(pool: &PgPool) -> Result<(Vec<i64>, Vec<(i64, String)>)> {
    let applied: Vec<i64> = crate::store::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let known = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    Ok((applied, known))
}
