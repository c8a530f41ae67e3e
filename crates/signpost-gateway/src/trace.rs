//! Distributed tracing of proxied requests (on when the binary installed an OpenTelemetry
//! tracer provider; see `signpost-telemetry`).
//!
//! Each routed request continues the W3C trace its `traceparent`/`tracestate` carry, or starts
//! one, with a server span of the gateway's; the request goes upstream with a `traceparent`
//! naming that span, so the service's spans are its children. The span records the route, the
//! service, the upstream of the last attempt, the attempts and the status; each failed attempt
//! and its retry decision, and a refusal by the circuit breakers, are span events. While the
//! request is in the gateway its context is the current one, so log lines (the access log
//! included) carry its trace id. With tracing off, [`RequestTrace::start`] does nothing and
//! [`RequestTrace::instrument`] hands the future back unchanged.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use futures::future::Either;
use http::{Request, Response};
use opentelemetry::trace::{
    FutureExt as _, SpanKind, Status, TraceContextExt as _, Tracer as _, WithContext,
};
use opentelemetry::{Context, KeyValue};
use signpost_client::selector::SelectError;

use crate::proxy::AttemptOutcome;
use crate::state::{RouteEntry, Shared};

/// One routed request's trace: its context (with the gateway's server span), if tracing is on.
pub(crate) struct RequestTrace {
    /// The request's context; `None` while tracing is off.
    cx: Option<Context>,
}

impl RequestTrace {
    /// Continues or starts the request's trace and points its `traceparent` (what goes
    /// upstream) at the gateway's server span.
    pub(crate) fn start<B>(shared: &Shared, entry: &RouteEntry, req: &mut Request<B>) -> Self {
        let Some(tracer) = &shared.tracer else {
            return RequestTrace { cx: None };
        };
        let spec = &entry.route.spec;
        let parent = signpost_telemetry::propagation::extract_with(&Context::new(), req.headers());
        let span = tracer
            .span_builder(Cow::Owned(format!("{} {}", req.method(), spec.name)))
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        let span = cx.span();
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("http.request.method", req.method().as_str().to_string()),
                KeyValue::new("url.path", req.uri().path().to_string()),
                KeyValue::new("signpost.route", spec.name.clone()),
                KeyValue::new("signpost.service", spec.service.clone()),
            ]);
        }
        signpost_telemetry::propagation::inject(&cx, req.headers_mut());
        RequestTrace { cx: Some(cx) }
    }

    /// `future` run with the request's context as the current one.
    pub(crate) fn instrument<F: Future>(&self, future: F) -> Either<F, WithContext<F>> {
        match &self.cx {
            None => Either::Left(future),
            Some(cx) => Either::Right(future.with_context(cx.clone())),
        }
    }

    /// Records attempt number `attempt` against `upstream`, how it ended, and the retry
    /// decision (`retry`: the wait before the next attempt, `None`: no further attempt).
    pub(crate) fn attempt(
        &self,
        attempt: u32,
        upstream: &str,
        outcome: AttemptOutcome,
        retry: Option<Duration>,
    ) {
        let Some(span) = self.recording() else {
            return;
        };
        span.set_attribute(KeyValue::new("signpost.upstream", upstream.to_string()));
        span.set_attribute(KeyValue::new("signpost.attempts", i64::from(attempt)));
        let failed = match outcome {
            AttemptOutcome::Answered(status) if !status.is_server_error() => return,
            AttemptOutcome::Answered(status) => format!("status {}", status.as_u16()),
            AttemptOutcome::Failed(kind) => format!("{kind:?}").to_lowercase(),
        };
        let mut attributes = vec![
            KeyValue::new("signpost.attempt", i64::from(attempt)),
            KeyValue::new("signpost.upstream", upstream.to_string()),
            KeyValue::new("signpost.failure", failed),
        ];
        let name = match retry {
            Some(after) => {
                attributes.push(KeyValue::new(
                    "signpost.retry_after_ms",
                    i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
                ));
                "retry"
            }
            None => "no retry",
        };
        span.add_event(name, attributes);
    }

    /// Records that no instance could be chosen: every circuit open (the breakers' decision)
    /// or no instance at all.
    pub(crate) fn not_selected(&self, error: &SelectError) {
        let Some(span) = self.recording() else {
            return;
        };
        let name = match error {
            SelectError::CircuitOpen => "circuit open",
            SelectError::NoInstances => "no instances",
        };
        span.add_event(name, Vec::new());
    }

    /// Ends the span with the response's status (5xx: an error) and hands the response back.
    pub(crate) fn finish<B>(&self, response: Response<B>) -> Response<B> {
        if let Some(cx) = &self.cx {
            let span = cx.span();
            let status = response.status();
            if span.is_recording() {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                if status.is_server_error() {
                    span.set_status(Status::error(
                        status.canonical_reason().unwrap_or("server error"),
                    ));
                }
            }
            span.end();
        }
        response
    }

    fn recording(&self) -> Option<opentelemetry::trace::SpanRef<'_>> {
        let span = self.cx.as_ref()?.span();
        span.is_recording().then_some(span)
    }
}
