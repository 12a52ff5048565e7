//! What a function tells its operators: JSON logs, OpenTelemetry traces and CloudWatch metrics.
//!
//! - Logs: JSON lines through `tracing`; each request and message runs in a span that carries its
//!   correlation id (see `api::http::respond`, `worker::sqs::run_batch`).
//! - Traces: when `OTLP_ENDPOINT` (template parameter `OtlpEndpoint`) is set, the same spans, plus the
//!   AWS SDK's operation spans, go to `<OTLP_ENDPOINT>/v1/traces` over OTLP/HTTP, with resource
//!   `service.name` = the function's crate name and a `correlation_id` attribute on every span. Empty:
//!   no exporter, no span is recorded, nothing is paid at cold start.
//! - Metrics: EMF lines (CloudWatch Embedded Metric Format) in the function's log, namespace
//!   `METRICS_NAMESPACE` (default `Shop`), dimension `Service` = the crate name. Code counts through
//!   the `metrics` facade (`metrics::counter!`); without [`init`] (unit tests) that is a no-op.
//!
//! [`flush`] runs at the end of every invocation (the Lambda runtime's OpenTelemetry layer calls it):
//! the process may be frozen right after, so nothing waits for a later invocation.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanProcessor};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The span attribute (and log field) that names the request or event a span works for.
pub const CORRELATION_ATTRIBUTE: &str = "correlation_id";
/// The W3C trace context header name, also the SNS/SQS message attribute that carries it.
pub const TRACE_PARENT: &str = "traceparent";
/// How long one export of spans may take; a flush waits at most this, then the spans are dropped
/// (a dead collector must never cost an invocation more than this).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_METRICS_NAMESPACE: &str = "Shop";

static SERVICE: OnceLock<&'static str> = OnceLock::new();
static TRACES: OnceLock<SdkTracerProvider> = OnceLock::new();
static METRICS: OnceLock<&'static metrics_cloudwatch_embedded::Collector> = OnceLock::new();
/// The correlation id of the work in hand. A Lambda instance runs one invocation at a time and a
/// batch one message at a time, so one slot is enough; [`flush`] empties it.
static CORRELATION_ID: Mutex<Option<String>> = Mutex::new(None);

/// Installs the log subscriber, the trace exporter (when `OTLP_ENDPOINT` is set) and the EMF
/// collector, and counts the cold start. `service` is the function's crate name. Levels from
/// `RUST_LOG` (`info`, or `warn,orders_create=debug`; default and fallback `info`). Targets, not an
/// env filter: no regex engine in every binary. Telemetry that cannot start is logged, never fatal.
pub fn init(service: &'static str) {
    let _ = SERVICE.set(service);
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false);
    let endpoint = std::env::var("OTLP_ENDPOINT").unwrap_or_default();
    let (provider, trace_error) = match endpoint.trim() {
        "" => (None, None),
        endpoint => match tracer_provider(service, endpoint) {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        },
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_filter(filter_fn(|metadata| {
                if metadata.is_span() {
                    // Ours at info, and each AWS SDK operation (`DynamoDB.GetItem`, ...: debug spans).
                    *metadata.level() <= tracing::Level::INFO || metadata.target().starts_with("aws_sdk_")
                } else {
                    // Warnings and errors become span events (and errors mark the span).
                    *metadata.level() <= tracing::Level::WARN
                }
            }))
    });
    // A second call (e.g. in tests) keeps the first subscriber.
    let installed = tracing_subscriber::registry()
        .with(json.with_filter(filter))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && let Some(provider) = provider {
        let _ = TRACES.set(provider);
        tracing::info!(endpoint = endpoint.trim(), "exporting traces");
    }
    if let Some(error) = trace_error {
        tracing::error!(error = %error, "traces cannot be exported; going on without them");
    }
    let namespace = std::env::var("METRICS_NAMESPACE")
        .ok()
        .filter(|namespace| !namespace.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.to_owned());
    match metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(namespace)
        .with_dimension("Service", service)
        .init()
    {
        Ok(collector) => {
            let _ = METRICS.set(collector);
            metrics::counter!("ColdStart").increment(1);
        }
        Err(error) => tracing::error!(error = %error, "metrics cannot be emitted; going on without them"),
    }
}

fn tracer_provider(service: &'static str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|error| error.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(Correlated(BatchSpanProcessor::builder(exporter).build()))
        .build())
}

/// The Lambda runtime layer every function runs under: the invocation's span (`trigger` names what
/// invokes it), and [`flush`] after each invocation.
pub fn invocation_layer(
    trigger: lambda_runtime::layers::OpenTelemetryFaasTrigger,
) -> lambda_runtime::layers::OpenTelemetryLayer<fn()> {
    lambda_runtime::layers::OpenTelemetryLayer::new(flush as fn()).with_trigger(trigger)
}

/// The function's crate name given to [`init`] (empty before it).
pub fn service_name() -> &'static str {
    SERVICE.get().copied().unwrap_or_default()
}

/// Sends what the invocation recorded: its EMF line, then its spans (waiting at most
/// [`EXPORT_TIMEOUT`]). Called by the Lambda runtime's OpenTelemetry layer after each invocation's
/// response has been sent and before the runtime asks for the next event, when Lambda may freeze the
/// process. The EMF line goes first: it costs microseconds, and an emulator that stops reading a
/// function's output once it has answered still gets it.
pub fn flush() {
    if let Some(collector) = METRICS.get()
        && let Err(error) = collector.flush(std::io::stdout().lock())
    {
        tracing::warn!(error = %error, "metrics were not written");
    }
    if let Some(provider) = TRACES.get()
        && let Err(error) = provider.force_flush()
    {
        tracing::warn!(error = %error, "spans were not exported");
    }
    if let Ok(mut current) = CORRELATION_ID.lock() {
        *current = None;
    }
}

/// Names the request or message now in hand: every span started from here on carries its id, and so
/// does a span that started before it and ends while it is in hand (the runtime's invocation span).
pub fn set_correlation_id(correlation_id: &str) {
    if let Ok(mut current) = CORRELATION_ID.lock() {
        *current = Some(correlation_id.to_owned());
    }
}

/// The W3C `traceparent` of the current span, to store on an item or put on a message so the work
/// it causes continues this trace. `None` when traces are not exported.
pub fn trace_parent() -> Option<String> {
    TRACES.get()?;
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACE_PARENT)
}

/// What a change made now records as its cause: `correlation_id`, and the current span's trace.
pub fn cause(correlation_id: &str) -> domain::Cause {
    domain::Cause {
        correlation_id: correlation_id.to_owned(),
        trace_parent: trace_parent(),
    }
}

/// Makes `span` (not yet entered) a child of the span that `trace_parent` names: a message's or a
/// stream record's work continues the trace of the request that caused it. A missing or malformed
/// parent leaves `span` where it is.
pub fn continue_trace(span: &tracing::Span, trace_parent: Option<&str>) {
    let Some(trace_parent) = trace_parent.filter(|_| TRACES.get().is_some()) else {
        return;
    };
    let carrier = std::collections::HashMap::from([(TRACE_PARENT.to_owned(), trace_parent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Puts the current correlation id on every span as it starts, and keeps one `correlation_id` per
/// span (a span that names its own keeps that one).
#[derive(Debug)]
struct Correlated<P>(P);

impl<P: SpanProcessor> SpanProcessor for Correlated<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        use opentelemetry::trace::Span as _;
        if let Some(correlation_id) = CORRELATION_ID.lock().ok().and_then(|current| current.clone()) {
            span.set_attribute(KeyValue::new(CORRELATION_ATTRIBUTE, correlation_id));
        }
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        let mut seen = false;
        span.attributes
            .retain(|attribute| attribute.key.as_str() != CORRELATION_ATTRIBUTE || !std::mem::replace(&mut seen, true));
        // A span that began before the work had an id (the runtime's invocation span) ends inside it.
        if !seen && let Some(correlation_id) = CORRELATION_ID.lock().ok().and_then(|current| current.clone()) {
            span.attributes
                .push(KeyValue::new(CORRELATION_ATTRIBUTE, correlation_id));
        }
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// Counts each DynamoDB request attempt (`DynamoDbRequests`, summed per invocation by the EMF line):
/// the round trips a route costs, measured in production as `make bench` measures them locally.
#[derive(Debug)]
pub struct CountDynamoDbRequests;

impl Intercept for CountDynamoDbRequests {
    fn name(&self) -> &'static str {
        "CountDynamoDbRequests"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        metrics::counter!("DynamoDbRequests").increment(1);
        Ok(())
    }
}

/// An error and its causes on one line, for logs (never for callers).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
