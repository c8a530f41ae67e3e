//! What a service built on the SDK needs to take part in traces (the examples use it): the
//! exporting provider from the OpenTelemetry variables, and a server span per request that
//! continues the caller's W3C context. The SDK itself records through the `opentelemetry` API
//! only; this is the application side.

use http::{HeaderMap, Method, StatusCode};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::{TelemetryError, TelemetrySection};

/// Installs the exporting provider `OTEL_EXPORTER_OTLP_ENDPOINT` names (service name from
/// `OTEL_SERVICE_NAME`, else `role`; every trace sampled unless a caller said otherwise) as the
/// global one, with the W3C propagator. `None` (nothing installed) without an endpoint. Call
/// `shutdown` on the provider before exiting, or the last spans are lost.
pub fn install_from_env(role: &str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let env = |name: &str| std::env::var(name).ok();
    let Some(resolved) = TelemetrySection::default().resolve(&env, role)? else {
        return Ok(None);
    };
    let provider = crate::provider(&resolved)?;
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(provider))
}

/// Starts the server span of a request (`"{method} {route}"`, `route` the matched route's
/// pattern) under the context its headers carry, with the global tracer: the returned context
/// is what the service makes current while it handles the request (its SDK calls become
/// children); end it with [`end_server_span`].
pub fn server_span(method: &Method, route: &str, headers: &HeaderMap) -> Context {
    let parent = crate::propagation::extract_with(&Context::new(), headers);
    let tracer = opentelemetry::global::tracer("signpost-service");
    let span = tracer
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([KeyValue::new("http.route", route.to_string())])
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}

/// Ends the server span in `cx` with the response's status (5xx: an error).
pub fn end_server_span(cx: &Context, status: StatusCode) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
    span.end();
}
