//! An OTLP/HTTP trace receiver in the test process: `POST /v1/traces` with an
//! `ExportTraceServiceRequest` in protobuf (what `opentelemetry-otlp`'s `http-proto` exporter
//! sends), decoded with the `opentelemetry-proto` types and kept as [`ReceivedSpan`]s for a test
//! to look at. Bound to 127.0.0.1:0; [`OtlpReceiver::endpoint`] is what a process's
//! `[telemetry] otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` takes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use tokio::net::TcpListener;

use crate::Served;

/// One span as the receiver got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex id of the parent span; empty for a root.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// OTLP span kind (1 internal, 2 server, 3 client).
    pub kind: i32,
    /// Attributes, values printed (strings as they are).
    pub attributes: BTreeMap<String, String>,
    /// Event names, in order.
    pub events: Vec<String>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status: i32,
    /// Start, in nanoseconds since the epoch (orders siblings in [`OtlpReceiver::tree`]).
    pub start_nanos: u64,
}

impl ReceivedSpan {
    /// An attribute's printed value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A running receiver. Dropping it stops it.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    _served: Served,
}

impl OtlpReceiver {
    /// Starts a receiver on 127.0.0.1:0.
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let served = Served::spawn("the OTLP receiver", move |stopped| async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await;
        });
        OtlpReceiver {
            addr,
            spans,
            _served: served,
        }
    }

    /// The base URL exporters are pointed at (`/v1/traces` is added by them).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans").clone()
    }

    /// Waits (up to `limit`) until a span matching `found` has arrived and returns it.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        found: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        let mut hit = None;
        crate::eventually_within(what, limit, || {
            hit = self.spans().into_iter().find(|s| found(s));
            std::future::ready(hit.is_some())
        })
        .await;
        hit.expect("found")
    }

    /// The spans of `trace_id` as an indented tree, parents before children (siblings by start
    /// time): `service: name [attributes]`, one span a line.
    pub fn tree(&self, trace_id: &str) -> String {
        let mut spans: Vec<ReceivedSpan> = self
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        spans.sort_by_key(|s| s.start_nanos);
        let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut out = format!("trace {trace_id}\n");
        let roots = spans
            .iter()
            .filter(|s| !ids.contains(&s.parent_span_id.as_str()));
        for root in roots {
            write_span(&mut out, &spans, root, 1);
        }
        out
    }
}

fn write_span(out: &mut String, all: &[ReceivedSpan], span: &ReceivedSpan, depth: usize) {
    let shown: Vec<String> = [
        "signpost.route",
        "signpost.upstream",
        "signpost.attempts",
        "signpost.instance",
        "http.route",
        "http.response.status_code",
    ]
    .iter()
    .filter_map(|k| span.attr(k).map(|v| format!("{k}={v}")))
    .collect();
    let events = if span.events.is_empty() {
        String::new()
    } else {
        format!(" events={:?}", span.events)
    };
    let _ = writeln!(
        out,
        "{}{}: {} [{}]{}",
        "  ".repeat(depth),
        span.service,
        span.name,
        shown.join(" "),
        events
    );
    for child in all.iter().filter(|s| s.parent_span_id == span.span_id) {
        write_span(out, all, child, depth + 1);
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    body: Bytes,
) -> Result<Vec<u8>, StatusCode> {
    let request =
        ExportTraceServiceRequest::decode(body.as_ref()).map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(printed)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), printed(kv)))
                        .collect(),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    status: span.status.map(|s| s.code).unwrap_or(0),
                    start_nanos: span.start_time_unix_nano,
                });
            }
        }
    }
    spans.lock().expect("spans").extend(received);
    Ok(ExportTraceServiceResponse::default().encode_to_vec())
}

fn printed(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
