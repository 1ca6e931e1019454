//! PostgreSQL persistence: embedded migrations, transition history, and read models.
//! All SQL is runtime-checked (`sqlx::query`) and parameterized; integration tests in
//! `core/tests` run every statement against a real database.

pub mod migrate;
pub mod snapshot;
pub(crate) mod transitions;
