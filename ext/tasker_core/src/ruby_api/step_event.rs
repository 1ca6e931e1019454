//! `TaskerCore::Native::StepEvent`: one claimed step, wrapped as a single Ruby object. Names
//! come out as interned (frozen, deduplicated) Ruby strings; the context and dependency
//! results become Ruby objects only when read. `complete_*` hands the outcome back once.

use magnus::{
    method, prelude::*, rb_sys::FromRawValue, value::ReprValue, Error, RArray, RModule, RString,
    Ruby, Value,
};
use std::sync::{Arc, Mutex};
use tasker_core::{Dispatch, Engine, FailureKind, Slot, StepEvent, StepFailure, StepOutcome};
use uuid::Uuid;

use crate::convert;
use crate::errors::{error, guarded};
use tasker_core::orchestration::backoff::RETRY_AFTER_CEILING;

use tasker_core::limits::{MAX_BACKTRACE_LINES, MAX_FAILURE_TEXT_BYTES as MAX_TEXT_BYTES};

fn args_get(hash: magnus::RHash, key: &str) -> Value {
    crate::args::get(hash, key)
}

/// The core event of `StepEvent.detached` (every value checked as the engine checks its own).
fn detached_event(ruby: &Ruby, attrs: magnus::RHash) -> Result<StepEvent, Error> {
    use crate::args;
    let text = |key: &str| -> Result<Arc<str>, Error> {
        Ok(args::text(ruby, "ValidationError", key, args_get(attrs, key))?.into())
    };
    let count = |key: &str, min: i64| -> Result<u32, Error> {
        Ok(args::integer(
            ruby,
            "ValidationError",
            key,
            args_get(attrs, key),
            min,
            u32::MAX as i64,
        )? as u32)
    };
    let namespace = text("namespace")?;
    let queue = tasker_core::messaging::queue::QueueName::for_namespace(&namespace)
        .map_err(|e| crate::errors::to_ruby(ruby, e))?;
    let names: Vec<String> = args::fetch(ruby, "ValidationError", attrs, "parent_names")?;
    let results = magnus::RHash::from_value(args_get(attrs, "dependency_results"))
        .ok_or_else(|| error(ruby, "ValidationError", "dependency_results must be a Hash"))?;
    let mut dependency_results = Vec::with_capacity(results.len());
    results.foreach(|name: Value, value: Value| {
        let name = args::text(ruby, "ValidationError", "a dependency name", name)?;
        let value = convert::to_json(ruby, value, &format!("dependency_results[{name:?}]"))?;
        dependency_results.push((Arc::<str>::from(name), value));
        Ok(magnus::r_hash::ForEach::Continue)
    })?;
    let attempts = count("attempts", 1)?;
    Ok(StepEvent {
        ticket: tasker_core::ClaimTicket {
            task_uuid: Uuid::now_v7(),
            step_uuid: Uuid::now_v7(),
            token: Uuid::now_v7(),
            msg_id: 0,
            queue,
            namespace,
            correlation_id: Uuid::now_v7(),
            priority: 0,
            attempt: attempts,
            backoff_base_ms: 0,
            max_backoff_ms: 0,
            children: 0,
        },
        parent_correlation_id: None,
        task_name: text("task_name")?,
        task_version: text("task_version")?,
        step_name: text("step_name")?,
        handler_class: text("handler_class")?,
        handler_config: Arc::new(convert::to_json(
            ruby,
            args_get(attrs, "handler_config"),
            "config",
        )?),
        attempts,
        max_attempts: count("max_attempts", 1)?,
        timeout_seconds: count("timeout_seconds", 1)?,
        context: convert::to_json(ruby, args_get(attrs, "context"), "context")?,
        parent_names: names.into_iter().map(Arc::<str>::from).collect(),
        dependency_results,
        parent_trace: None,
        trace_ids: None,
    })
}

/// Any Ruby value as text PostgreSQL can store: a String's bytes decoded lossily (invalid
/// UTF-8 becomes U+FFFD), NUL bytes replaced by U+FFFD, at most [`MAX_TEXT_BYTES`]; other
/// values through their class name only (never by calling into them).
fn storable_text(value: Value) -> String {
    let raw = match RString::from_value(value) {
        // SAFETY: the bytes are copied before any Ruby code can run.
        Some(s) => String::from_utf8_lossy(unsafe { s.as_slice() }).into_owned(),
        None if value.is_nil() => String::new(),
        None => format!("(a {})", value.class().inspect()),
    };
    let mut text = raw.replace('\0', "\u{FFFD}");
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[magnus::wrap(class = "TaskerCore::Native::StepEvent", free_immediately, size)]
pub struct RbStepEvent {
    event: StepEvent,
    /// The naive baseline of the benchmarks: fresh Ruby strings instead of interned ones.
    naive: bool,
    /// Taken when the outcome is handed back; the event stays readable afterwards.
    slot: Mutex<Option<Slot>>,
    /// The engine that claimed the step; none for a detached event (`StepEvent.detached`,
    /// the benchmarks), which keeps the outcome it is handed instead.
    engine: Option<Arc<Engine>>,
    /// A detached event's outcome, as the engine would have taken it.
    kept: Mutex<Option<StepOutcome>>,
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("StepEvent", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_method("task_uuid", method!(RbStepEvent::task_uuid, 0))?;
    class.define_method("step_uuid", method!(RbStepEvent::step_uuid, 0))?;
    class.define_method("correlation_id", method!(RbStepEvent::correlation_id, 0))?;
    class.define_method(
        "parent_correlation_id",
        method!(RbStepEvent::parent_correlation_id, 0),
    )?;
    class.define_method("namespace", method!(RbStepEvent::namespace, 0))?;
    class.define_method("trace_id", method!(RbStepEvent::trace_id, 0))?;
    class.define_method("span_id", method!(RbStepEvent::span_id, 0))?;
    class.define_method("task_name", method!(RbStepEvent::task_name, 0))?;
    class.define_method("task_version", method!(RbStepEvent::task_version, 0))?;
    class.define_method("step_name", method!(RbStepEvent::step_name, 0))?;
    class.define_method("handler_class", method!(RbStepEvent::handler_class, 0))?;
    class.define_method("attempts", method!(RbStepEvent::attempts, 0))?;
    class.define_method("max_attempts", method!(RbStepEvent::max_attempts, 0))?;
    class.define_method("timeout_seconds", method!(RbStepEvent::timeout_seconds, 0))?;
    class.define_method("context", method!(RbStepEvent::context, 0))?;
    class.define_method("handler_config", method!(RbStepEvent::handler_config, 0))?;
    class.define_method(
        "handler_config_id",
        method!(RbStepEvent::handler_config_id, 0),
    )?;
    class.define_method(
        "dependency_result",
        method!(RbStepEvent::dependency_result, 1),
    )?;
    class.define_method(
        "dependency_names",
        method!(RbStepEvent::dependency_names, 0),
    )?;
    class.define_method("parent_names", method!(RbStepEvent::parent_names, 0))?;
    class.define_method("completed?", method!(RbStepEvent::is_completed, 0))?;
    class.define_singleton_method("detached", magnus::function!(RbStepEvent::detached, 1))?;
    class.define_method("outcome", method!(RbStepEvent::outcome, 0))?;
    class.define_method(
        "complete_success",
        method!(RbStepEvent::complete_success, 2),
    )?;
    class.define_method(
        "complete_failure",
        method!(RbStepEvent::complete_failure, 1),
    )?;
    Ok(())
}

/// A frozen Ruby string from the VM's fstring table: the same object for the same name.
fn interned(ruby: &Ruby, s: &str) -> Value {
    // SAFETY: pointer and length describe a valid UTF-8 buffer for the duration of the call;
    // rb_enc_interned_str copies it when the string is not in the table yet.
    unsafe {
        let raw = rb_sys::rb_enc_interned_str(
            s.as_ptr() as *const std::os::raw::c_char,
            s.len() as _,
            rb_sys::rb_utf8_encoding(),
        );
        let _ = ruby;
        Value::from_raw(raw)
    }
}

impl RbStepEvent {
    /// A step `engine` claimed.
    pub fn new(dispatch: Dispatch, engine: Arc<Engine>) -> Self {
        Self::with_mode(dispatch, false, Some(engine))
    }

    pub fn with_mode(dispatch: Dispatch, naive: bool, engine: Option<Arc<Engine>>) -> Self {
        let (event, slot) = dispatch.into_parts();
        RbStepEvent {
            event,
            naive,
            slot: Mutex::new(Some(slot)),
            engine,
            kept: Mutex::new(None),
        }
    }

    fn name(&self, ruby: &Ruby, s: &str) -> Value {
        if self.naive {
            ruby.str_new(s).as_value()
        } else {
            interned(ruby, s)
        }
    }

    /// A UUID as a Ruby string, formatted on the stack (no Rust heap allocation).
    fn uuid(&self, ruby: &Ruby, u: &Uuid) -> RString {
        if self.naive {
            return ruby.str_new(&u.to_string());
        }
        let mut buf = Uuid::encode_buffer();
        ruby.str_new(u.hyphenated().encode_lower(&mut buf))
    }

    guarded! {
        fn task_uuid(ruby: &Ruby, rb_self: &Self) -> Result<RString, Error> {
            Ok(rb_self.uuid(ruby, &rb_self.event.ticket.task_uuid))
        }

        fn step_uuid(ruby: &Ruby, rb_self: &Self) -> Result<RString, Error> {
            Ok(rb_self.uuid(ruby, &rb_self.event.ticket.step_uuid))
        }

        fn correlation_id(ruby: &Ruby, rb_self: &Self) -> Result<RString, Error> {
            Ok(rb_self.uuid(ruby, &rb_self.event.ticket.correlation_id))
        }

        /// The handler span's trace id (32 hex digits), when traces are exported.
        fn trace_id(ruby: &Ruby, rb_self: &Self) -> Result<Option<String>, Error> {
            let _ = ruby;
            Ok(rb_self.event.trace_ids.map(|(t, _)| t.to_string()))
        }

        /// The handler span's id (16 hex digits), when traces are exported.
        fn span_id(ruby: &Ruby, rb_self: &Self) -> Result<Option<String>, Error> {
            let _ = ruby;
            Ok(rb_self.event.trace_ids.map(|(_, s)| s.to_string()))
        }

        fn parent_correlation_id(ruby: &Ruby, rb_self: &Self) -> Result<Option<RString>, Error> {
            Ok(rb_self
                .event
                .parent_correlation_id
                .as_ref()
                .map(|u| rb_self.uuid(ruby, u)))
        }

        fn namespace(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            Ok(rb_self.name(ruby, &rb_self.event.ticket.namespace))
        }

        fn task_name(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            Ok(rb_self.name(ruby, &rb_self.event.task_name))
        }

        fn task_version(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            Ok(rb_self.name(ruby, &rb_self.event.task_version))
        }

        fn step_name(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            Ok(rb_self.name(ruby, &rb_self.event.step_name))
        }

        fn handler_class(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            Ok(rb_self.name(ruby, &rb_self.event.handler_class))
        }

        fn attempts(ruby: &Ruby, rb_self: &Self) -> Result<u32, Error> {
            let _ = ruby;
            Ok(rb_self.event.attempts)
        }

        fn max_attempts(ruby: &Ruby, rb_self: &Self) -> Result<u32, Error> {
            let _ = ruby;
            Ok(rb_self.event.max_attempts)
        }

        fn timeout_seconds(ruby: &Ruby, rb_self: &Self) -> Result<u32, Error> {
            let _ = ruby;
            Ok(rb_self.event.timeout_seconds)
        }

        fn context(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            convert::to_ruby(ruby, &rb_self.event.context)
        }

        fn handler_config(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            convert::to_ruby(ruby, &rb_self.event.handler_config)
        }

        fn dependency_result(ruby: &Ruby, rb_self: &Self, name: Value) -> Result<Value, Error> {
            let name = crate::args::text(ruby, "ValidationError", "step name", name)?;
            match rb_self.event.dependency_result(&name) {
                Some(v) => convert::to_ruby(ruby, v),
                None => Ok(ruby.qnil().as_value()),
            }
        }

        fn dependency_names(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
            let e = &rb_self.event;
            let out = ruby.ary_new_capa(e.dependency_results.len());
            for (n, _) in &e.dependency_results {
                out.push(rb_self.name(ruby, n))?;
            }
            Ok(out)
        }

        /// Identifies the step's configuration for the engine's lifetime (templates are never
        /// dropped while it runs), so Ruby converts and freezes each configuration once.
        fn handler_config_id(ruby: &Ruby, rb_self: &Self) -> Result<usize, Error> {
            let _ = ruby;
            Ok(std::sync::Arc::as_ptr(&rb_self.event.handler_config) as usize)
        }

        fn parent_names(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
            let e = &rb_self.event;
            let out = ruby.ary_new_capa(e.parent_names.len());
            for n in e.parent_names.iter() {
                out.push(rb_self.name(ruby, n))?;
            }
            Ok(out)
        }

        /// A step event that no engine claimed, for `TaskerCore::Testing.run_step`: the same
        /// object the engine hands a handler thread, built from a Hash (namespace, task_name,
        /// task_version, step_name, handler_class, attempts, max_attempts, timeout_seconds,
        /// context, handler_config, parent_names, dependency_results). It keeps the outcome it
        /// is handed (`outcome`) instead of sending it to an engine.
        fn detached(ruby: &Ruby, attrs: magnus::RHash) -> Result<Self, Error> {
            Ok(Self::with_mode(Dispatch::detached(detached_event(ruby, attrs)?), false, None))
        }

        /// What a detached event was handed, as the engine records it: nil before; then
        /// `{"status" => "complete", "result", "metadata"}` or `{"status" => "error",
        /// "error" => the step's stored error, "fault" => whether it counts against the
        /// handler's breaker}`.
        fn outcome(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
            let kept = rb_self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let json = match &*kept {
                None => return Ok(ruby.qnil().as_value()),
                Some(StepOutcome::Success { result, metadata }) => serde_json::json!({
                    "status": "complete", "result": result, "metadata": metadata,
                }),
                Some(StepOutcome::Failure(f)) => serde_json::json!({
                    "status": "error", "error": f.recorded(rb_self.event.attempts), "fault": f.fault,
                }),
            };
            convert::to_ruby(ruby, &json)
        }

        fn is_completed(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
            let _ = ruby;
            Ok(rb_self
                .slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none())
        }

        /// Hand back a success. Raises ValidationError (leaving the step open) when the result
        /// or metadata has no JSON form PostgreSQL can store.
        fn complete_success(
            ruby: &Ruby,
            rb_self: &Self,
            result: Value,
            metadata: Value,
        ) -> Result<bool, Error> {
            let result = convert::to_json(ruby, result, "result")?;
            let metadata = convert::to_json(ruby, metadata, "metadata")?;
            Self::finish(ruby, rb_self, StepOutcome::Success { result, metadata })
        }

        /// Hand back a failure: a Hash with "kind" ("retryable" | "permanent"), "error_class",
        /// "message", "backtrace", optional "retry_after" (seconds), "error_code" and
        /// "metadata" (a Hash, stored with the failure). Whatever
        /// the Hash holds, the failure is recorded: text is made storable (invalid bytes and
        /// NULs replaced), a `retry_after` that is not a finite non-negative number is ignored
        /// and a longer one is capped at the engine's ceiling. An unknown kind is refused.
        fn complete_failure(ruby: &Ruby, rb_self: &Self, failure: magnus::RHash) -> Result<bool, Error> {
            let kind = match storable_text(args_get(failure, "kind")).as_str() {
                "permanent" => FailureKind::Permanent,
                "retryable" => FailureKind::Retryable,
                other => {
                    return Err(error(
                        ruby,
                        "ValidationError",
                        format!("failure kind must be \"retryable\" or \"permanent\", got {other:?}"),
                    ))
                }
            };
            let retry_after = magnus::Float::from_value(args_get(failure, "retry_after"))
                .map(|f| f.to_f64())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| tasker_core::limits::clamped_seconds(s, RETRY_AFTER_CEILING));
            let backtrace = RArray::from_value(args_get(failure, "backtrace"))
                .map(|lines| lines.into_iter().take(MAX_BACKTRACE_LINES).map(storable_text).collect())
                .unwrap_or_default();
            let code = args_get(failure, "error_code");
            // The error's metadata as JSON; metadata without a JSON form is recorded as why.
            let metadata = match args_get(failure, "metadata") {
                m if m.is_nil() => None,
                m => Some(convert::to_json(ruby, m, "metadata").unwrap_or_else(|e| {
                    serde_json::json!({ "unrecordable": e.to_string() })
                })),
            };
            let failure = StepFailure {
                kind,
                error_class: storable_text(args_get(failure, "error_class")),
                message: storable_text(args_get(failure, "message")),
                backtrace,
                retry_after,
                error_code: (!code.is_nil()).then(|| storable_text(code)),
                fault: args_get(failure, "fault").to_bool(),
                metadata,
            };
            Self::finish(ruby, rb_self, StepOutcome::Failure(failure))
        }
    }
    fn finish(ruby: &Ruby, rb_self: &Self, outcome: StepOutcome) -> Result<bool, Error> {
        let slot = rb_self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| error(ruby, "Error", "this step was already completed"))?;
        match &rb_self.engine {
            Some(engine) if engine.is_running() => engine
                .complete_ticket(rb_self.event.ticket.clone(), slot, outcome)
                .map(|_| true)
                .map_err(|e| crate::errors::to_ruby(ruby, e)),
            // Not running (stopped or forked): the claim expires and the step is redelivered.
            Some(_) => Ok(false),
            None => {
                *rb_self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                Ok(true)
            }
        }
    }
}
