//! Core errors → the Ruby classes defined in `lib/tasker_core/errors.rb` (looked up by name;
//! Ruby owns the hierarchy).

use magnus::{prelude::*, Error, ExceptionClass, RModule, Ruby};
use tasker_core::Error as CoreError;

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
