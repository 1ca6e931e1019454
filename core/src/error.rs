//! The one error type of the core. Every variant maps to exactly one Ruby exception class in the
//! extension (see `ext/tasker_core/src/helpers/errors.rs`), so keep the set small and meaningful.

use std::fmt;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a template problem was found: the file (when loaded from disk) and the step (when the
/// problem belongs to one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateLocation {
    pub file: Option<String>,
    pub step: Option<String>,
}

impl fmt::Display for TemplateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.step) {
            (Some(file), Some(step)) => write!(f, "{file}: step '{step}': "),
            (Some(file), None) => write!(f, "{file}: "),
            (None, Some(step)) => write!(f, "step '{step}': "),
            (None, None) => Ok(()),
        }
    }
}

/// Errors surfaced by the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A task template is malformed or inconsistent.
    #[error("{location}{message}")]
    Template {
        location: TemplateLocation,
        message: String,
    },
    /// No template is registered under the requested namespace, name and version.
    #[error("no task template registered as {namespace}/{name}@{version}")]
    TemplateNotFound {
        namespace: String,
        name: String,
        version: String,
    },
    /// A task or step that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Input that cannot be accepted (context that is not a JSON object, bad identifiers, …).
    #[error("{0}")]
    InvalidInput(String),
    /// The engine's configuration is invalid.
    #[error("{0}")]
    Configuration(String),
    /// A state change that the state machine does not allow.
    #[error("{0}")]
    InvalidTransition(String),
    /// The engine is not running (never started, stopped, or started in a parent process).
    #[error("{0}")]
    NotStarted(String),
    /// Waiting for something took longer than allowed.
    #[error("{0}")]
    Timeout(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A circuit breaker is open: the operation was not attempted.
    #[error("circuit breaker {breaker} is open; retry in {:.1}s", retry_after.as_secs_f64())]
    CircuitOpen {
        breaker: String,
        retry_after: std::time::Duration,
    },
    /// A namespace queue could not be written (locked, dropped, or failing).
    #[error("queue {queue} could not be written: {message}")]
    Queue { queue: String, message: String },
    /// A database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// A database error that no retry can fix because the data itself is refused: SQLSTATE
    /// class 22 (data exception: a NUL byte in text or JSON, a number out of range, …) or 54
    /// (program limit exceeded: a value too large or too deep).
    pub fn is_data_error(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(db))
            if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("54")))
    }

    pub(crate) fn template(
        file: Option<&str>,
        step: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Error::Template {
            location: TemplateLocation {
                file: file.map(str::to_owned),
                step: step.map(str::to_owned),
            },
            message: message.into(),
        }
    }

    /// Attach a file name to a template error that does not carry one yet.
    pub(crate) fn in_file(self, file: &str) -> Self {
        match self {
            Error::Template {
                mut location,
                message,
            } => {
                if location.file.is_none() {
                    location.file = Some(file.to_owned());
                }
                Error::Template { location, message }
            }
            other => other,
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Migration(e.to_string())
    }
}

impl From<pgmq::PgmqError> for Error {
    fn from(e: pgmq::PgmqError) -> Self {
        Error::Migration(format!("pgmq install: {e}"))
    }
}
