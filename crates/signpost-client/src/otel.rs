//! OpenTelemetry in the SDK, through the `opentelemetry` API crate only: what it records goes
//! to whatever tracer provider the application installed (none: nothing is recorded), and the
//! context travels with the application's global propagator (W3C `traceparent` when it set
//! one up, as `signpost-telemetry` does).
//!
//! - [`ServiceClient`](crate::client::ServiceClient): a client span per attempt, a child of the
//!   caller's current context (an OpenTelemetry context, or a `tracing` span through
//!   `tracing-opentelemetry`), and that span's context in the request's headers ([`inject`]).
//! - [`Registration`](crate::registration::Registration) and its heartbeats: a span per
//!   registry call ([`registry_call`]).
//! - [`Discovery`](crate::discovery::Discovery): a span per watch connection, from opening it
//!   to the registry's first answer ([`WatchSpan`]).

use std::borrow::Cow;
use std::future::Future;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::Injector;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};

use crate::client::CallError;
use crate::instance::Instance;
use crate::registry::RegistryError;
use crate::retry::FailureKind;

fn tracer() -> BoxedTracer {
    opentelemetry::global::tracer("signpost-client")
}

/// What one `ServiceClient` attempt returns.
type AttemptResult = Result<(StatusCode, HeaderMap, Bytes), (FailureKind, CallError)>;

/// Runs one `ServiceClient` attempt (`exchange`) in its client span: `"{method} {service}"`,
/// with the instance, the attempt number and the answer's status.
pub(crate) async fn attempt<F>(
    service: &str,
    method: &Method,
    path: &str,
    instance: &Instance,
    attempt: u32,
    exchange: F,
) -> AttemptResult
where
    F: Future<Output = AttemptResult>,
{
    let parent = Context::current();
    let tracer = tracer();
    let span = tracer
        .span_builder(Cow::Owned(format!("{method} {service}")))
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let span = cx.span();
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new("http.request.method", method.as_str().to_string()),
            KeyValue::new("url.path", path.to_string()),
            KeyValue::new("server.address", instance.authority()),
            KeyValue::new("signpost.service", service.to_string()),
            KeyValue::new("signpost.instance", instance.id.clone()),
            KeyValue::new("signpost.attempt", i64::from(attempt)),
        ]);
    }
    let result = exchange.with_context(cx.clone()).await;
    if span.is_recording() {
        match &result {
            Ok((status, _, _)) => span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            )),
            Err((kind, error)) => {
                if let FailureKind::Status(code) = kind {
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(*code),
                    ));
                }
                span.set_status(Status::error(error.to_string()));
            }
        }
    }
    span.end();
    result
}

/// `request` with the current context in its headers (the application's propagator decides
/// the format; nothing is added when there is no span to continue).
pub(crate) fn inject(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    let cx = Context::current();
    if !cx.span().span_context().is_valid() {
        return request;
    }
    let mut headers = HeaderMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut Headers(&mut headers));
    });
    request.headers(headers)
}

struct Headers<'a>(&'a mut HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Runs one registry call (`registry.register`, `registry.heartbeat`, `registry.deregister`)
/// for `service` in its span.
pub(crate) async fn registry_call<T>(
    operation: &'static str,
    service: &str,
    call: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    let parent = Context::current();
    let tracer = tracer();
    let span = tracer
        .span_builder(operation)
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("signpost.service", service.to_string())])
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let result = call.with_context(cx.clone()).await;
    let span = cx.span();
    if let Err(e) = &result {
        span.set_status(Status::error(e.to_string()));
    }
    span.end();
    result
}

/// The `registry.watch` span of one watch connection: open until the registry's first answer
/// ([`WatchSpan::connected`]); dropped before that, it ends as an error. While it is open the
/// watch is polled in its context ([`WatchSpan::in_span`]), so the request that opens the watch
/// carries it to the agent.
pub(crate) struct WatchSpan(Option<Context>);

impl WatchSpan {
    /// Starts the span of a watch of `service` being opened.
    pub(crate) fn start(service: &str) -> WatchSpan {
        let tracer = tracer();
        let span = tracer
            .span_builder("registry.watch")
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("signpost.service", service.to_string())])
            .start_with_context(&tracer, &Context::new());
        WatchSpan(Some(Context::new().with_span(span)))
    }

    /// `future` (a poll of the watch) run in the span's context while the span is open.
    pub(crate) fn in_span<F: Future>(
        &self,
        future: F,
    ) -> futures::future::Either<F, opentelemetry::trace::WithContext<F>> {
        match &self.0 {
            Some(cx) => futures::future::Either::Right(future.with_context(cx.clone())),
            None => futures::future::Either::Left(future),
        }
    }

    /// The registry answered: the span ends well.
    pub(crate) fn connected(&mut self) {
        if let Some(cx) = self.0.take() {
            cx.span().end();
        }
    }
}

impl Drop for WatchSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            let span = cx.span();
            span.set_status(Status::error(
                "the watch ended before the registry answered",
            ));
            span.end();
        }
    }
}
