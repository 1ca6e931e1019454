//! The engine's connection pools, directly to PostgreSQL or through a pooler in transaction
//! mode (PgBouncer `pool_mode = transaction`).
//!
//! Such a pooler may give a client's next message to another server connection as soon as a
//! transaction ends, which breaks three things sqlx otherwise relies on: named prepared
//! statements (its statement cache: `prepared statement "sqlx_s_1" already exists`), session
//! settings (`lock_timeout` as a startup option) and its two exchanges per statement (parse,
//! then bind and execute — the second may reach a server that never saw the first). Through
//! such a pooler ([`DbPool::pooled`]) every statement is unnamed, and a statement run on the
//! pool itself runs in a transaction of its own that first applies the pool's settings with
//! `SET LOCAL`: three more round trips a statement, the documented price of the pooler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgConnection, PgPool, Postgres};

/// Whether statements are prepared as named (cached) ones. Cleared, for the whole process,
/// once any engine of it connects through a transaction pooler.
static NAMED_STATEMENTS: AtomicBool = AtomicBool::new(true);

/// Statements from now on are unnamed, in every pool of this process.
pub(crate) fn use_unnamed_statements() {
    NAMED_STATEMENTS.store(false, Ordering::Relaxed);
}

fn named() -> bool {
    NAMED_STATEMENTS.load(Ordering::Relaxed)
}

/// `sqlx::query`, unnamed when a transaction pooler is in use.
pub fn query(sql: &str) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    sqlx::query(sql).persistent(named())
}

/// `sqlx::query_as`, unnamed when a transaction pooler is in use.
pub fn query_as<'q, O>(sql: &'q str) -> sqlx::query::QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> sqlx::FromRow<'r, PgRow>,
{
    sqlx::query_as(sql).persistent(named())
}

/// `sqlx::query_scalar`, unnamed when a transaction pooler is in use.
pub fn query_scalar<'q, O>(sql: &'q str) -> sqlx::query::QueryScalar<'q, Postgres, O, PgArguments>
where
    (O,): for<'r> sqlx::FromRow<'r, PgRow>,
{
    sqlx::query_scalar(sql).persistent(named())
}

/// A pool of connections (see the module's documentation).
#[derive(Clone, Debug)]
pub struct DbPool {
    inner: PgPool,
    /// Through a transaction pooler: each statement on the pool in a transaction of its own,
    /// opened by this text (`BEGIN` and the pool's `SET LOCAL`s).
    begin: Option<Arc<str>>,
}

impl DbPool {
    /// A pool straight to PostgreSQL (session settings, if any, are startup options).
    pub fn direct(inner: PgPool) -> Self {
        DbPool { inner, begin: None }
    }

    /// A pool through a transaction pooler: `settings` (name, value) are applied to every
    /// statement's transaction by `SET LOCAL`.
    pub fn pooled(inner: PgPool, settings: &[(&str, String)]) -> Self {
        let mut begin = String::from("BEGIN");
        for (name, value) in settings {
            // Names and values are the engine's own (durations it formats), never input.
            begin.push_str(&format!("; SET LOCAL {name} = '{value}'"));
        }
        DbPool {
            inner,
            begin: Some(begin.into()),
        }
    }

    /// sqlx's pool underneath (its size, closing it, a listener).
    pub fn inner(&self) -> &PgPool {
        &self.inner
    }

    /// Open a transaction (statements in it share one server connection, pooler or not).
    pub async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, Postgres>> {
        self.inner.begin().await
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.inner.options().get_max_connections()
    }

    /// Connections open now.
    pub fn size(&self) -> u32 {
        self.inner.size()
    }

    /// Connections open and idle now.
    pub fn num_idle(&self) -> usize {
        self.inner.num_idle()
    }

    /// Close every connection.
    pub async fn close(&self) {
        self.inner.close().await
    }
}

/// End the transaction a statement ran in: commit it when the statement succeeded, else roll
/// it back (a connection whose state is unknown is dropped, not handed back).
async fn finish<T>(mut conn: PoolConnection<Postgres>, result: sqlx::Result<T>) -> sqlx::Result<T> {
    match result {
        Ok(value) => {
            simple_on(&mut conn, "COMMIT").await?;
            Ok(value)
        }
        Err(e) => {
            if simple_on(&mut conn, "ROLLBACK").await.is_err() {
                let _ = conn.detach();
            }
            Err(e)
        }
    }
}

// A simple-protocol statement (no parameters, one exchange) on the connection. Called through
// this typed function: `RawSql::execute`'s own future is generic over its executor, and the
// compiler cannot prove that one `Send` inside the futures below.
fn simple_on<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> BoxFuture<'c, sqlx::Result<PgQueryResult>> {
    conn.execute(sqlx::raw_sql(sql))
}

/// Run one statement in `begin`'s transaction; its rows.
async fn run_all<'q, E>(pool: &PgPool, begin: Arc<str>, query: E) -> sqlx::Result<Vec<PgRow>>
where
    E: 'q + Execute<'q, Postgres>,
{
    let mut conn = pool.acquire().await?;
    simple_on(&mut conn, &begin).await?;
    let rows = conn.fetch_all(query).await;
    finish(conn, rows).await
}

/// Run one statement in `begin`'s transaction; what it did.
async fn run_execute<'q, E>(pool: &PgPool, begin: Arc<str>, query: E) -> sqlx::Result<PgQueryResult>
where
    E: 'q + Execute<'q, Postgres>,
{
    let mut conn = pool.acquire().await?;
    simple_on(&mut conn, &begin).await?;
    let done = conn.execute(query).await;
    finish(conn, done).await
}

/// Run one statement in `begin`'s transaction; its first row.
async fn run_optional<'q, E>(
    pool: &PgPool,
    begin: Arc<str>,
    query: E,
) -> sqlx::Result<Option<PgRow>>
where
    E: 'q + Execute<'q, Postgres>,
{
    let mut conn = pool.acquire().await?;
    simple_on(&mut conn, &begin).await?;
    let row = conn.fetch_optional(query).await;
    finish(conn, row).await
}

impl<'p> Executor<'p> for &'p DbPool {
    type Database = Postgres;

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<PgQueryResult>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.begin.clone() {
            None => self.inner.execute(query),
            Some(begin) => Box::pin(run_execute(&self.inner, begin, query)),
        }
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Vec<PgRow>>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.begin.clone() {
            None => self.inner.fetch_all(query),
            Some(begin) => Box::pin(run_all(&self.inner, begin, query)),
        }
    }

    /// Through a transaction pooler the rows only, once the statement has committed (no
    /// per-statement results: [`Executor::execute`] is the way to a row count).
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, sqlx::Result<Either<PgQueryResult, PgRow>>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let Some(begin) = self.begin.clone() else {
            return self.inner.fetch_many(query);
        };
        let pool = &self.inner;
        futures_util::stream::once(run_all(pool, begin, query))
            .map_ok(|rows| {
                futures_util::stream::iter(rows.into_iter().map(|r| Ok(Either::Right(r))))
            })
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<PgRow>>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let Some(begin) = self.begin.clone() else {
            return self.inner.fetch_optional(query);
        };
        let pool = &self.inner;
        Box::pin(run_optional(pool, begin, query))
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<PgStatement<'q>>>
    where
        'p: 'e,
    {
        self.inner.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, sqlx::Result<Describe<Postgres>>>
    where
        'p: 'e,
    {
        self.inner.describe(sql)
    }
}
