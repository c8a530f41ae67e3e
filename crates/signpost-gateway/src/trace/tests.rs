use std::time::Duration;

use http::HeaderValue;
use opentelemetry::trace::TracerProvider as _;

use super::*;
use crate::route::{BalancerKind, Protocol, RetrySpec, RouteSource};

fn spec() -> RouteSpec {
    RouteSpec {
        name: "/api".into(),
        host: None,
        prefix: "/api".into(),
        service: "api".into(),
        strip_prefix: false,
        balancer: BalancerKind::RoundRobin,
        timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry: RetrySpec {
            attempts: 1,
            statuses: vec![],
            timeouts: false,
            backoff: Duration::ZERO,
        },
        tag: None,
        protocol: Protocol::Http1,
        source: RouteSource::Config,
        compress: Vec::new(),
    }
}

/// Tracing with an SDK provider sampling `ratio` of new traces (as `signpost-telemetry`
/// configures it; its exporter points at a port nobody listens on and is never flushed).
fn tracing(ratio: f64) -> (Tracing, opentelemetry_sdk::trace::SdkTracerProvider) {
    let provider = signpost_telemetry::provider(&signpost_telemetry::Resolved {
        endpoint: "http://127.0.0.1:9".into(),
        sampling_ratio: ratio,
        service_name: "gateway-test".into(),
    })
    .unwrap();
    let tracer = opentelemetry::global::BoxedTracer::new(Box::new(provider.tracer("test")));
    (Tracing { tracer, ratio }, provider)
}

fn request(traceparent: Option<&str>) -> Request<()> {
    let mut req = Request::get("/api/x").body(()).unwrap();
    if let Some(tp) = traceparent {
        req.headers_mut()
            .insert("traceparent", HeaderValue::from_str(tp).unwrap());
        req.headers_mut()
            .insert("tracestate", HeaderValue::from_static("vendor=1"));
    }
    req
}

/// (trace id, span id, flags) of the `traceparent` the request now carries.
fn sent(req: &Request<()>) -> (String, String, String) {
    let value = req.headers()["traceparent"].to_str().unwrap();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

const CALLER: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn an_unsampled_request_gets_a_new_span_id_upstream_and_no_span() {
    let (tracing, _provider) = tracing(0.0);
    // A new trace the ratio leaves out.
    let mut req = request(None);
    let trace = tracing.start(false, &spec(), &mut req);
    assert!(trace.cx.is_none(), "no context, no span");
    let (trace_id, span_id, flags) = sent(&req);
    assert_eq!(
        (trace_id.len(), span_id.len(), flags.as_str()),
        (32, 16, "00")
    );
    assert_ne!(trace_id, "0".repeat(32));
    // The caller's unsampled trace: continued with a span id of the gateway's.
    let mut req = request(Some(&format!("00-{CALLER}-00f067aa0ba902b7-00")));
    let trace = tracing.start(false, &spec(), &mut req);
    assert!(trace.cx.is_none());
    let (trace_id, span_id, flags) = sent(&req);
    assert_eq!((trace_id.as_str(), flags.as_str()), (CALLER, "00"));
    assert_ne!(span_id, "00f067aa0ba902b7");
    assert_eq!(
        req.headers()["tracestate"],
        "vendor=1",
        "passed on as it came"
    );
    // With the access log on, the context carries the ids the log line needs.
    let mut req = request(Some(&format!("00-{CALLER}-00f067aa0ba902b7-00")));
    let trace = tracing.start(true, &spec(), &mut req);
    let cx = trace.cx.as_ref().expect("a context for the access log");
    let span = cx.span();
    let sc = span.span_context();
    assert!(!span.is_recording() && !sc.is_sampled());
    assert_eq!(sc.trace_id().to_string(), CALLER);
    assert_eq!(sc.span_id().to_string(), sent(&req).1);
}

#[tokio::test]
async fn a_sampled_caller_is_continued_by_a_recording_span() {
    let (tracing, _provider) = tracing(0.0);
    let mut req = request(Some(&format!("00-{CALLER}-00f067aa0ba902b7-01")));
    let trace = tracing.start(false, &spec(), &mut req);
    let cx = trace.cx.as_ref().expect("a span");
    let span = cx.span();
    assert!(
        span.is_recording(),
        "the caller's decision wins over the ratio"
    );
    let (trace_id, span_id, flags) = sent(&req);
    assert_eq!((trace_id.as_str(), flags.as_str()), (CALLER, "01"));
    assert_eq!(span_id, span.span_context().span_id().to_string());
    trace.finish(http::Response::new(()));
}

#[tokio::test]
async fn new_traces_are_sampled_at_the_ratio_not_twice() {
    let (tracing, _provider) = tracing(0.5);
    let runs = 2_000;
    let mut sampled = 0;
    for _ in 0..runs {
        let mut req = request(None);
        let trace = tracing.start(false, &spec(), &mut req);
        let (trace_id, span_id, flags) = sent(&req);
        match &trace.cx {
            Some(cx) => {
                // The decision taken ahead is the span's: recording, and what goes upstream.
                let span = cx.span();
                assert!(span.is_recording());
                assert_eq!(flags, "01");
                assert_eq!(trace_id, span.span_context().trace_id().to_string());
                assert_eq!(span_id, span.span_context().span_id().to_string());
                sampled += 1;
            }
            None => assert_eq!(flags, "00"),
        }
    }
    // Drawn twice, the share would be near 0.25.
    let share = f64::from(sampled) / f64::from(runs);
    assert!((0.42..0.58).contains(&share), "sampled {share}");
}
