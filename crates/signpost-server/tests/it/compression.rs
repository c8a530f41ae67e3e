//! The agent compresses its large JSON answers for clients that ask, and nothing else: small
//! answers and the SSE watch go as they are.

use std::time::Duration;

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::common::TestAgent;

/// `GET path` with `Accept-Encoding: accept`: the status, the `Content-Encoding`, and the body
/// decoded as JSON (decompressed first when it was compressed).
async fn get(t: &TestAgent, path: &str, accept: &str) -> (u16, Option<String>, Value) {
    let resp = t
        .client
        .get(t.url(path))
        .header("accept-encoding", accept)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let encoding = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let wire = resp.bytes().await.unwrap();
    let mut body = Vec::new();
    match encoding.as_deref() {
        None => body = wire.to_vec(),
        Some("gzip") => {
            GzipDecoder::new(&wire[..])
                .read_to_end(&mut body)
                .await
                .unwrap();
        }
        Some("zstd") => {
            ZstdDecoder::new(&wire[..])
                .read_to_end(&mut body)
                .await
                .unwrap();
        }
        Some(other) => panic!("unexpected encoding {other}"),
    }
    (status, encoding, serde_json::from_slice(&body).unwrap())
}

/// Forty instances of `web` with some metadata: a listing of several KiB.
async fn many_instances(t: &TestAgent) {
    for i in 0..40 {
        let body = json!({
            "id": format!("web-{i}"), "address": "10.0.0.1", "port": 8000 + i,
            "tags": ["v1", "blue"], "metadata": {"zone": "eu-west-1a", "build": "2026.12.05"}
        });
        let (code, answer) = t.register("web", body).await;
        assert!(code == 200 || code == 201, "{code} {answer}");
    }
}

#[tokio::test]
async fn large_listings_are_compressed_when_asked() {
    let t = TestAgent::start().await;
    many_instances(&t).await;
    let (code, encoding, body) = get(&t, "/api/v1/services/web/instances", "gzip").await;
    assert_eq!(code, 200);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(
        body["instances"].as_array().map(Vec::len),
        Some(40),
        "{body}"
    );
    // The Consul catalog too, and zstd when preferred.
    let (_, encoding, body) = get(&t, "/v1/catalog/service/web", "gzip;q=0.5, zstd").await;
    assert_eq!(encoding.as_deref(), Some("zstd"));
    assert_eq!(body.as_array().map(Vec::len), Some(40));
    // Not asked: not compressed.
    let (_, encoding, body) = get(&t, "/api/v1/services/web/instances", "identity").await;
    assert_eq!(encoding, None);
    assert_eq!(body["instances"].as_array().map(Vec::len), Some(40));
    t.shutdown().await;
}

#[tokio::test]
async fn kv_recursion_is_compressed_and_small_answers_are_not() {
    let t = TestAgent::start().await;
    for i in 0..30 {
        let resp = t
            .client
            .put(t.url(&format!("/v1/kv/app/config/key-{i}")))
            .body("a value long enough to add up ".repeat(4))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let (code, encoding, body) = get(&t, "/v1/kv/app/?recurse", "gzip").await;
    assert_eq!(code, 200);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(body.as_array().map(Vec::len), Some(30));

    // One key, one instance: under 1 KiB, sent as it is.
    let (_, encoding, _) = get(&t, "/v1/kv/app/config/key-1", "gzip").await;
    assert_eq!(encoding, None);
    let (code, answer) = t
        .register("tiny", json!({"id": "t", "address": "10.0.0.1", "port": 1}))
        .await;
    assert!(code == 200 || code == 201, "{code} {answer}");
    let (_, encoding, body) = get(&t, "/api/v1/services/tiny/instances", "gzip").await;
    assert_eq!(encoding, None);
    assert_eq!(body["instances"].as_array().map(Vec::len), Some(1));
    t.shutdown().await;
}

#[tokio::test]
async fn the_watch_stream_is_never_compressed() {
    let t = TestAgent::start().await;
    many_instances(&t).await;
    let mut resp = t
        .client
        .get(t.url("/api/v1/services/web/watch"))
        .header("accept-encoding", "gzip, br, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none());
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // The reset (several KiB) arrives as readable text, at once.
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("the reset arrives without waiting for more")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(first.to_vec()).expect("plain text");
    assert!(text.contains("reset") || text.contains("web-"), "{text}");
    t.shutdown().await;
}
