//! `TaskerCore::Native::Log`: Ruby's entry into the engine's log pipeline
//! (`tasker_core::logging`). A disabled level costs one callsite check and no allocation.

use magnus::{function, prelude::*, Error, RHash, RModule, RString, Ruby};
use serde_json::{Map, Value as Json};
use tasker_core::logging::{self, LogFormat, LogOutput, LogSettings};
use tracing::Level;

use crate::errors::guarded;

pub fn init(native: RModule) -> Result<(), Error> {
    logging::init_from_env();
    let m = native.define_module("Log")?;
    m.define_singleton_method("enabled?", function!(is_enabled, 1))?;
    m.define_singleton_method("write", function!(write, 3))?;
    m.define_singleton_method("configure", function!(configure, 5))?;
    m.define_singleton_method("flush", function!(flush, 0))?;
    Ok(())
}

guarded! {
    /// Whether a level is enabled for Ruby's records.
    fn is_enabled(ruby: &Ruby, level: i64) -> Result<bool, Error> {
        let _ = ruby;
        Ok(enabled(level))
    }
}

/// Levels as Ruby numbers them: 0 trace, 1 debug, 2 info, 3 warn, 4 error.
fn enabled(level: i64) -> bool {
    match level {
        0 => tracing::enabled!(target: "ruby", Level::TRACE),
        1 => tracing::enabled!(target: "ruby", Level::DEBUG),
        2 => tracing::enabled!(target: "ruby", Level::INFO),
        3 => tracing::enabled!(target: "ruby", Level::WARN),
        _ => tracing::enabled!(target: "ruby", Level::ERROR),
    }
}

guarded! {
/// Write one record under the target `ruby` with the Hash's entries as top-level fields.
/// Returns false (having done nothing) when the level is filtered out.
fn write(ruby: &Ruby, level: i64, message: RString, fields: Option<RHash>) -> Result<bool, Error> {
    if !enabled(level) {
        return Ok(false);
    }
    let fields = match fields {
        Some(h) if !h.is_empty() => match crate::convert::to_json(ruby, h.as_value(), "log fields")
        {
            Ok(Json::Object(map)) => map,
            Ok(_) => Map::new(),
            // A field without a JSON form must not lose the line.
            Err(e) => Map::from_iter([("fields_error".to_owned(), Json::from(e.to_string()))]),
        },
        _ => Map::new(),
    };
    // SAFETY: the message is read while no Ruby code runs (the pipeline never calls Ruby),
    // so the string cannot be moved or freed meanwhile.
    // Invalid UTF-8 is replaced rather than refused: a log line is never lost to its bytes.
    let message = String::from_utf8_lossy(unsafe { message.as_slice() });
    let message: &str = &message;
    logging::with_fields(fields, || match level {
        0 => tracing::event!(target: "ruby", Level::TRACE, message),
        1 => tracing::event!(target: "ruby", Level::DEBUG, message),
        2 => tracing::event!(target: "ruby", Level::INFO, message),
        3 => tracing::event!(target: "ruby", Level::WARN, message),
        _ => tracing::event!(target: "ruby", Level::ERROR, message),
    });
    Ok(true)
}

/// Send buffered records (OTLP output), with the GVL released.
fn flush(ruby: &Ruby) -> Result<(), Error> {
    match crate::nogvl::run(ruby, logging::flush)? {
        Ok(()) => Ok(()),
        Err(p) => Err(crate::errors::internal(ruby, p)),
    }
}

/// Apply new settings: directives, "text" | "json", "stderr" | "stdout" | "otlp" | a file
/// path; for "otlp" the collector's base URL (nil: OTEL_EXPORTER_OTLP_*) and service name.
fn configure(
    ruby: &Ruby,
    filter: String,
    format: String,
    output: String,
    endpoint: Option<String>,
    service_name: Option<String>
) -> Result<(), Error> {
    let format = match format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(crate::errors::error(
                ruby,
                "ConfigurationError",
                format!("log format must be text or json, not {other:?}"),
            ))
        }
    };
    let output = match output.as_str() {
        "stderr" => LogOutput::Stderr,
        "stdout" => LogOutput::Stdout,
        "otlp" => LogOutput::Otlp {
            endpoint,
            service_name: service_name.unwrap_or_else(|| "tasker_core".into()),
        },
        path => LogOutput::File(path.into()),
    };
    logging::configure(&LogSettings {
        filter,
        format,
        output,
    })
    .map_err(|e| crate::errors::to_ruby(ruby, e))
}
}
