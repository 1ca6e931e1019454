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
}

impl Sink {
    fn open(output: &LogOutput) -> Result<Sink> {
        Ok(match output {
            LogOutput::Stderr => Sink::Stderr,
            LogOutput::Stdout => Sink::Stdout,
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
        };
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
        *p.sink.lock().unwrap_or_else(|e| e.into_inner()) = sink;
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
