//! Watch fan-out: many watchers of one service share each change's frame, and a watcher that
//! falls behind is sent a fresh `reset` rather than silently missing changes.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{json, Value};
use signpost_api::sse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{SseReader, TestAgent};
use crate::watch::frames_rendered;

#[tokio::test]
async fn many_watchers_of_one_service_get_byte_identical_frames_rendered_once() {
    let t = TestAgent::start().await;
    t.register("fan", json!({"id": "a", "address": "10.0.0.1", "port": 80}))
        .await;
    // Mixed filters, all showing passing instances: every one is sent the same frames.
    const WATCHERS: usize = 64;
    let mut watchers = Vec::with_capacity(WATCHERS);
    for i in 0..WATCHERS {
        let path = if i % 2 == 0 {
            "/api/v1/services/fan/watch"
        } else {
            "/api/v1/services/fan/watch?status=any"
        };
        let mut w = SseReader::open(&t, path).await;
        assert_eq!(w.next().await.0, "reset");
        watchers.push(w);
    }
    let before = frames_rendered(&t).await;

    t.register("fan", json!({"id": "b", "address": "10.0.0.2", "port": 80}))
        .await;
    let added = all_next(&mut watchers).await;
    assert!(added[0].starts_with("event: add\n"), "{}", added[0]);
    assert!(added[0].contains(r#""id":"b""#), "{}", added[0]);
    assert!(added.iter().all(|f| *f == added[0]), "byte-identical adds");
    assert_eq!(
        frames_rendered(&t).await,
        before + 1,
        "rendered once for all"
    );

    assert_eq!(t.deregister("fan", "b").await, 204);
    let removed = all_next(&mut watchers).await;
    assert!(removed[0].starts_with("event: remove\n"), "{}", removed[0]);
    assert!(
        removed.iter().all(|f| *f == removed[0]),
        "byte-identical removes"
    );
    assert_eq!(frames_rendered(&t).await, before + 2, "once per change");
}

/// The next frame of every watcher, exactly as sent.
async fn all_next(watchers: &mut [SseReader]) -> Vec<String> {
    futures::future::join_all(watchers.iter_mut().map(|w| w.next_raw())).await
}

/// Instance `id` of `port` whose frames are about 7 KiB: several hundred of them fill the
/// kernel's socket buffers of a watcher that does not read.
fn big(id: usize, port: u16) -> Value {
    let tags: Vec<String> = (0..16)
        .map(|i| format!("t{i:02}-{}", "x".repeat(400)))
        .collect();
    json!({"id": format!("i{id}"), "address": "10.0.0.1", "port": port, "tags": tags})
}

#[tokio::test]
async fn a_lagging_watcher_gets_a_reset_then_the_current_state() {
    let t = TestAgent::start().await;
    let mut watch = RawWatch::open(&t, "/api/v1/services/lag/watch?status=any").await;
    let first = watch.next().await;
    assert_eq!(first.event, "reset");
    // The watcher stops reading: once the socket buffers are full its stream is no longer
    // polled, and it falls more than the channel holds (1,024 changes) behind. Each round
    // registers every instance again with the round as its port, the instances of a round at
    // once.
    const IDS: usize = 50;
    let rounds: u16 = 40;
    for port in 1..=rounds {
        let writes = (0..IDS).map(|id| t.register("lag", big(id, port)));
        for (code, _) in futures::future::join_all(writes).await {
            assert!(code == 200 || code == 201, "registration answered {code}");
        }
    }
    // It reads again: each instance's changes in order up to where it fell behind, then a
    // reset with the current state, never a gap.
    let mut last = [0u16; IDS];
    let mut seen = 0;
    let reset = loop {
        let e = watch.next().await;
        let data: Value = serde_json::from_str(&e.data).unwrap();
        match e.event.as_str() {
            "add" | "update" => {
                let id: usize = data["instance"]["id"].as_str().unwrap()[1..]
                    .parse()
                    .unwrap();
                let port = data["instance"]["port"].as_u64().unwrap() as u16;
                assert_eq!(
                    port,
                    last[id] + 1,
                    "a change of i{id} missed without a reset"
                );
                last[id] = port;
                seen += 1;
                assert!(
                    seen < IDS * rounds as usize,
                    "every change arrived: it never lagged"
                );
            }
            "reset" => break data,
            other => panic!("unexpected event {other}"),
        }
    };
    eprintln!("the watcher read {seen} changes, then a reset");
    assert!(
        seen > 0,
        "some changes were sent before the watcher stalled"
    );
    let instances = reset["instances"].as_array().unwrap();
    assert_eq!(instances.len(), IDS);
    assert!(
        instances.iter().all(|i| i["port"] == rounds),
        "the reset carries the current state"
    );
    // Changes after the reset follow it as usual.
    t.register("lag", big(7, rounds + 1)).await;
    let e = watch.next().await;
    assert_eq!(e.event, "update");
    let data: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data["instance"]["id"], "i7");
    assert_eq!(data["instance"]["port"], rounds + 1);
    assert!(data["index"].as_u64().unwrap() > reset["index"].as_u64().unwrap());
}

/// A watch over a plain socket with a small receive buffer (HTTP/1.0, so the body is the
/// event stream itself, without chunked encoding), read only when the test asks.
struct RawWatch {
    stream: TcpStream,
    /// The response head has been read.
    head_read: bool,
    /// Bytes of the response head read so far.
    head: Vec<u8>,
    parser: sse::Parser,
    events: VecDeque<sse::Event>,
}

impl RawWatch {
    async fn open(t: &TestAgent, path: &str) -> RawWatch {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(t.addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", t.addr);
        stream.write_all(request.as_bytes()).await.unwrap();
        RawWatch {
            stream,
            head_read: false,
            head: Vec::new(),
            parser: sse::Parser::new(),
            events: VecDeque::new(),
        }
    }

    /// The next event (keep-alive comments skipped); fails after 20 s.
    async fn next(&mut self) -> sse::Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .expect("an event within 20 s")
                .unwrap();
            assert!(n > 0, "the stream ended");
            let body = &buf[..n];
            if !self.head_read {
                self.head.extend_from_slice(body);
                let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&self.head[..end]).to_string();
                assert!(head.starts_with("HTTP/1.0 200"), "{head}");
                assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
                self.head_read = true;
                let rest = self.head.split_off(end + 4);
                self.events.extend(self.parser.push(&rest).unwrap());
                continue;
            }
            self.events.extend(self.parser.push(body).unwrap());
        }
    }
}
