//! Core errors → the Ruby classes defined in `lib/tasker_core/errors.rb` (looked up by name;
//! Ruby owns the hierarchy).

use std::panic::{catch_unwind, AssertUnwindSafe};

use magnus::{prelude::*, Error, ExceptionClass, RModule, Ruby};
use tasker_core::Error as CoreError;

/// Run an entry point's body; a panic inside it becomes `TaskerCore::Errors::InternalError`
/// with the panic's message instead of unwinding into Ruby (where magnus would raise `fatal`).
pub fn guard<T>(ruby: &Ruby, body: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| Err(internal(ruby, payload)))
}

/// `TaskerCore::Errors::InternalError` for a caught panic.
pub fn internal(ruby: &Ruby, payload: Box<dyn std::any::Any + Send>) -> Error {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    error(
        ruby,
        "InternalError",
        format!("internal error in tasker_core's native extension (a panic was caught: {detail}); please report it"),
    )
}

/// Defines Ruby entry points whose bodies run under [`guard`]: each function's first
/// parameter must be `ruby: &Ruby` and it must return `Result<_, magnus::Error>`.
macro_rules! guarded {
    ($( $(#[$meta:meta])* $vis:vis fn $name:ident ( $ruby:ident : &Ruby $(, $arg:ident : $ty:ty)* $(,)? ) -> $ret:ty $body:block )*) => {
        $(
            $(#[$meta])*
            $vis fn $name($ruby: &Ruby $(, $arg: $ty)*) -> $ret {
                $crate::errors::guard($ruby, move || -> $ret { $body })
            }
        )*
    };
}
pub(crate) use guarded;

/// `TaskerCore::Errors::<name>`, or `StandardError` if the Ruby side is not loaded.
pub fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    ruby.class_object()
        .const_get::<_, RModule>("TaskerCore")
        .and_then(|m| m.const_get::<_, RModule>("Errors"))
        .and_then(|m| m.const_get::<_, ExceptionClass>(name))
        .unwrap_or_else(|_| ruby.exception_standard_error())
}

/// Build a Ruby exception of `TaskerCore::Errors::<name>`.
pub fn error(ruby: &Ruby, name: &str, message: impl Into<String>) -> Error {
    Error::new(class(ruby, name), message.into())
}

/// Map a core error to its one Ruby class.
pub fn to_ruby(ruby: &Ruby, e: CoreError) -> Error {
    let name = match &e {
        CoreError::Template { .. } => "TemplateError",
        CoreError::TemplateNotFound { .. } => "TemplateNotFoundError",
        CoreError::NotFound(_) => "NotFoundError",
        CoreError::InvalidInput(_) => "ValidationError",
        CoreError::Configuration(_) => "ConfigurationError",
        CoreError::InvalidTransition(_) => "InvalidTransitionError",
        CoreError::NotStarted(_) => "NotStartedError",
        CoreError::Timeout(_) => "TimeoutError",
        CoreError::Migration(_) => "MigrationError",
        CoreError::Database(_) | CoreError::Queue { .. } => "DatabaseError",
        CoreError::CircuitOpen { retry_after, .. } => {
            return open_error(ruby, e.to_string(), *retry_after);
        }
    };
    error(ruby, name, e.to_string())
}

/// `TaskerCore::Errors::CircuitOpenError` (a RetryableError) with its `retry_after` set.
pub fn open_error(ruby: &Ruby, message: String, retry_after: std::time::Duration) -> Error {
    match class(ruby, "CircuitOpenError").new_instance((message.clone(),)) {
        Ok(exc) => {
            let _ = exc.funcall::<_, _, magnus::Value>(
                "instance_variable_set",
                ("@retry_after", retry_after.as_secs_f64()),
            );
            Error::from(exc)
        }
        Err(_) => error(ruby, "CircuitOpenError", message),
    }
}
