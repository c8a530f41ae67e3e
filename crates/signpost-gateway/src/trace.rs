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
//! [`RequestTrace::instrument`] hands the future back unchanged. A request that is not sampled
//! (the caller said so, or a new trace the ratio leaves out) gets no span at all: only a
//! `traceparent` upstream with a new span id, so the services below continue the trace.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use futures::future::Either;
use http::HeaderName;
use http::{Request, Response};
use opentelemetry::trace::{
    FutureExt as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
    TraceId, TraceState, Tracer as _, WithContext,
};
use opentelemetry::{Context, KeyValue};
use signpost_client::selector::SelectError;

use crate::proxy::AttemptOutcome;
use crate::route::RouteSpec;
use crate::state::{RouteEntry, Shared};

/// The W3C header a request's trace context travels in.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What the gateway traces with, while tracing is on.
pub(crate) struct Tracing {
    /// Makes the server spans of sampled requests.
    tracer: opentelemetry::global::BoxedTracer,
    /// The ratio of new traces sampled (the exporting provider's; see
    /// `signpost_telemetry::sampling`).
    ratio: f64,
}

impl Tracing {
    /// The gateway's tracing when this process installed an exporting provider.
    pub(crate) fn if_enabled() -> Option<Tracing> {
        signpost_telemetry::enabled().then(|| Tracing {
            tracer: opentelemetry::global::tracer("signpost-gateway"),
            ratio: signpost_telemetry::sampling::ratio(),
        })
    }

    /// [`RequestTrace::start`] for a request of the route `spec`; `access_log`: whether the
    /// access log wants the trace id of a request that is not sampled.
    fn start<B>(&self, access_log: bool, spec: &RouteSpec, req: &mut Request<B>) -> RequestTrace {
        // No `traceparent`: nothing parsed, the empty context back.
        let parent = signpost_telemetry::propagation::extract_with(&Context::new(), req.headers());
        let (trace_id, sampled, remote) = {
            let span = parent.span();
            let sc = span.span_context();
            if sc.is_valid() {
                (sc.trace_id(), sc.is_sampled(), true)
            } else {
                let trace_id = TraceId::from(nonzero(rand::random::<u128>));
                let sampled = signpost_telemetry::sampling::root_sampled(self.ratio, trace_id);
                (trace_id, sampled, false)
            }
        };
        if !sampled {
            let span_id = SpanId::from(nonzero(rand::random::<u64>));
            req.headers_mut().insert(
                TRACEPARENT,
                signpost_telemetry::propagation::traceparent(trace_id, span_id, false),
            );
            let cx = access_log.then(|| {
                Context::new().with_remote_span_context(SpanContext::new(
                    trace_id,
                    span_id,
                    TraceFlags::default(),
                    false,
                    if remote {
                        parent.span().span_context().trace_state().clone()
                    } else {
                        TraceState::NONE
                    },
                ))
            });
            return RequestTrace { cx };
        }
        let tracer = &self.tracer;
        // A new trace was decided above: the provider's sampler must not draw again.
        let parent = if remote {
            parent
        } else {
            signpost_telemetry::sampling::presampled(&parent)
        };
        let span = tracer
            .span_builder(Cow::Owned(format!("{} {}", req.method(), spec.name)))
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        let span = cx.span();
        let sc = span.span_context();
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("http.request.method", req.method().as_str().to_string()),
                KeyValue::new("url.path", req.uri().path().to_string()),
                KeyValue::new("signpost.route", spec.name.clone()),
                KeyValue::new("signpost.service", spec.service.clone()),
            ]);
        }
        if sc.is_valid() {
            req.headers_mut().insert(
                TRACEPARENT,
                signpost_telemetry::propagation::traceparent(
                    sc.trace_id(),
                    sc.span_id(),
                    sc.is_sampled(),
                ),
            );
        }
        RequestTrace { cx: Some(cx) }
    }
}

/// A random non-zero id (zero is W3C's invalid id).
fn nonzero<T: PartialEq + Default>(mut draw: impl FnMut() -> T) -> T {
    loop {
        let id = draw();
        if id != T::default() {
            return id;
        }
    }
}

/// One routed request's trace: its context (with the gateway's server span), if tracing is on.
pub(crate) struct RequestTrace {
    /// The request's context; `None` while tracing is off, and for a request not sampled
    /// unless the access log wants its trace id.
    cx: Option<Context>,
}

impl RequestTrace {
    /// Continues or starts the request's trace and points its `traceparent` (what goes
    /// upstream) at the gateway's span.
    ///
    /// The sampling decision comes first (the caller's flag, or for a new trace the ratio):
    /// a request not sampled gets no span, only a new span id in the `traceparent` it carries
    /// upstream (its `tracestate` goes on as it came), written without allocating beyond the
    /// header value; the access log, when on, still gets its trace id.
    pub(crate) fn start<B>(shared: &Shared, entry: &RouteEntry, req: &mut Request<B>) -> Self {
        let Some(tracing) = &shared.tracing else {
            return RequestTrace { cx: None };
        };
        tracing.start(shared.access_log, &entry.route.spec, req)
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

#[cfg(test)]
mod tests;
