//! Logging and tracing with `tracing`: JSON lines (or human-readable) carrying the fields of
//! the spans they are logged in, and OpenTelemetry spans exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Every span that starts work for an instance (the gateway's request, the orchestrator's
//! inbox message, the worker loop's job) takes its parent from the W3C `traceparent` it
//! received ([`continue_trace`]), records `correlation_id` and `trace_id`, and hands its own
//! context on to what it publishes ([`TraceContext::apply`]). One workflow started over HTTP
//! is therefore one trace across every process, and every log line written inside those spans
//! carries the same `correlation_id` and `trace_id` at the top level of the JSON object.
//!
//! Trace ids exist whether or not an exporter is configured: the OpenTelemetry layer is always
//! installed, only the exporter is optional. The standard `OTEL_*` variables apply
//! (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_PROTOCOL` = `http/protobuf` or `http/json`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, …); gRPC is not built in.

use std::{collections::HashMap, sync::OnceLock, time::Duration};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use serde_json::{Map, Value};
use switchyard_proto::header;
use tracing::{Event, Span, Subscriber, field::Field};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::{FilterExt as _, filter_fn},
    fmt::{
        self, FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::{JsonFields, Writer},
        time::{FormatTime as _, SystemTime},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{Config, LogFormat};

/// The variable that turns the OTLP exporter on (the collector's base URL, e.g.
/// `http://localhost:4318`); `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` works too.
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const OTLP_TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";

/// The span fields hoisted to the top level of every JSON log line.
const HOISTED: [&str; 2] = ["correlation_id", "trace_id"];

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber, with the service name `OTEL_SERVICE_NAME` or else the
/// executable's name. Call once, from a binary's `main`.
pub fn init(config: &Config) {
    let exe = std::env::current_exe().ok();
    let name = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("switchyard");
    init_as(config, name);
}

/// [`init`] for a binary that runs several roles (the `switchyard` command): `service` is the
/// name spans are exported under unless `OTEL_SERVICE_NAME` says otherwise.
///
/// `RUST_LOG`, when set, takes precedence over `log_level` for ad-hoc debugging.
pub fn init_as(config: &Config, service: &str) {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .unwrap_or_else(|| config.log_level.clone());
    let (provider, exporter_error) = tracer_provider(service);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        .with_filter(filter(&directives));
    let registry = tracing_subscriber::registry().with(otel);
    // A second init (e.g. two components in one test process) keeps the first subscriber.
    let installed = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines)
                    .with_filter(filter(&directives)),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_filter(filter(&directives)))
            .try_init(),
    };
    if installed.is_ok() {
        let exporting = exporter_error.is_none() && otlp_endpoint().is_some();
        let _ = PROVIDER.set(provider);
        match exporter_error {
            Some(e) => {
                tracing::error!(error = %e, "cannot export spans over OTLP; tracing stays local")
            }
            None if exporting => tracing::info!(service, "exporting spans over OTLP"),
            None => {}
        }
    }
}

/// The events `directives` select, and every span at `info` or above whatever they say: a
/// `warn` line inside a job span still carries the job's ids, and the trace stays whole.
fn filter<S: Subscriber>(directives: &str) -> impl tracing_subscriber::layer::Filter<S> + use<S> {
    EnvFilter::new(directives).or(filter_fn(|meta| {
        meta.is_span() && *meta.level() <= tracing::Level::INFO
    }))
}

/// Sends the spans still buffered to the collector and stops exporting. Every process calls
/// it once on its way out ([`crate::process::run_process`] and the gateway do); spans ended
/// after it are dropped.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        // Shut down already, or the collector did not answer within the export timeout.
        tracing::debug!(error = %e, "span exporter shutdown");
    }
}

fn otlp_endpoint() -> Option<String> {
    [OTLP_TRACES_ENDPOINT_VAR, OTLP_ENDPOINT_VAR]
        .into_iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
}

/// The provider every span goes through; it exports only when an OTLP endpoint is set.
fn tracer_provider(service: &str) -> (SdkTracerProvider, Option<String>) {
    let mut resource = Resource::builder();
    if std::env::var(SERVICE_NAME_VAR).is_ok_and(|v| !v.is_empty()) {
        // The resource detectors already read it.
    } else {
        resource = resource.with_service_name(service.to_owned());
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    if otlp_endpoint().is_none() {
        return (builder.build(), None);
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => return (builder.build(), Some(e.to_string())),
    };
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient(client))
        .with_timeout(Duration::from_secs(10))
        .build();
    match exporter {
        Ok(exporter) => {
            let processor = BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::TokioCurrentThread,
            )
            .build();
            (builder.with_span_processor(processor).build(), None)
        }
        Err(e) => (builder.build(), Some(e.to_string())),
    }
}

/// The exporter's HTTP transport: the workspace's reqwest client (rustls on ring).
#[derive(Debug)]
struct OtlpClient(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        let mut out = http::Response::builder().status(status).body(body)?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// The W3C trace context a span hands on to the messages it publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> Option<&str> {
        trace_id_of(self.traceparent.as_deref()?)
    }

    /// Sets `traceparent` and `tracestate` (those present) on outgoing NATS headers.
    pub fn apply(&self, headers: &mut async_nats::HeaderMap) {
        for (name, value) in [
            (header::TRACEPARENT, &self.traceparent),
            (header::TRACESTATE, &self.tracestate),
        ] {
            if let Some(v) = value {
                headers.insert(name, v.as_str());
            }
        }
    }
}

/// The trace id of a `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is well formed.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
        .then_some(id)
}

/// Makes `span` the child of the trace context `incoming` carries (or the root of a new trace
/// when it carries none), records the span's `trace_id` field, and returns the context to put
/// on what the span publishes.
///
/// `span` must declare `trace_id = tracing::field::Empty`. Without the OpenTelemetry layer
/// (an in-process test that never called [`init`]) the incoming context is passed on as it is.
pub fn continue_trace(span: &Span, incoming: &dyn Extractor) -> TraceContext {
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(incoming);
    let _ = span.set_parent(parent.clone());
    let own = span.context();
    let cx: &Context = if own.span().span_context().is_valid() {
        &own
    } else {
        &parent
    };
    let mut carrier = HashMap::new();
    propagator.inject_context(cx, &mut carrier);
    let context = TraceContext {
        traceparent: carrier.remove(header::TRACEPARENT),
        tracestate: carrier.remove(header::TRACESTATE).filter(|v| !v.is_empty()),
    };
    if let Some(id) = context.trace_id() {
        span.record("trace_id", id);
    }
    context
}

/// Reads trace context from a NATS message's headers.
#[derive(Debug, Clone, Copy)]
pub struct NatsExtractor<'a>(pub Option<&'a async_nats::HeaderMap>);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0?.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|h| h.iter().map(|(k, _)| k.as_ref()).collect())
            .unwrap_or_default()
    }
}

/// Reads trace context from HTTP request headers.
#[derive(Debug, Clone, Copy)]
pub struct HttpExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes trace context into NATS headers.
struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Puts the trace context of `span` (the current span's, usually) on outgoing headers; nothing
/// when the span has none.
pub fn inject(span: &Span, headers: &mut async_nats::HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut NatsInjector(headers));
    }
}

/// One JSON object per line: `timestamp`, `level`, the event's fields (`message` first),
/// `target`, [`HOISTED`] fields from the enclosing spans, and `span`: the fields of every
/// enclosing span merged from the root down (the innermost wins) with the innermost's `name`.
///
/// `tracing-subscriber`'s own JSON format shows only the innermost span, so a line logged in a
/// nested span would lose the request's correlation id.
#[derive(Debug, Clone, Copy)]
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        event.record(&mut JsonVisitor(&mut line));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            let mut fields = Map::new();
            let mut name = "";
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(formatted)
                {
                    fields.extend(map);
                }
                name = span.name();
            }
            for key in HOISTED {
                if let Some(v) = fields.get(key) {
                    line.insert(key.into(), v.clone());
                }
            }
            fields.insert("name".into(), Value::String(name.to_owned()));
            line.insert("span".into(), Value::Object(fields));
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_only_from_well_formed_traceparents() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")),
            Some(id)
        );
        assert_eq!(trace_id_of("00-abc-00f067aa0ba902b7-01"), None);
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn a_span_continues_the_incoming_trace_as_its_child() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = async_nats::HeaderMap::new();
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            headers.insert(header::TRACEPARENT, parent);
            let span = tracing::info_span!("t", trace_id = tracing::field::Empty);
            let context = continue_trace(&span, &NatsExtractor(Some(&headers)));
            let own = context.traceparent.clone().expect("a traceparent");
            assert_eq!(context.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
            assert_ne!(own, parent, "the span's own id goes on, not the parent's");
            assert!(own.ends_with("-01"), "{own}");

            // Published inside the span: the same context.
            let mut out = async_nats::HeaderMap::new();
            span.in_scope(|| inject(&tracing::Span::current(), &mut out));
            assert_eq!(
                out.get(header::TRACEPARENT).map(|v| v.as_str()),
                Some(own.as_str())
            );

            // Nothing incoming: a new trace, with an id all the same.
            let root = tracing::info_span!("r", trace_id = tracing::field::Empty);
            let fresh = continue_trace(&root, &NatsExtractor(None));
            let id = fresh.trace_id().expect("a new trace id").to_owned();
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn json_lines_carry_the_ids_of_every_enclosing_span() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .with_writer(move || writer.clone())
                .with_filter(filter("warn")),
        );
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!(
                "http_request",
                correlation_id = "c-1",
                trace_id = tracing::field::Empty
            );
            outer.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
            outer.in_scope(|| {
                tracing::info_span!("query", endpoint = "x").in_scope(|| {
                    tracing::warn!(attempt = 2, "slow \"reply\"");
                });
            });
            tracing::info!("filtered out");
            tracing::warn!("outside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let nested = &lines[0];
        assert_eq!(nested["message"], "slow \"reply\"");
        assert_eq!(nested["level"], "WARN");
        assert_eq!(nested["attempt"], 2);
        assert_eq!(nested["correlation_id"], "c-1");
        assert_eq!(nested["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(nested["span"]["name"], "query");
        assert_eq!(nested["span"]["endpoint"], "x");
        assert_eq!(nested["span"]["correlation_id"], "c-1");
        assert!(lines[1].get("correlation_id").is_none() && lines[1].get("span").is_none());
    }

    #[test]
    fn without_the_layer_the_incoming_context_is_passed_on() {
        let mut headers = async_nats::HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert(header::TRACEPARENT, parent);
        let span = tracing::info_span!("t", trace_id = tracing::field::Empty);
        let context = continue_trace(&span, &NatsExtractor(Some(&headers)));
        assert_eq!(context.traceparent.as_deref(), Some(parent));
        assert_eq!(context.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let mut out = async_nats::HeaderMap::new();
        context.apply(&mut out);
        assert_eq!(
            out.get(header::TRACEPARENT).map(|v| v.as_str()),
            Some(parent)
        );
        assert!(out.get(header::TRACESTATE).is_none());
    }
}

/// Lets one log line through per period and counts the ones held back, so an outage that
/// fails thousands of operations a second writes a line every few seconds, not each failure.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being how many were held back since
    /// the last one that was; `None` when it is to be held back.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let held = state.1;
                *state = (Some(now), 0);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_held_back() {
        let throttle = Throttle::new(Duration::from_millis(200));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!((0..1000).filter_map(|_| throttle.admit()).count(), 0);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(throttle.admit(), Some(1000));
    }
}
