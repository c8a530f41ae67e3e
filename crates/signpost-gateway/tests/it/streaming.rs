//! Bodies stream through in bounded memory both ways: the gateway never reads ahead of the
//! side that consumes, so a slow reader holds the writer back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;

use crate::common::{respond, AgentExt, Backend, BoxError, TestAgent, TestGateway};

const MIB: u64 = 1 << 20;
const CHUNK: usize = 256 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// How far the producer may get ahead of the consumer: what the kernel lets the sockets of two
/// hops hold (receive and send buffers autotune up to the `tcp_rmem` and `tcp_wmem` maxima,
/// 32 MiB and 4 MiB on a stock Debian kernel), plus hyper's buffers and room to spare. A gateway
/// that buffered bodies would blow through it while the consumer is slow.
fn bound() -> u64 {
    let max = |knob: &str, default: u64| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{knob}"))
            .ok()
            .and_then(|v| v.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(default)
    };
    2 * (max("tcp_rmem", 6 * MIB) + max("tcp_wmem", 4 * MIB)) + 16 * MIB
}
/// The consumer is slow (a short pause per MiB) for this many bytes, then reads at full speed.
const SLOW: u64 = 128 * MIB;

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A stream of `total` zero bytes counting what it hands out in `produced`, recording the
/// largest lead over `consumed` in `max_lead`.
fn producer(
    total: u64,
    produced: Arc<AtomicU64>,
    consumed: Arc<AtomicU64>,
    max_lead: Arc<AtomicU64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(0u64, move |n| {
        let (produced, consumed, max_lead) = (produced.clone(), consumed.clone(), max_lead.clone());
        async move {
            if n >= total {
                return None;
            }
            let lead = produced
                .load(Ordering::SeqCst)
                .saturating_sub(consumed.load(Ordering::SeqCst));
            max_lead.fetch_max(lead, Ordering::SeqCst);
            let len = (total - n).min(CHUNK as u64);
            produced.fetch_add(len, Ordering::SeqCst);
            Some((Ok(Bytes::from_static(&ZEROS[..len as usize])), n + len))
        }
    })
}

/// Counts `len` consumed bytes; pauses briefly after each MiB while in the slow phase.
async fn consume(consumed: &AtomicU64, len: usize) {
    let before = consumed.fetch_add(len as u64, Ordering::SeqCst);
    let after = before + len as u64;
    if after <= SLOW && before / MIB != after / MIB {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_streams_through_in_bounded_memory() {
    const TOTAL: u64 = 1 << 30;
    let agent = TestAgent::start().await;
    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let max_lead = Arc::new(AtomicU64::new(0));
    let backend = {
        let consumed = consumed.clone();
        Backend::start(false, move |req| {
            let consumed = consumed.clone();
            async move {
                let mut body = req.into_body();
                let mut total = 0u64;
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.unwrap().into_data() else {
                        continue;
                    };
                    total += data.len() as u64;
                    consume(&consumed, data.len()).await;
                }
                respond(200, total.to_string())
            }
        })
        .await
    };
    agent
        .add_instance("sink", "sink-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(&agent, "[[route]]\nprefix = \"/\"\nservice = \"sink\"\n").await;
    gw.wait_upstreams("/", 1).await;

    let rss_before = peak_rss();
    let body = reqwest::Body::wrap_stream(producer(
        TOTAL,
        produced.clone(),
        consumed.clone(),
        max_lead.clone(),
    ));
    let resp = gw
        .client
        .post(gw.url("/upload"))
        .header("content-length", TOTAL.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().await.unwrap(),
        TOTAL.to_string(),
        "every byte arrived"
    );
    let lead = max_lead.load(Ordering::SeqCst);
    eprintln!(
        "largest lead of the producer: {:.1} MiB",
        lead as f64 / MIB as f64
    );
    assert!(
        lead <= bound(),
        "the client got {} MiB ahead of the upstream: the gateway buffered",
        lead / MIB
    );
    let grown = peak_rss().saturating_sub(rss_before);
    assert!(
        grown < 256 * MIB,
        "peak RSS grew by {} MiB during a 1 GiB upload",
        grown / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_streams_back_in_bounded_memory() {
    const TOTAL: u64 = 256 * MIB;
    let agent = TestAgent::start().await;
    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let max_lead = Arc::new(AtomicU64::new(0));
    let backend = {
        let (produced, consumed, max_lead) = (produced.clone(), consumed.clone(), max_lead.clone());
        Backend::start(false, move |_req| {
            let stream = producer(TOTAL, produced.clone(), consumed.clone(), max_lead.clone())
                .map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError));
            async move {
                let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                r.headers_mut()
                    .insert("content-length", TOTAL.to_string().parse().unwrap());
                r
            }
        })
        .await
    };
    agent
        .add_instance("source", "source-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(&agent, "[[route]]\nprefix = \"/\"\nservice = \"source\"\n").await;
    gw.wait_upstreams("/", 1).await;

    let resp = gw.client.get(gw.url("/download")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(TOTAL));
    let mut stream = resp.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        consume(&consumed, chunk.len()).await;
    }
    assert_eq!(total, TOTAL);
    let lead = max_lead.load(Ordering::SeqCst);
    eprintln!(
        "largest lead of the producer: {:.1} MiB",
        lead as f64 / MIB as f64
    );
    assert!(
        lead <= bound(),
        "the upstream got {} MiB ahead of the client: the gateway buffered",
        lead / MIB
    );
    // The connection went back to the pool after the body ended.
    let route = gw.route("/").unwrap();
    assert_eq!(route.upstreams[0].idle_connections, 1);
}
