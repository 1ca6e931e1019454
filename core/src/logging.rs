//! The one log pipeline of a process: every `tracing` event of the engine and every line of
//! `TaskerCore::Logger` (Ruby) is filtered by one set of `RUST_LOG`-style directives and
//! written as human text or JSON lines to stderr, stdout or a file. Settings change at runtime.
//!
//! Fields given by Ruby arrive through [`with_fields`] (a thread-local read by the layer while
//! the event is written), so they appear at the top level of a JSON record like any field.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{LineWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::Resource;

use crate::error::{Error, Result};

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-25T10:00:00.000000Z  INFO target: message key=value`
    Text,
    /// One JSON object per line: timestamp, level, target, message, then every field.
    Json,
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    Stderr,
    Stdout,
    /// Appended to, created if missing.
    File(PathBuf),
    /// OpenTelemetry logs over OTLP/HTTP (protobuf), batched. `endpoint` is the collector's
    /// base URL (`/v1/logs` is appended); None: the `OTEL_EXPORTER_OTLP_*` variables decide.
    Otlp {
        endpoint: Option<String>,
        service_name: String,
    },
}

/// The pipeline's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `RUST_LOG`-style directives, e.g. `warn,tasker_core=info,ruby=debug`. Ruby's
    /// `TaskerCore::Logger` logs under the target `ruby`.
    pub filter: String,
    pub format: LogFormat,
    pub output: LogOutput,
}

impl LogSettings {
    /// From `TASKER_LOG`, else `RUST_LOG`, else `warn,ruby=info`; text to stderr.
    pub fn from_env() -> Self {
        let filter = std::env::var("TASKER_LOG")
            .or_else(|_| std::env::var("RUST_LOG"))
            .unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
        LogSettings {
            filter,
            format: LogFormat::Text,
            output: LogOutput::Stderr,
        }
    }
}

/// Engine warnings and Ruby info lines.
pub const DEFAULT_FILTER: &str = "warn,ruby=info";

enum Sink {
    Stderr,
    Stdout,
    File(LineWriter<std::fs::File>),
    Otlp(SdkLoggerProvider, SdkLogger),
}

impl Sink {
    fn open(output: &LogOutput) -> Result<Sink> {
        Ok(match output {
            LogOutput::Stderr => Sink::Stderr,
            LogOutput::Stdout => Sink::Stdout,
            LogOutput::Otlp {
                endpoint,
                service_name,
            } => {
                let mut exporter = opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                if let Some(base) = endpoint {
                    exporter =
                        exporter.with_endpoint(format!("{}/v1/logs", base.trim_end_matches('/')));
                }
                let exporter = exporter.build().map_err(|e| {
                    Error::Configuration(format!("OpenTelemetry log exporter: {e}"))
                })?;
                let provider = SdkLoggerProvider::builder()
                    .with_resource(
                        Resource::builder()
                            .with_service_name(service_name.clone())
                            .build(),
                    )
                    .with_batch_exporter(exporter)
                    .build();
                let logger = provider.logger("tasker_core");
                Sink::Otlp(provider, logger)
            }
            LogOutput::File(path) => Sink::File(LineWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        Error::Configuration(format!(
                            "log output {} cannot be opened: {e}",
                            path.display()
                        ))
                    })?,
            )),
        })
    }

    fn write_line(&mut self, line: &str) {
        // A log line that cannot be written is dropped: logging never fails the caller.
        let _ = match self {
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::File(f) => f.write_all(line.as_bytes()),
            Sink::Otlp(..) => Ok(()),
        };
    }

    /// Send what is buffered (OTLP batches); files and streams are written line by line.
    fn flush(&self) {
        if let Sink::Otlp(provider, _) = self {
            if let Err(e) = provider.force_flush() {
                eprintln!("tasker_core: flushing OTLP logs failed: {e}");
            }
        }
    }

    /// Stop a replaced sink (an OTLP sink flushes and stops its exporter thread).
    fn close(self) {
        if let Sink::Otlp(provider, _) = self {
            let _ = provider.shutdown();
        }
    }
}

/// One record as an OpenTelemetry log: body = message, fields = attributes, the trace context
/// taken from `trace_id` / `span_id` fields when present (set inside handlers).
fn emit_otlp(logger: &SdkLogger, level: &tracing::Level, target: &str, fields: FieldMap) {
    let mut record = logger.create_log_record();
    let (severity, text) = match *level {
        tracing::Level::TRACE => (Severity::Trace, "TRACE"),
        tracing::Level::DEBUG => (Severity::Debug, "DEBUG"),
        tracing::Level::INFO => (Severity::Info, "INFO"),
        tracing::Level::WARN => (Severity::Warn, "WARN"),
        tracing::Level::ERROR => (Severity::Error, "ERROR"),
    };
    record.set_timestamp(std::time::SystemTime::now());
    record.set_severity_number(severity);
    record.set_severity_text(text);
    record.set_target(target.to_owned());
    record.set_body(AnyValue::from(fields.message.unwrap_or_default()));
    let trace = fields
        .fields
        .get("trace_id")
        .and_then(Value::as_str)
        .and_then(|t| TraceId::from_hex(t).ok());
    let span = fields
        .fields
        .get("span_id")
        .and_then(Value::as_str)
        .and_then(|s| SpanId::from_hex(s).ok());
    if let (Some(trace), Some(span)) = (trace, span) {
        record.set_trace_context(trace, span, None);
    }
    for (k, v) in fields.fields {
        let value = match v {
            Value::String(s) => AnyValue::from(s),
            Value::Bool(b) => AnyValue::from(b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => AnyValue::from(i),
                (None, Some(f)) => AnyValue::from(f),
                _ => AnyValue::from(n.to_string()),
            },
            other => AnyValue::from(other.to_string()),
        };
        record.add_attribute(k, value);
    }
    logger.emit(record);
}

/// Send buffered log records (OTLP output) now; TaskerCore.stop and process exit call it.
pub fn flush() {
    if let Some(p) = PIPELINE.get() {
        p.sink.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

struct Pipeline {
    filter: reload::Handle<EnvFilter, Registry>,
    sink: Arc<Mutex<Sink>>,
    json: Arc<AtomicBool>,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

thread_local! {
    static EXTRA_FIELDS: RefCell<Option<Map<String, Value>>> = const { RefCell::new(None) };
    static IN_EMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `emit` (which writes one event) with `fields` attached to that event's record.
pub fn with_fields<R>(fields: Map<String, Value>, emit: impl FnOnce() -> R) -> R {
    EXTRA_FIELDS.with(|f| *f.borrow_mut() = Some(fields));
    let out = emit();
    EXTRA_FIELDS.with(|f| f.borrow_mut().take());
    out
}

/// Install the pipeline as the process's global subscriber (first call), or apply new
/// settings to it (later calls). Fails on invalid directives or an output that cannot be
/// opened, leaving the previous settings in force.
pub fn configure(settings: &LogSettings) -> Result<()> {
    let filter = EnvFilter::try_new(&settings.filter).map_err(|e| {
        Error::Configuration(format!("log filter {:?} is invalid: {e}", settings.filter))
    })?;
    let sink = Sink::open(&settings.output)?;
    let json = settings.format == LogFormat::Json;
    if let Some(p) = PIPELINE.get() {
        let old = std::mem::replace(&mut *p.sink.lock().unwrap_or_else(|e| e.into_inner()), sink);
        old.close();
        p.json.store(json, Ordering::Release);
        p.filter
            .reload(filter)
            .map_err(|e| Error::Configuration(format!("log filter not applied: {e}")))?;
        return Ok(());
    }
    let (filter_layer, handle) = reload::Layer::new(filter);
    let sink = Arc::new(Mutex::new(sink));
    let json = Arc::new(AtomicBool::new(json));
    let layer = RecordLayer {
        sink: sink.clone(),
        json: json.clone(),
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter_layer)
        .with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        // Someone else (an application, a test harness) owns the global subscriber.
        return Ok(());
    }
    let _ = PIPELINE.set(Pipeline {
        filter: handle,
        sink,
        json,
    });
    Ok(())
}

/// Install the pipeline with [`LogSettings::from_env`] unless it is installed already.
/// An invalid `TASKER_LOG` falls back to the default filter (with a line saying so).
pub fn init_from_env() {
    if PIPELINE.get().is_some() {
        return;
    }
    let settings = LogSettings::from_env();
    if let Err(e) = configure(&settings) {
        let _ = configure(&LogSettings {
            filter: DEFAULT_FILTER.to_owned(),
            ..settings
        });
        tracing::warn!(error = %e, "TASKER_LOG ignored");
    }
}

/// Fields recorded on a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct RecordLayer {
    sink: Arc<Mutex<Sink>>,
    json: Arc<AtomicBool>,
}

impl<S> Layer<S> for RecordLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = FieldMap::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(SpanFields(map)) = ext.get_mut::<SpanFields>() {
                let mut fields = FieldMap::default();
                values.record(&mut fields);
                map.extend(fields.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = FieldMap::default();
        // Outer spans first, so the event's own fields win.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(map)) = span.extensions().get::<SpanFields>() {
                    fields
                        .fields
                        .extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut fields);
        EXTRA_FIELDS.with(|extra| {
            if let Some(extra) = extra.borrow_mut().take() {
                fields.fields.extend(extra);
            }
        });
        let meta = event.metadata();
        // Emitted without holding the sink, and never from inside an emit (an exporter that logs
        // through `tracing` must not re-enter): such nested records are dropped.
        let otlp = match &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            Sink::Otlp(_, logger) => Some(logger.clone()),
            _ => None,
        };
        if let Some(logger) = otlp {
            if !IN_EMIT.with(|f| f.replace(true)) {
                emit_otlp(&logger, meta.level(), meta.target(), fields);
                IN_EMIT.with(|f| f.set(false));
            }
            return;
        }
        let mut timestamp = String::with_capacity(32);
        let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
        let line = if self.json.load(Ordering::Acquire) {
            json_line(&timestamp, meta.level(), meta.target(), fields)
        } else {
            text_line(&timestamp, meta.level(), meta.target(), fields)
        };
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_line(&line);
    }
}

fn json_line(timestamp: &str, level: &tracing::Level, target: &str, fields: FieldMap) -> String {
    let mut record = Map::with_capacity(fields.fields.len() + 4);
    record.insert("timestamp".into(), Value::from(timestamp));
    record.insert("level".into(), Value::from(level.as_str()));
    record.insert("target".into(), Value::from(target));
    record.insert(
        "message".into(),
        Value::from(fields.message.unwrap_or_default()),
    );
    for (k, v) in fields.fields {
        // Reserved keys keep their meaning; a clashing field is kept under a prefixed name.
        if record.contains_key(&k) {
            record.insert(format!("field.{k}"), v);
        } else {
            record.insert(k, v);
        }
    }
    let mut line = Value::Object(record).to_string();
    line.push('\n');
    line
}

fn text_line(timestamp: &str, level: &tracing::Level, target: &str, fields: FieldMap) -> String {
    let mut line = format!(
        "{timestamp} {:>5} {target}: {}",
        level.as_str(),
        fields.message.unwrap_or_default()
    );
    for (k, v) in fields.fields {
        match v {
            Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => {
                let _ = write!(line, " {k}={s}");
            }
            other => {
                let _ = write!(line, " {k}={other}");
            }
        }
    }
    line.push('\n');
    line
}

#[derive(Default)]
struct FieldMap {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl Visit for FieldMap {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.fields.insert(field.name().into(), Value::from(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.fields.insert(field.name().into(), Value::from(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_put_fields_at_the_top_level_and_keep_reserved_keys() {
        let mut fields = FieldMap {
            message: Some("charged".into()),
            ..FieldMap::default()
        };
        fields.fields.insert("order_id".into(), Value::from(42));
        fields.fields.insert("level".into(), Value::from("mine"));
        let line = json_line(
            "2026-01-01T00:00:00Z",
            &tracing::Level::INFO,
            "ruby",
            fields,
        );
        let v: Value = serde_json::from_str(line.trim_end()).expect("one JSON object");
        assert_eq!(v["message"], "charged");
        assert_eq!(v["order_id"], 42);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["field.level"], "mine");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn text_lines_quote_only_values_that_need_it() {
        let mut fields = FieldMap {
            message: Some("hello".into()),
            ..FieldMap::default()
        };
        fields.fields.insert("a".into(), Value::from("plain"));
        fields.fields.insert("b".into(), Value::from("two words"));
        fields.fields.insert("n".into(), Value::from(3));
        let line = text_line("T", &tracing::Level::WARN, "x", fields);
        assert_eq!(line, "T  WARN x: hello a=plain b=\"two words\" n=3\n");
    }

    #[test]
    fn invalid_settings_are_configuration_errors() {
        let bad = LogSettings {
            filter: "warn,=[".into(),
            format: LogFormat::Text,
            output: LogOutput::Stderr,
        };
        assert!(matches!(configure(&bad), Err(Error::Configuration(_))));
        let unwritable = LogSettings {
            filter: "warn".into(),
            format: LogFormat::Text,
            output: LogOutput::File("/nonexistent-dir/x.log".into()),
        };
        assert!(matches!(
            configure(&unwritable),
            Err(Error::Configuration(_))
        ));
    }
}
