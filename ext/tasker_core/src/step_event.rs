//! `TaskerCore::Native::StepEvent`: one claimed step, wrapped as a single Ruby object. Names
//! come out as interned (frozen, deduplicated) Ruby strings; the context and dependency
//! results become Ruby objects only when read. `complete_*` hands the outcome back once.

use std::sync::Mutex;
use std::time::Duration;

use magnus::{
    method, prelude::*, rb_sys::FromRawValue, value::ReprValue, Error, RArray, RModule, RString,
    Ruby, Value,
};
use tasker_core::{Dispatch, FailureKind, Slot, StepEvent, StepFailure, StepOutcome};
use uuid::Uuid;

use crate::convert;
use crate::errors::error;
use crate::native::running_engine;

#[magnus::wrap(class = "TaskerCore::Native::StepEvent", free_immediately, size)]
pub struct RbStepEvent {
    event: StepEvent,
    /// The naive baseline of the benchmarks: fresh Ruby strings instead of interned ones.
    naive: bool,
    /// Taken when the outcome is handed back; the event stays readable afterwards.
    slot: Mutex<Option<Slot>>,
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
    pub fn new(dispatch: Dispatch) -> Self {
        Self::with_mode(dispatch, false)
    }

    pub fn with_mode(dispatch: Dispatch, naive: bool) -> Self {
        let (event, slot) = dispatch.into_parts();
        RbStepEvent {
            event,
            naive,
            slot: Mutex::new(Some(slot)),
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

    /// Read the event; it stays readable after the outcome was handed back (a handler that
    /// outlived its timeout may still look at its step).
    fn with<T>(
        &self,
        _ruby: &Ruby,
        f: impl FnOnce(&StepEvent) -> Result<T, Error>,
    ) -> Result<T, Error> {
        f(&self.event)
    }

    fn task_uuid(ruby: &Ruby, rb_self: &Self) -> RString {
        rb_self.uuid(ruby, &rb_self.event.ticket.task_uuid)
    }

    fn step_uuid(ruby: &Ruby, rb_self: &Self) -> RString {
        rb_self.uuid(ruby, &rb_self.event.ticket.step_uuid)
    }

    fn correlation_id(ruby: &Ruby, rb_self: &Self) -> RString {
        rb_self.uuid(ruby, &rb_self.event.ticket.correlation_id)
    }

    /// The handler span's trace id (32 hex digits), when traces are exported.
    fn trace_id(rb_self: &Self) -> Option<String> {
        rb_self.event.trace_ids.map(|(t, _)| t.to_string())
    }

    /// The handler span's id (16 hex digits), when traces are exported.
    fn span_id(rb_self: &Self) -> Option<String> {
        rb_self.event.trace_ids.map(|(_, s)| s.to_string())
    }

    fn parent_correlation_id(ruby: &Ruby, rb_self: &Self) -> Option<RString> {
        rb_self
            .event
            .parent_correlation_id
            .as_ref()
            .map(|u| rb_self.uuid(ruby, u))
    }

    fn namespace(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        rb_self.with(ruby, |e| Ok(rb_self.name(ruby, &e.ticket.namespace)))
    }

    fn task_name(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        rb_self.with(ruby, |e| Ok(rb_self.name(ruby, &e.task_name)))
    }

    fn task_version(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        rb_self.with(ruby, |e| Ok(rb_self.name(ruby, &e.task_version)))
    }

    fn step_name(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        rb_self.with(ruby, |e| Ok(rb_self.name(ruby, &e.step_name)))
    }

    fn handler_class(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        rb_self.with(ruby, |e| Ok(rb_self.name(ruby, &e.handler_class)))
    }

    fn attempts(ruby: &Ruby, rb_self: &Self) -> Result<u32, Error> {
        rb_self.with(ruby, |e| Ok(e.attempts))
    }

    fn max_attempts(ruby: &Ruby, rb_self: &Self) -> Result<u32, Error> {
        rb_self.with(ruby, |e| Ok(e.max_attempts))
    }

    fn timeout_seconds(ruby: &Ruby, rb_self: &Self) -> Result<u32, Error> {
        rb_self.with(ruby, |e| Ok(e.timeout_seconds))
    }

    fn context(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        rb_self.with(ruby, |e| convert::to_ruby(ruby, &e.context))
    }

    fn handler_config(ruby: &Ruby, rb_self: &Self) -> Result<Value, Error> {
        rb_self.with(ruby, |e| convert::to_ruby(ruby, &e.handler_config))
    }

    fn dependency_result(ruby: &Ruby, rb_self: &Self, name: RString) -> Result<Value, Error> {
        let name = name.to_string()?;
        rb_self.with(ruby, |e| match e.dependency_result(&name) {
            Some(v) => convert::to_ruby(ruby, v),
            None => Ok(ruby.qnil().as_value()),
        })
    }

    fn dependency_names(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        rb_self.with(ruby, |e| {
            let out = ruby.ary_new_capa(e.dependency_results.len());
            for (n, _) in &e.dependency_results {
                out.push(rb_self.name(ruby, n))?;
            }
            Ok(out)
        })
    }

    /// Identifies the step's configuration for the engine's lifetime (templates are never
    /// dropped while it runs), so Ruby converts and freezes each configuration once.
    fn handler_config_id(&self) -> usize {
        std::sync::Arc::as_ptr(&self.event.handler_config) as usize
    }

    fn parent_names(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        rb_self.with(ruby, |e| {
            let out = ruby.ary_new_capa(e.parent_names.len());
            for n in e.parent_names.iter() {
                out.push(rb_self.name(ruby, n))?;
            }
            Ok(out)
        })
    }

    fn is_completed(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    fn finish(ruby: &Ruby, rb_self: &Self, outcome: StepOutcome) -> Result<bool, Error> {
        let slot = rb_self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| error(ruby, "Error", "this step was already completed"))?;
        match running_engine() {
            Some(engine) => engine
                .complete_ticket(rb_self.event.ticket.clone(), slot, outcome)
                .map(|_| true)
                .map_err(|e| crate::errors::to_ruby(ruby, e)),
            // Not running (stopped or forked): the claim expires and the step is redelivered.
            None => Ok(false),
        }
    }

    /// Hand back a success. Raises ValidationError (leaving the step open) when the result or
    /// metadata has no JSON form.
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
    /// "message", "backtrace", optional "retry_after" (seconds) and "error_code".
    fn complete_failure(
        ruby: &Ruby,
        rb_self: &Self,
        failure: magnus::RHash,
    ) -> Result<bool, Error> {
        let kind = match failure.fetch::<_, String>("kind")?.as_str() {
            "permanent" => FailureKind::Permanent,
            _ => FailureKind::Retryable,
        };
        let retry_after: Option<f64> = failure.fetch("retry_after")?;
        let failure = StepFailure {
            kind,
            error_class: failure.fetch("error_class")?,
            message: failure.fetch("message")?,
            backtrace: failure.fetch("backtrace")?,
            retry_after: retry_after
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
            error_code: failure.fetch("error_code")?,
            fault: failure.get("fault").is_some_and(|v| v.to_bool()),
        };
        Self::finish(ruby, rb_self, StepOutcome::Failure(failure))
    }
}
