//! The server's own part of the harness, on top of `signpost-testkit` (the in-process agent
//! on 127.0.0.1:0 and deadline polling every crate's tests share): a registration body and an
//! SSE reader.

use std::time::Duration;

use serde_json::Value;
pub use signpost_testkit::{eventually, TestAgent};

/// A registration body: an instance at 10.0.0.1:`port` with no check (passing).
pub fn instance(port: u16) -> Value {
    serde_json::json!({ "address": "10.0.0.1", "port": port })
}

/// A minimal Server-Sent Events reader for tests.
pub struct SseReader {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    pub async fn open(t: &TestAgent, path: &str) -> SseReader {
        let resp = t.client.get(t.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseReader {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event's name and JSON data, skipping keep-alive comments; fails after 10 s.
    pub async fn next(&mut self) -> (String, Value) {
        let block = self.next_raw().await;
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        (name, serde_json::from_str(&data).unwrap())
    }

    /// The next event exactly as sent (its lines and the blank line ending it), skipping
    /// keep-alive comments; fails after 10 s.
    pub async fn next_raw(&mut self) -> String {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if !block.lines().any(|l| l.starts_with("data:")) {
                    continue;
                }
                return block;
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("an SSE event within 10 s")
                .expect("stream still open")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}
