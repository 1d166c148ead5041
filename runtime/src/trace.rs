//! Distributed tracing (MISSION S4.5): the process's `tracing` subscriber, and OpenTelemetry
//! spans exported over OTLP/gRPC when `tracing.endpoint` is set.
//!
//! Quiver's spans are `tracing` spans at DEBUG level with targets under `quiver`: with tracing
//! off (the default) and the default log filter they are disabled at their call sites and cost
//! next to nothing. With tracing on, [`tracing_opentelemetry`] turns them into OpenTelemetry
//! spans (`otel.name`, `otel.kind`, `otel.status_code` fields name, classify and mark them),
//! sampled by [`TracingConfig::sampling_ratio`] unless the caller's trace context decides.
//!
//! Context crosses processes as a W3C `traceparent`: in the `traceparent` header of NATS
//! requests ([`crate::bus`] sends the current span's, else the caller's it was given) and in
//! gRPC metadata (a client's is honoured). Every role's request handler opens its server span
//! as a child of the `traceparent` it received ([`set_remote_parent`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{dynamic_filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TracingConfig;
use crate::error::{Error, Result};

/// Whether spans are recorded (an exporter is installed).
static ON: AtomicBool = AtomicBool::new(false);

/// `tracing.sampling_ratio`, as `f64` bits.
static RATIO: AtomicU64 = AtomicU64::new(0);

/// Spans that may start a trace: requests' server spans (made only for requests that are
/// traced, [`sampling`]) and the background work that is not part of a request. Every other
/// span is recorded only inside one of these: with the request's root span not made, none of
/// its spans cost more than a filter check.
const ROOTS: &[&str] = &["request", "grpc", "seal", "index_build", "compaction", "scaling_step", "handoff"];

/// The runtime the OTLP exporter's gRPC channel lives on (one thread; the batch processor's
/// own thread hands it the batches).
static EXPORT_RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// How often finished spans are sent to the collector.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// Longest one export may take before the batch is dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The OTLP exporter of this process: spans still buffered are sent when it is dropped.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Starts the exporter for `config` (None when `tracing.endpoint` is empty). `instance`
    /// names this process in the collector (`service.instance.id`).
    pub fn start(config: &TracingConfig, cluster: &str, instance: &str) -> Result<Option<Exporter>> {
        if config.endpoint.is_empty() {
            return Ok(None);
        }
        let runtime = match EXPORT_RUNTIME.get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("quiver-otlp")
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Config(format!("tracing: cannot start the exporter's runtime: {e}")))?;
                EXPORT_RUNTIME.get_or_init(|| rt)
            }
        };
        let _entered = runtime.enter();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(format!("tracing.endpoint {}: {e}", config.endpoint)))?;
        let batches = BatchSpanProcessor::builder(Counted(exporter))
            .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build())
            .build();
        let resource = Resource::builder()
            .with_service_name("quiver")
            .with_attributes([
                KeyValue::new("service.instance.id", instance.to_string()),
                KeyValue::new("host.name", crate::telemetry::hostname()),
                KeyValue::new("quiver.cluster", cluster.to_string()),
            ])
            .build();
        // Quiver decides which requests are traced before making their spans ([`sampling`]);
        // what reaches the SDK is recorded.
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .build();
        RATIO.store(config.sampling_ratio.to_bits(), Ordering::Relaxed);
        Ok(Some(Exporter { provider }))
    }
}

/// The OTLP exporter, counting what it sends and what it could not
/// (`quiver_trace_spans_exported_total`, `quiver_trace_export_failures_total`), with a warning
/// on the first failure and every 60th after it (a batch goes out every second).
#[derive(Debug)]
struct Counted(opentelemetry_otlp::SpanExporter);

impl opentelemetry_sdk::trace::SpanExporter for Counted {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        static FAILURES: AtomicU64 = AtomicU64::new(0);
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        match &result {
            Ok(()) => metrics::counter!("quiver_trace_spans_exported_total").increment(spans),
            Err(e) => {
                metrics::counter!("quiver_trace_export_failures_total").increment(1);
                let failures = FAILURES.fetch_add(1, Ordering::Relaxed);
                if failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, spans, failures = failures + 1, "could not send spans to the trace collector (tracing.endpoint); they are dropped");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "could not send the last spans to the trace collector");
        }
    }
}

/// Installs the process's subscriber: log lines on stderr filtered by `RUST_LOG` (else
/// `default_filter`), plus, with an exporter, Quiver's spans as OpenTelemetry spans. Once per
/// process, before anything logs.
pub fn init(default_filter: &str, exporter: Option<&Exporter>) {
    // Colours only on a terminal: nodes of `quiver cluster` (and the test harness) log to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let log = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter);
    match exporter {
        Some(e) => {
            let spans = tracing_opentelemetry::layer()
                .with_tracer(e.provider.tracer("quiver"))
                .with_filter(dynamic_filter_fn(traced).with_max_level_hint(LevelFilter::DEBUG));
            tracing_subscriber::registry().with(log).with(spans).init();
            ON.store(true, Ordering::Relaxed);
        }
        // No span layer at all (not an empty one, which would enable every call site): the
        // log filter alone decides, so Quiver's DEBUG spans are disabled where they are made.
        None => tracing_subscriber::registry().with(log).init(),
    }
}

/// What becomes part of a trace: Quiver's root spans ([`ROOTS`]), its other spans inside a
/// recorded one, and warnings and errors logged inside them.
fn traced<S>(meta: &tracing::Metadata<'_>, cx: &tracing_subscriber::layer::Context<'_, S>) -> bool
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if meta.is_span() {
        meta.target().starts_with("quiver")
            && *meta.level() <= Level::DEBUG
            && (ROOTS.contains(&meta.name()) || cx.lookup_current().is_some())
    } else {
        *meta.level() <= Level::WARN
    }
}

/// Whether a request is traced, decided once where it enters the cluster (or a process).
#[derive(Debug, PartialEq)]
pub enum Sampling {
    /// Tracing is off.
    Off,
    /// Make its spans: the caller's context (the parent, for [`set_remote_parent`]) says
    /// sampled, or it has none and the ratio chose it.
    Traced(Option<SpanContext>),
    /// Make none, and tell the nodes it calls so (this unsampled `traceparent` goes with its
    /// calls, so that they do not decide again and trace a fragment).
    Untraced(String),
}

/// Decides whether a request that arrived with `traceparent` is traced: a valid one's sampled
/// flag decides; without one (or a malformed one), `tracing.sampling_ratio`.
pub fn sampling(traceparent: Option<&str>) -> Sampling {
    if !enabled() {
        return Sampling::Off;
    }
    if let Some(tp) = traceparent {
        if let Some(parent) = parse_traceparent(tp) {
            return if parent.is_sampled() {
                Sampling::Traced(Some(parent))
            } else {
                Sampling::Untraced(tp.to_string())
            };
        }
    }
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    if ratio >= 1.0 || rand::random::<f64>() < ratio {
        Sampling::Traced(None)
    } else {
        Sampling::Untraced(unsampled_traceparent())
    }
}

/// For a request that arrived without a valid trace context while tracing is on: the
/// unsampled context its calls should carry when it is not traced (None otherwise). Callers
/// with a recorded span send that span's context instead, so this is only a fallback.
pub fn untraced_fallback(traceparent: Option<&str>) -> Option<String> {
    (enabled() && traceparent.and_then(parse_traceparent).is_none()).then(unsampled_traceparent)
}

/// A fresh W3C `traceparent` with random ids and the sampled flag clear.
fn unsampled_traceparent() -> String {
    let trace = rand::random::<u128>().max(1);
    let span = rand::random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-00")
}

/// Whether spans are recorded and exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of the current span, for a request sent from within it: None with
/// tracing off or outside a recorded span.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&tracing::Span::current())
}

/// The OpenTelemetry context of `span` when it is recorded (tracing on, a valid context).
fn recorded(span: &tracing::Span) -> Option<SpanContext> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The W3C `traceparent` of `span` (None when it is not recorded).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    recorded(span).map(|sc| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// The trace id of `span` in hex (None when it is not recorded or not sampled).
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    recorded(span).filter(SpanContext::is_sampled).map(|sc| sc.trace_id().to_string())
}

/// Makes `span` a child of the caller's span (from its W3C `traceparent`, as [`sampling`]
/// found it; None: the span starts a trace of its own). Call before the span is entered.
pub fn set_remote_parent(span: &tracing::Span, parent: Option<SpanContext>) {
    if !enabled() || span.is_disabled() {
        return;
    }
    if let Some(parent) = parent {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
}

/// Marks `span` failed (`otel.status_code`, `otel.status_message`; the span must declare both
/// fields, empty).
pub fn record_error(span: &tracing::Span, error: &dyn std::fmt::Display) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", tracing::field::display(error));
}

/// Parses a W3C `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`); None for
/// anything else, all-zero ids included. Later versions' extra fields are ignored, as the
/// specification asks.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(trace, span, TraceFlags::new(flags & 1), true, TraceState::default());
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_strictly() {
        let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        let unsampled = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
        // A later version may carry more fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-a-b-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn unsampled_contexts_are_valid_and_unsampled() {
        for _ in 0..100 {
            let tp = unsampled_traceparent();
            let sc = parse_traceparent(&tp).unwrap();
            assert!(!sc.is_sampled(), "{tp}");
        }
        // With tracing off nothing is decided.
        assert_eq!(sampling(None), Sampling::Off);
        assert_eq!(untraced_fallback(None), None);
    }

    #[test]
    fn nothing_is_recorded_with_tracing_off() {
        let span = tracing::debug_span!("x");
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(current_traceparent(), None);
        set_remote_parent(&span, parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    }
}
