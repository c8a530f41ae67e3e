//! Distributed tracing in the agent (on when the binary installed an OpenTelemetry tracer
//! provider; see `signpost-telemetry`): a server span per API request, native and Consul alike
//! ([`server_span`], the outermost layer of [`crate::http::router`]), continuing the W3C trace
//! the request's `traceparent` carries; and a `raft.commit` span ([`CommitSpan`]) around each
//! write [`crate::agent::Agent::propose`] puts through Raft for a traced request, a child of
//! that request's span. Writes nobody traced (the health checker's, start-up's) make no span.

use std::borrow::Cow;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    FutureExt as _, Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

/// The tracer the agent's spans come from.
fn tracer() -> BoxedTracer {
    opentelemetry::global::tracer("signpost-agent")
}

/// The axum middleware that gives each request its server span (`GET /api/v1/services/{service}/instances`,
/// named by the matched route) and makes it the current context while the handler runs.
pub(crate) async fn server_span(req: Request, next: Next) -> Response {
    if !signpost_telemetry::enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let parent = signpost_telemetry::propagation::extract_with(&Context::new(), req.headers());
    let tracer = tracer();
    let span = tracer
        .span_builder(Cow::Owned(format!("{} {route}", req.method())))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", req.method().as_str().to_string()),
            KeyValue::new("http.route", route),
            KeyValue::new("url.path", req.uri().path().to_string()),
        ])
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let response = next.run(req).with_context(cx.clone()).await;
    let span = cx.span();
    let status = response.status();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
    span.end();
    response
}

/// The `raft.commit` span of one proposal: from the write's queueing until Raft committed and
/// applied it. Ends when dropped.
pub(crate) struct CommitSpan(Option<BoxedSpan>);

impl CommitSpan {
    /// A child of the current context's span, if tracing is on and there is one.
    pub(crate) fn start() -> CommitSpan {
        if !signpost_telemetry::enabled() {
            return CommitSpan(None);
        }
        let cx = Context::current();
        if !cx.has_active_span() {
            return CommitSpan(None);
        }
        let tracer = tracer();
        let span = tracer
            .span_builder("raft.commit")
            .with_kind(SpanKind::Internal)
            .start_with_context(&tracer, &cx);
        CommitSpan(Some(span))
    }

    /// Marks the span failed with `error` (a proposal Raft refused or could not commit).
    pub(crate) fn failed(&mut self, error: &dyn std::fmt::Display) {
        if let Some(span) = &mut self.0 {
            span.set_status(Status::error(error.to_string()));
        }
    }
}

impl Drop for CommitSpan {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            span.end();
        }
    }
}
