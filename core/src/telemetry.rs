//! OpenTelemetry metrics and traces, exported over OTLP/HTTP (protobuf). Off unless
//! configured: without it every hook below is a `None` check.
//!
//! Metrics carry bounded labels only (namespace, task name, step name, outcome, error type);
//! correlation ids go on spans. A task's trace: `task.initialize` (at creation, a child of the
//! caller's W3C `traceparent` when one is given; stored with the task), then per attempt
//! `step.attempt` (claim → outcome applied) with `step.handler` (the handler's run) inside it.
//! No span is ever entered on a Ruby thread: `step.attempt` is started with the claim's
//! timestamp, and `step.handler` is started when a handler thread takes the step and ended
//! when its outcome is handed back (held by the step's slot meanwhile, never as a current
//! context).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span as SdkSpan};
use opentelemetry_sdk::Resource;

use crate::error::{Error, Result};
use crate::worker::{StepEvent, StepOutcome};

/// Export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Base URL of the collector (`http://host:4318`); `/v1/metrics` and `/v1/traces` are
    /// appended. None: the `OTEL_EXPORTER_OTLP_*` environment variables decide.
    pub endpoint: Option<String>,
    pub service_name: String,
    /// How often metrics are exported (also on shutdown).
    pub export_interval: Duration,
    /// Share of new traces recorded (a task created inside a caller's trace follows the
    /// caller's sampling decision).
    pub sampling_ratio: f64,
}

/// The instruments, by their OTLP names (Prometheus renders `tasker.steps.executions` as
/// `tasker_steps_executions_total`).
pub(crate) struct Instruments {
    pub task_requests: Counter<u64>,
    pub task_completions: Counter<u64>,
    pub task_failures: Counter<u64>,
    pub task_initialization: Histogram<f64>,
    pub task_finalization: Histogram<f64>,
    pub steps_enqueued: Counter<u64>,
    pub steps_claimed: Counter<u64>,
    pub steps_executions: Counter<u64>,
    pub steps_succeeded: Counter<u64>,
    pub steps_failed: Counter<u64>,
    pub step_execution: Histogram<f64>,
    pub step_claim: Histogram<f64>,
    pub result_processing: Histogram<f64>,
    pub results_submitted: Counter<u64>,
    pub ffi_dispatch_wait: Histogram<f64>,
    pub maintenance_deleted: Counter<u64>,
}

/// Providers and instruments of a running engine.
pub(crate) struct Telemetry {
    meters: SdkMeterProvider,
    traces: SdkTracerProvider,
    meter: Meter,
    pub tracer: SdkTracer,
    pub m: Instruments,
    /// Latest depth of each served namespace queue, refreshed by the engine (observed at export).
    pub queue_depths: Arc<Vec<(Arc<str>, AtomicI64)>>,
}

fn ms_histogram(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("ms")
        .with_description(description)
        .build()
}

fn counter(meter: &Meter, name: &'static str, description: &'static str) -> Counter<u64> {
    meter
        .u64_counter(name)
        .with_description(description)
        .build()
}

impl Telemetry {
    /// Build the exporters (blocking HTTP clients: call outside any async runtime).
    pub fn start(config: &TelemetryConfig, namespaces: &[String]) -> Result<Telemetry> {
        let endpoint = |path: &str| {
            config
                .endpoint
                .as_deref()
                .map(|base| format!("{}{path}", base.trim_end_matches('/')))
        };
        let bad = |e: opentelemetry_otlp::ExporterBuildError| {
            Error::Configuration(format!("OpenTelemetry exporter: {e}"))
        };
        let mut metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(url) = endpoint("/v1/metrics") {
            metric_exporter = metric_exporter.with_endpoint(url);
        }
        let mut span_exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(url) = endpoint("/v1/traces") {
            span_exporter = span_exporter.with_endpoint(url);
        }
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.namespace", "tasker_core"))
            .build();
        let reader = PeriodicReader::builder(metric_exporter.build().map_err(bad)?)
            .with_interval(config.export_interval)
            .build();
        let meters = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(reader)
            .build();
        let traces = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio.clamp(0.0, 1.0),
            ))))
            .with_batch_exporter(span_exporter.build().map_err(bad)?)
            .build();
        let meter = meters.meter("tasker_core");
        let tracer = traces.tracer("tasker_core");
        let m = Instruments {
            task_requests: counter(&meter, "tasker.tasks.requests", "tasks requested"),
            task_completions: counter(&meter, "tasker.tasks.completions", "tasks that completed"),
            task_failures: counter(&meter, "tasker.tasks.failures", "tasks that ended in error"),
            task_initialization: ms_histogram(
                &meter,
                "tasker.task.initialization.duration",
                "creating a task: its rows, transitions and first messages",
            ),
            task_finalization: ms_histogram(
                &meter,
                "tasker.task.finalization.duration",
                "applying the outcome that finalized a task",
            ),
            steps_enqueued: counter(&meter, "tasker.steps.enqueued", "steps sent to a queue"),
            steps_claimed: counter(&meter, "tasker.steps.claimed", "step attempts claimed"),
            steps_executions: counter(&meter, "tasker.steps.executions", "step attempts run"),
            steps_succeeded: counter(
                &meter,
                "tasker.steps.succeeded",
                "step attempts that succeeded",
            ),
            steps_failed: counter(&meter, "tasker.steps.failed", "step attempts that failed"),
            step_execution: ms_histogram(
                &meter,
                "tasker.step.execution.duration",
                "a handler's run",
            ),
            step_claim: ms_histogram(&meter, "tasker.step.claim.duration", "claiming a step"),
            result_processing: ms_histogram(
                &meter,
                "tasker.step.result_processing.duration",
                "applying a step's outcome",
            ),
            results_submitted: counter(
                &meter,
                "tasker.steps.results_submitted",
                "outcomes handed back by handlers",
            ),
            ffi_dispatch_wait: ms_histogram(
                &meter,
                "tasker.ffi.dispatch.wait",
                "time a claimed step waited for a handler thread to take it",
            ),
            maintenance_deleted: counter(
                &meter,
                "tasker.maintenance.deleted",
                "rows deleted by retention (kind: tasks, steps, transitions, archived)",
            ),
        };
        let queue_depths = Arc::new(
            namespaces
                .iter()
                .map(|ns| (Arc::<str>::from(ns.as_str()), AtomicI64::new(-1)))
                .collect(),
        );
        Ok(Telemetry {
            meters,
            traces,
            meter,
            tracer,
            m,
            queue_depths,
        })
    }

    /// Gauges read at export time: each breaker's state (0 closed, 1 open, 2 half-open) and
    /// rejections, and each served queue's depth.
    pub fn observe(&self, breakers: Weak<dyn BreakerSource>) {
        let states = breakers.clone();
        let _ = self
            .meter
            .u64_observable_gauge("tasker.circuit_breaker.state")
            .with_description("0 closed, 1 open, 2 half-open")
            .with_callback(move |o| {
                if let Some(source) = states.upgrade() {
                    for (kind, b) in source.breakers() {
                        let state = match b.state() {
                            crate::resilience::CircuitState::Closed => 0,
                            crate::resilience::CircuitState::Open => 1,
                            crate::resilience::CircuitState::HalfOpen => 2,
                        };
                        o.observe(state, &breaker_labels(kind, b.name()));
                    }
                }
            })
            .build();
        let _ = self
            .meter
            .u64_observable_counter("tasker.circuit_breaker.rejections")
            .with_description("calls a breaker refused while open")
            .with_callback(move |o| {
                if let Some(source) = breakers.upgrade() {
                    for (kind, b) in source.breakers() {
                        o.observe(b.metrics().rejections, &breaker_labels(kind, b.name()));
                    }
                }
            })
            .build();
        let depths = self.queue_depths.clone();
        let _ = self
            .meter
            .i64_observable_gauge("tasker.queue.depth")
            .with_description("messages in a namespace queue")
            .with_callback(move |o| {
                for (ns, depth) in depths.iter() {
                    let d = depth.load(Ordering::Relaxed);
                    if d >= 0 {
                        o.observe(d, &[KeyValue::new("namespace", Value::from(ns.clone()))]);
                    }
                }
            })
            .build();
    }

    /// Flush and stop the exporters (blocking; call outside any async runtime).
    pub fn shutdown(&self) {
        if let Err(e) = self.meters.shutdown() {
            tracing::warn!(error = %e, "flushing OpenTelemetry metrics failed");
        }
        if let Err(e) = self.traces.shutdown() {
            tracing::warn!(error = %e, "flushing OpenTelemetry traces failed");
        }
    }
}

/// The spans and timings of one step attempt, carried with its handler slot from the claim
/// to the applied outcome.
pub struct StepTrace {
    span: SdkSpan,
    handler: Option<SdkSpan>,
    /// namespace, task name, step name.
    labels: [KeyValue; 3],
    dispatched_at: Instant,
    taken_at: Option<Instant>,
}

impl std::fmt::Debug for StepTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepTrace")
            .field("span", self.span.span_context())
            .finish()
    }
}

fn with<const N: usize>(labels: &[KeyValue; N], extra: KeyValue) -> Vec<KeyValue> {
    let mut v = Vec::with_capacity(N + 1);
    v.extend_from_slice(labels);
    v.push(extra);
    v
}

impl Telemetry {
    /// A task is being created: its `task.initialize` span (child of the caller's context).
    pub fn task_span(&self, parent: Option<SpanContext>) -> SdkSpan {
        self.tracer
            .span_builder("task.initialize")
            .with_kind(SpanKind::Internal)
            .start_with_context(&self.tracer, &context_of(parent))
    }

    /// A task was created (or found by its idempotency key).
    pub fn task_created(
        &self,
        mut span: SdkSpan,
        reg: &crate::orchestration::RegisteredTemplate,
        created: &crate::orchestration::CreatedTask,
        elapsed: Duration,
    ) {
        let labels = [
            KeyValue::new("namespace", Value::from(reg.template.namespace.clone())),
            KeyValue::new("task_name", Value::from(reg.template.name.clone())),
        ];
        self.m.task_requests.add(1, &labels);
        self.m.task_initialization.record(ms(elapsed), &labels);
        if created.created {
            let roots = reg
                .template
                .steps
                .iter()
                .filter(|s| s.parents.is_empty())
                .count();
            self.m.steps_enqueued.add(roots as u64, &labels);
        }
        span.set_attributes([
            KeyValue::new("tasker.correlation_id", created.correlation_id.to_string()),
            KeyValue::new("tasker.task_uuid", created.task_uuid.to_string()),
            labels[0].clone(),
            labels[1].clone(),
        ]);
        span.end();
    }

    /// A step was claimed: its `step.attempt` span starts (back-dated to the claim's start).
    pub fn claimed(
        &self,
        event: &StepEvent,
        started: Instant,
        started_at: SystemTime,
    ) -> StepTrace {
        let labels = [
            KeyValue::new("namespace", Value::from(event.ticket.namespace.clone())),
            KeyValue::new("task_name", Value::from(event.task_name.clone())),
            KeyValue::new("step_name", Value::from(event.step_name.clone())),
        ];
        self.m.steps_claimed.add(1, &labels);
        self.m.step_claim.record(ms(started.elapsed()), &labels);
        let span = self
            .tracer
            .span_builder("step.attempt")
            .with_kind(SpanKind::Internal)
            .with_start_time(started_at)
            .with_attributes([
                KeyValue::new(
                    "tasker.correlation_id",
                    event.ticket.correlation_id.to_string(),
                ),
                KeyValue::new("tasker.task_uuid", event.ticket.task_uuid.to_string()),
                KeyValue::new("tasker.step_uuid", event.ticket.step_uuid.to_string()),
                KeyValue::new("tasker.attempt", i64::from(event.attempts)),
                labels[0].clone(),
                labels[1].clone(),
                labels[2].clone(),
            ])
            .start_with_context(&self.tracer, &context_of(event.parent_trace.clone()));
        StepTrace {
            span,
            handler: None,
            labels,
            dispatched_at: Instant::now(),
            taken_at: None,
        }
    }

    /// A handler thread took the step: its `step.handler` span starts. Returns the ids the
    /// handler sees (and its log lines carry).
    pub fn taken(&self, trace: &mut StepTrace) -> (TraceId, SpanId) {
        let now = Instant::now();
        self.m
            .ffi_dispatch_wait
            .record(ms(now - trace.dispatched_at), &trace.labels);
        let parent = context_of(Some(trace.span.span_context().clone()));
        let handler = self
            .tracer
            .span_builder("step.handler")
            .with_kind(SpanKind::Internal)
            .start_with_context(&self.tracer, &parent);
        let ids = (
            handler.span_context().trace_id(),
            handler.span_context().span_id(),
        );
        trace.handler = Some(handler);
        trace.taken_at = Some(now);
        ids
    }

    /// The handler handed back its outcome.
    pub fn handed_back(&self, trace: &mut StepTrace, outcome: &StepOutcome) {
        self.m.results_submitted.add(1, &trace.labels);
        let (result, error_class) = match outcome {
            StepOutcome::Success { .. } => ("success", None),
            StepOutcome::Failure(f) => ("failure", Some(f.error_class.as_str())),
        };
        // One label set with the outcome, for the counter and the histogram.
        let with_outcome = with(&trace.labels, KeyValue::new("outcome", result));
        self.m.steps_executions.add(1, &with_outcome);
        match error_class {
            None => self.m.steps_succeeded.add(1, &trace.labels),
            Some(class) => self.m.steps_failed.add(
                1,
                &with(&trace.labels, KeyValue::new("error_type", class.to_owned())),
            ),
        }
        if let Some(taken) = trace.taken_at {
            self.m
                .step_execution
                .record(ms(taken.elapsed()), &with_outcome);
        }
        if let Some(mut handler) = trace.handler.take() {
            handler.set_attribute(KeyValue::new("tasker.outcome", result));
            if let Some(class) = error_class {
                handler.set_status(opentelemetry::trace::Status::error(class.to_owned()));
            }
            handler.end();
        }
    }

    /// The outcome was applied (or discarded): the attempt's span ends.
    pub fn applied(
        &self,
        trace: Option<StepTrace>,
        report: &crate::orchestration::ApplyReport,
        elapsed: Duration,
    ) {
        let Some(mut trace) = trace else { return };
        let task_labels = [trace.labels[0].clone(), trace.labels[1].clone()];
        self.m.result_processing.record(ms(elapsed), &trace.labels);
        let state = match report {
            crate::orchestration::ApplyReport::Discarded => "discarded",
            crate::orchestration::ApplyReport::Applied {
                step_state,
                enqueued_children,
                task_state,
                ..
            } => {
                if *enqueued_children > 0 {
                    self.m
                        .steps_enqueued
                        .add(*enqueued_children as u64, &task_labels);
                }
                match task_state {
                    Some(crate::state::TaskState::Complete) => {
                        self.m.task_completions.add(1, &task_labels);
                        self.m.task_finalization.record(ms(elapsed), &task_labels);
                    }
                    Some(crate::state::TaskState::Error) => {
                        self.m.task_failures.add(1, &task_labels);
                        self.m.task_finalization.record(ms(elapsed), &task_labels);
                    }
                    _ => {}
                }
                step_state.as_str()
            }
        };
        trace
            .span
            .set_attribute(KeyValue::new("tasker.step_state", state));
        trace.span.end();
    }

    /// Rows deleted by one retention batch, by kind.
    pub fn purged(&self, kind: &'static str, count: i64) {
        if count > 0 {
            self.m
                .maintenance_deleted
                .add(count as u64, &[KeyValue::new("kind", kind)]);
        }
    }

    /// Steps sent to a queue outside task creation and result application (retries, requeues).
    pub fn enqueued(&self, namespace: &str, count: usize) {
        self.m.steps_enqueued.add(
            count as u64,
            &[KeyValue::new("namespace", namespace.to_owned())],
        );
    }
}

/// Something that lists the engine's breakers (the engine's shared state).
pub(crate) trait BreakerSource: Send + Sync {
    fn breakers(&self) -> Vec<(&'static str, Arc<crate::resilience::CircuitBreaker>)>;
}

fn breaker_labels(kind: &'static str, name: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("breaker_kind", kind),
        KeyValue::new("breaker", name.to_owned()),
    ]
}

/// A span context from a W3C `traceparent` header (`00-<trace>-<span>-<flags>`).
pub fn parse_traceparent(header: &str) -> Option<SpanContext> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The W3C `traceparent` of a span context.
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// A context whose (remote) parent is `sc`.
pub fn context_of(sc: Option<SpanContext>) -> Context {
    match sc {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// Milliseconds of a duration, for the histograms.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_headers() {
        let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let sc = parse_traceparent(header).expect("valid");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        assert_eq!(format_traceparent(&sc), header);
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-xyz7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }
}
