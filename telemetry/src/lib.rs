//! Telemetry shared by the manager, the adapter, the agent and the lab (DESIGN "Observability"):
//! the one log set-up ([`init`] for daemons, [`init_logs`] for one-shot commands, both through
//! [`log_filter`]), optional OpenTelemetry export over OTLP/gRPC, and W3C trace-context
//! propagation.
//!
//! ```text
//!   tracing spans ──▶ fmt layer (stderr, RUST_LOG / --log filter)
//!                └──▶ OpenTelemetry layer (only targets `traceflow*`) ──▶ batch processor
//!                        ──▶ OTLP/gRPC exporter (tonic, lazy channel) ──▶ collector
//!
//!   span ──context_map──▶ {"traceparent": "00-…"} ──(proto field / gRPC metadata)──▶
//!        ──set_parent_from_map / set_parent_from_metadata──▶ child span in the next process
//! ```
//!
//! Contract:
//! - without an endpoint ([`OtlpConfig::endpoint`] `None`) no exporter exists: spans are not
//!   recorded for export and [`context_map`] returns an empty map;
//! - export never blocks the program: spans go to a bounded queue (full: dropped) that a
//!   background thread sends with a per-batch timeout; a collector that is down only loses spans;
//! - only the W3C `traceparent` / `tracestate` keys are carried.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use opentelemetry::{
    KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// The standard environment variable naming the collector (also read by the `--otlp-endpoint`
/// flags through clap).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How long one export batch may take before it is abandoned.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for the last spans to leave.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// Spans held while the collector is slow; beyond this they are dropped.
const MAX_QUEUE: usize = 4096;

/// Where and how to export spans.
#[derive(Debug, Clone, Default)]
pub struct OtlpConfig {
    /// `http://host:port` or `https://host:port` (OTLP/gRPC); `None`: nothing is exported.
    pub endpoint: Option<String>,
    /// CA certificate (PEM) that signed the collector's certificate; for `https` endpoints.
    pub ca: Option<PathBuf>,
    /// How often batches are sent; `None`: the SDK default (5 s, or `OTEL_BSP_SCHEDULE_DELAY`).
    pub batch_delay: Option<Duration>,
}

/// The flags every binary takes (docs/contracts.md "Observability").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OtlpArgs {
    /// OpenTelemetry collector (OTLP/gRPC), e.g. http://127.0.0.1:4317; https:// uses TLS.
    /// Unset: no spans are exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// CA certificate (PEM) that signed the collector's certificate (https endpoints).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_ca: Option<PathBuf>,
}

impl OtlpArgs {
    pub fn config(&self) -> OtlpConfig {
        OtlpConfig {
            endpoint: self.otlp_endpoint.clone(),
            ca: self.otlp_ca.clone(),
            batch_delay: None,
        }
    }
}

/// Who is exporting: `service.name` and resource attributes (cluster, node).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: &'static str,
    pub attributes: Vec<(&'static str, String)>,
}

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--otlp-ca {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--otlp-endpoint {0:?} must start with http:// or https://, e.g. http://127.0.0.1:4317"
    )]
    Scheme(String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("tracing subscriber: {0}")]
    Subscriber(String),
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] sends what is queued (bounded wait).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter, waiting at most [`SHUTDOWN_WAIT`] (the collector may be
    /// gone; the program must still stop).
    pub fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = provider.shutdown();
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(SHUTDOWN_WAIT);
    }
}

/// Builds the span exporter and provider for `cfg` (`Ok(None)` without an endpoint).
///
/// Must run inside a tokio runtime: the gRPC channel is created lazily there, so a collector
/// that is down is not an error here.
pub fn tracer_provider(
    cfg: &OtlpConfig,
    service: &Service,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(endpoint) = cfg.endpoint.as_deref().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    let endpoint = endpoint.trim().to_string();
    let https = endpoint.starts_with("https://");
    if !https && !endpoint.starts_with("http://") {
        return Err(TelemetryError::Scheme(endpoint));
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT);
    if https {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(path) = &cfg.ca {
            let pem = std::fs::read(path).map_err(|source| TelemetryError::Ca {
                path: path.clone(),
                source,
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut batch = BatchConfigBuilder::default().with_max_queue_size(MAX_QUEUE);
    if let Some(d) = cfg.batch_delay {
        batch = batch.with_scheduled_delay(d);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(service.name)
        .with_attributes(
            service
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(*k, v.clone())),
        )
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build(),
    ))
}

/// Whether a span or event belongs to the project (what the OpenTelemetry layer records):
/// tonic, h2 and hyper spans stay out, and so does the exporter's own traffic.
pub fn is_ours(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("traceflow")
}

/// The log filter every binary uses: `explicit` (a `--log` flag or config value, EnvFilter
/// syntax) if given and valid, else `RUST_LOG` if set and valid, else `default`.
pub fn log_filter(explicit: Option<&str>, default: &str) -> tracing_subscriber::EnvFilter {
    let fallback = || {
        tracing_subscriber::EnvFilter::try_new(default)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    match explicit {
        Some(f) => tracing_subscriber::EnvFilter::try_new(f).unwrap_or_else(|_| fallback()),
        None => {
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| fallback())
        }
    }
}

/// The log layer every binary uses: human-readable lines on stderr (colours only on a
/// terminal), filtered by `filter`.
fn stderr_logs<S>(filter: tracing_subscriber::EnvFilter) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter)
}

/// Installs logs only (stderr, [`log_filter`]`(explicit, default)`), no span export: for
/// one-shot commands (`traceflow-manager token create`, `traceflow-adapter agent-cert`) and the
/// lab. A second call (a subscriber already installed) is ignored.
pub fn init_logs(explicit: Option<&str>, default: &str) {
    let _ = tracing_subscriber::registry()
        .with(stderr_logs(log_filter(explicit, default)))
        .try_init();
}

/// Installs the global `tracing` subscriber: logs to stderr filtered by
/// [`log_filter`]`(explicit_filter, "info")`, plus the OpenTelemetry layer when `otlp` names
/// an endpoint. Call once, inside the tokio runtime.
pub fn init(
    service: &Service,
    otlp: &OtlpConfig,
    explicit_filter: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    let fmt = stderr_logs(log_filter(explicit_filter, "info"));
    let provider = tracer_provider(otlp, service)?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service.name))
            .with_filter(tracing_subscriber::filter::filter_fn(is_ours))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    if let Some(endpoint) = &otlp.endpoint
        && provider.is_some()
    {
        tracing::info!(endpoint = %endpoint, service = service.name, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Trace-context carrier for proto `map<string,string>` fields.
pub type ContextMap = HashMap<String, String>;

/// The W3C trace context of `span` (`traceparent`, maybe `tracestate`); empty when the span is
/// not exported (no OpenTelemetry layer, or filtered out).
pub fn context_map(span: &tracing::Span) -> ContextMap {
    let cx = span.context();
    let mut map = ContextMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut MapCarrier(&mut map));
    map
}

/// Makes `carrier`'s trace context the parent of `span`, which must not have been entered yet.
/// Returns whether a valid remote parent was set (an empty or malformed carrier sets none).
pub fn set_parent_from_map(span: &tracing::Span, carrier: &ContextMap) -> bool {
    let cx = TraceContextPropagator::new().extract(&MapReader(carrier));
    set_parent(span, cx)
}

/// As [`set_parent_from_map`], from a unary call's gRPC metadata (`traceparent` header).
pub fn set_parent_from_metadata(span: &tracing::Span, md: &tonic::metadata::MetadataMap) -> bool {
    let cx = TraceContextPropagator::new().extract(&MetadataReader(md));
    set_parent(span, cx)
}

/// Adds `span`'s trace context to outgoing gRPC metadata (for a unary call's client side).
pub fn inject_metadata(span: &tracing::Span, md: &mut tonic::metadata::MetadataMap) {
    for (k, v) in context_map(span) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            md.insert(key, value);
        }
    }
}

fn set_parent(span: &tracing::Span, cx: opentelemetry::Context) -> bool {
    use opentelemetry::trace::TraceContextExt;
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// The hex trace id of `span` when it is exported (for logs and tests).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

struct MapCarrier<'a>(&'a mut ContextMap);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct MapReader<'a>(&'a ContextMap);

impl Extractor for MapReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetadataReader<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceContextExt};

    #[test]
    fn an_explicit_log_filter_wins_and_a_bad_one_falls_back_to_the_default() {
        assert_eq!(
            log_filter(Some("debug,h2=warn"), "warn").to_string(),
            "h2=warn,debug"
        );
        assert_eq!(log_filter(Some("a=b=c"), "warn").to_string(), "warn");
        assert_eq!(log_filter(Some("a=b=c"), "a=b=c").to_string(), "info");
    }

    /// A subscriber that records spans with an SDK provider (no exporter), as when exporting.
    fn recording() -> (SdkTracerProvider, impl tracing::Subscriber + Send + Sync) {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(tracing_subscriber::filter::filter_fn(is_ours));
        (provider, tracing_subscriber::registry().with(layer))
    }

    fn parent_span_id(span: &tracing::Span) -> SpanId {
        // A started span's own context; its parent is only visible through the SDK data, so
        // compare with the remote parent the carrier named instead.
        span.context().span().span_context().span_id()
    }

    #[test]
    fn traceparent_round_trips_into_a_child() {
        let (_p, sub) = recording();
        tracing::subscriber::with_default(sub, || {
            let parent = tracing::info_span!(target: "traceflow_test", "parent");
            let map = context_map(&parent);
            let tp = map.get("traceparent").cloned().unwrap_or_default();
            // 00-<32 hex trace id>-<16 hex span id>-01 (sampled)
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            assert_eq!(parts[0], "00");
            assert_eq!(Some(parts[1].to_string()), trace_id(&parent));
            assert_eq!(parts[2], parent_span_id(&parent).to_string());
            assert_eq!(parts[3], "01");

            let child = tracing::info_span!(target: "traceflow_test", "child");
            assert!(set_parent_from_map(&child, &map));
            assert_eq!(trace_id(&child), trace_id(&parent));
            assert_ne!(parent_span_id(&child), parent_span_id(&parent));
        });
    }

    #[test]
    fn metadata_carries_the_context_of_unary_calls() {
        let (_p, sub) = recording();
        tracing::subscriber::with_default(sub, || {
            let caller = tracing::info_span!(target: "traceflow_test", "caller");
            let mut md = tonic::metadata::MetadataMap::new();
            inject_metadata(&caller, &mut md);
            assert!(md.get("traceparent").is_some());
            let server = tracing::info_span!(target: "traceflow_test", "server");
            assert!(set_parent_from_metadata(&server, &md));
            assert_eq!(trace_id(&server), trace_id(&caller));
        });
    }

    #[test]
    fn empty_or_bad_carriers_set_no_parent() {
        let (_p, sub) = recording();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(target: "traceflow_test", "s");
            assert!(!set_parent_from_map(&span, &ContextMap::new()));
            let bad: ContextMap = [("traceparent".to_string(), "00-zz-yy-01".to_string())].into();
            assert!(!set_parent_from_map(&span, &bad));
            // Still its own root, with a trace id of its own.
            assert!(trace_id(&span).is_some());
        });
    }

    #[test]
    fn nothing_is_carried_without_an_exporter() {
        // Only a fmt-like subscriber: no OpenTelemetry layer.
        let sub = tracing_subscriber::registry();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(target: "traceflow_test", "s");
            assert!(context_map(&span).is_empty());
            assert_eq!(trace_id(&span), None);
        });
    }

    #[test]
    fn spans_of_other_crates_are_not_exported() {
        let (_p, sub) = recording();
        tracing::subscriber::with_default(sub, || {
            let theirs = tracing::info_span!(target: "h2::proto", "frame");
            assert!(context_map(&theirs).is_empty());
        });
    }

    #[test]
    fn no_endpoint_builds_no_exporter() -> Result<(), TelemetryError> {
        let svc = Service {
            name: "traceflow-test",
            attributes: vec![],
        };
        assert!(tracer_provider(&OtlpConfig::default(), &svc)?.is_none());
        let bad = OtlpConfig {
            endpoint: Some("127.0.0.1:4317".into()),
            ..Default::default()
        };
        assert!(matches!(
            tracer_provider(&bad, &svc),
            Err(TelemetryError::Scheme(_))
        ));
        Ok(())
    }

    /// A collector that is not there: building succeeds, spans are dropped, nothing blocks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn absent_collector_never_blocks() -> Result<(), TelemetryError> {
        let svc = Service {
            name: "traceflow-test",
            attributes: vec![("node", "n1".into())],
        };
        // Port 9 (discard) on loopback: nothing listens.
        let cfg = OtlpConfig {
            endpoint: Some("http://127.0.0.1:9".into()),
            batch_delay: Some(Duration::from_millis(50)),
            ..Default::default()
        };
        let provider = tracer_provider(&cfg, &svc)?.ok_or(TelemetryError::Scheme("none".into()))?;
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("t"));
        let sub = tracing_subscriber::registry().with(layer);
        let started = std::time::Instant::now();
        tracing::subscriber::with_default(sub, || {
            for i in 0..10_000 {
                let _s = tracing::info_span!(target: "traceflow_test", "busy", i).entered();
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "recording spans took {:?}",
            started.elapsed()
        );
        let t = Telemetry {
            provider: Some(provider),
        };
        let stop = std::time::Instant::now();
        tokio::task::spawn_blocking(move || t.shutdown())
            .await
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        assert!(stop.elapsed() < SHUTDOWN_WAIT + Duration::from_secs(1));
        Ok(())
    }
}
