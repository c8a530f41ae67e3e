//! Logs and traces for the Signpost binaries (the agent and the gateway).
//!
//! # Layout
//! - [`config`]: the `[log]` and `[telemetry]` sections both config files share, and how the
//!   OpenTelemetry environment variables fill them in ([`config::Resolved`]).
//! - [`json`]: the JSON-lines event format (`--log-format json`): one object a line with time,
//!   level, target, message, fields and the trace and span ids of the current OpenTelemetry
//!   context.
//! - [`propagation`]: W3C `traceparent`/`tracestate` in and out of an `http::HeaderMap`.
//! - [`service`]: for services built on the SDK: the provider from the OpenTelemetry
//!   variables, and a server span per request continuing the caller's context.
//! - [`sampling`]: the provider's sampler (parent-based, a trace-id ratio for roots) and the
//!   same decision for code that decides before it makes a span.
//! - [`init`] (here): installs the tracing subscriber and, when an OTLP endpoint is configured,
//!   the OpenTelemetry tracer provider (OTLP over HTTP/protobuf, batch export, parent-based ratio
//!   sampling) as the global one. [`enabled`] tells instrumented code whether to make spans.
#![forbid(unsafe_code)]

pub mod config;
pub mod json;
pub mod propagation;
pub mod sampling;
pub mod service;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use config::{ConfigError, LogFormat, LogSection, Resolved, TelemetrySection};

/// Set once a tracer provider is installed: instrumented code (the gateway's request path, the
/// agent's API layer) skips all span work while it is false.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether [`init`] installed an exporting tracer provider in this process. Code on a hot path
/// checks this once per request and does nothing more when tracing is off.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The `RUST_LOG` filter or the default filter does not parse.
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The OTLP exporter could not be built (say, an endpoint that is not a URL).
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The OpenTelemetry variables are wrong (a service's [`service::install_from_env`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A global subscriber was already installed in this process.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Text (the default) or JSON lines.
    pub format: LogFormat,
    /// The filter used when `RUST_LOG` is not set (`info`, `info,openraft=warn`…).
    pub default_filter: String,
    /// Export settings, already merged with the environment ([`TelemetrySection::resolve`]).
    pub tracing: Option<Resolved>,
}

/// What [`init`] installed; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    /// The exporting provider, when tracing is on.
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still queued and stops the exporter. Call it from outside the async
    /// runtime (or after the server stopped): it blocks until the export ends.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: flushing the last spans failed: {e}");
            }
        }
    }
}

/// Builds the tracer provider that exports to `resolved` (not installed globally).
pub fn provider(resolved: &Resolved) -> Result<SdkTracerProvider, TelemetryError> {
    // The exporter's reqwest client is built with rustls and no provider of its own.
    signpost_tls::install_default_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(resolved.traces_url())
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(resolved.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampling::Sampler::new(resolved.sampling_ratio))
        .with_resource(resource)
        .build())
}

/// Installs the process's tracing subscriber (text or JSON lines on stdout, `RUST_LOG` or
/// `options.default_filter`) and, with `options.tracing`, the global OpenTelemetry tracer
/// provider and the W3C trace-context propagator; `tracing` spans then become OpenTelemetry
/// spans too (`tracing-opentelemetry`).
pub fn init(options: &Options) -> Result<Telemetry, TelemetryError> {
    let filter = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => tracing_subscriber::EnvFilter::try_new(&options.default_filter)?,
    };
    let provider = options.tracing.as_ref().map(provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("signpost"))
            .with_tracked_inactivity(false)
    });
    let text = (options.format == LogFormat::Text).then(tracing_subscriber::fmt::layer);
    let json = (options.format == LogFormat::Json)
        .then(|| tracing_subscriber::fmt::layer().event_format(json::JsonLines));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init()?;
    if let Some(p) = &provider {
        if let Some(resolved) = &options.tracing {
            sampling::set_ratio(resolved.sampling_ratio);
        }
        opentelemetry::global::set_tracer_provider(p.clone());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        ENABLED.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}
