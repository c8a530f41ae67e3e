//! Header rewriting on the way up and down.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

use crate::common::{raw_request, respond, AgentExt, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn headers_are_rewritten_both_ways() {
    let agent = TestAgent::start().await;
    // The backend echoes what it saw, and answers with hop-by-hop headers of its own.
    let backend = Backend::start(false, |req| async move {
        let seen: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
            .collect();
        let mut r = respond(200, serde_json::to_vec(&seen).unwrap());
        let h = r.headers_mut();
        h.insert("connection", "x-resp-hop".parse().unwrap());
        h.insert("x-resp-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-resp-end", "kept".parse().unwrap());
        r
    })
    .await;
    agent
        .add_instance("svc", "b-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(&agent, "[[route]]\nprefix = \"/\"\nservice = \"svc\"\n").await;
    gw.wait_upstreams("/", 1).await;

    let req = Request::get("/x")
        .header("host", "api.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("keep-alive", "timeout=30")
        .header("x-hop", "secret")
        .header("proxy-authorization", "Basic Zm9v")
        .header("te", "gzip")
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "req-42")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw_request(gw.addr, req).await;
    assert_eq!(resp.status(), 200);
    let seen: Value = serde_json::from_slice(resp.body()).unwrap();
    for gone in [
        "connection",
        "keep-alive",
        "x-hop",
        "proxy-authorization",
        "te",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(seen["x-end-to-end"], "kept");
    assert_eq!(seen["host"], "api.example.com", "the client's Host is kept");
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "not trusted: replaced, not appended to"
    );
    assert_eq!(
        seen["x-forwarded-proto"], "http",
        "not trusted: overwritten"
    );
    assert_eq!(seen["x-forwarded-host"], "api.example.com");
    assert_eq!(
        seen["x-request-id"], "req-42",
        "a client's request id is kept"
    );

    // Down: hop-by-hop out, end-to-end kept, the request id echoed.
    let h = resp.headers();
    assert!(h.get("x-resp-hop").is_none());
    assert!(h.get("keep-alive").is_none());
    assert_eq!(h["x-resp-end"], "kept");
    assert_eq!(h["x-request-id"], "req-42");

    // Without an id, the gateway makes one and sends it both ways.
    let req = Request::get("/y")
        .header("host", "gw.local")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = raw_request(gw.addr, req).await;
    let seen: Value = serde_json::from_slice(resp.body()).unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(seen["x-request-id"], id);
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], "gw.local");
}

#[tokio::test]
async fn trusted_forwarded_headers_are_kept() {
    let agent = TestAgent::start().await;
    let backend = Backend::echo("b").await;
    agent
        .add_instance("svc", "b-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        "trust_forwarded_headers = true\n[[route]]\nprefix = \"/\"\nservice = \"svc\"\n",
    )
    .await;
    gw.wait_upstreams("/", 1).await;
    let resp = gw
        .client
        .get(gw.url("/"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "public.example.com")
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(body["headers"]["x-forwarded-host"], "public.example.com");
}
