//! Upstream connections: HTTP/1.1 keep-alive pooling, h2c multiplexing, h2c clients.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::common::{respond, AgentExt, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn http1_connections_to_upstreams_are_reused() {
    let agent = TestAgent::start().await;
    let backend = Backend::echo("b").await;
    agent
        .add_instance("svc", "b-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(&agent, "[[route]]\nprefix = \"/\"\nservice = \"svc\"\n").await;
    gw.wait_upstreams("/", 1).await;
    for i in 0..50 {
        let (status, _) = gw.get(&format!("/n/{i}")).await;
        assert_eq!(status, 200);
    }
    // Bodies of every size and an empty one, then HEAD: the connection survives each.
    for size in [0usize, 1, 70_000] {
        let resp = gw
            .client
            .post(gw.url("/body"))
            .body(vec![b'x'; size])
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["body_len"], size);
    }
    let resp = gw.client.head(gw.url("/head")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = gw.client.get(gw.url("/after-head")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        backend.accepted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "sequential requests share one upstream connection"
    );
    let metrics = gw.gateway.metrics();
    let opened = format!(
        "signpost_gateway_upstream_connections_opened_total{{address=\"127.0.0.1:{}\"}} 1",
        backend.port()
    );
    assert!(metrics.contains(&opened), "{metrics}");
}

#[tokio::test]
async fn h2c_upstreams_are_multiplexed() {
    let agent = TestAgent::start().await;
    let backend = Backend::start(true, |req| async move {
        let body = format!("{:?} {}", req.version(), req.uri().path());
        respond(200, body)
    })
    .await;
    agent
        .add_instance("grpcish", "h2-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        "[[route]]\nprefix = \"/\"\nservice = \"grpcish\"\nprotocol = \"h2c\"\n",
    )
    .await;
    gw.wait_upstreams("/", 1).await;
    let requests = (0..20).map(|i| {
        let client = gw.client.clone();
        let url = gw.url(&format!("/call/{i}"));
        async move {
            let resp = client.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    for (i, (status, body)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200);
        assert_eq!(body, format!("HTTP/2.0 /call/{i}"));
    }
    assert_eq!(
        backend.accepted.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one multiplexed h2c connection"
    );
    let seen = backend.requests();
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|s| s.version == Version::HTTP_2));
    assert!(seen
        .iter()
        .all(|s| s.method == "GET" && s.uri.starts_with("/call/")));
    assert!(seen
        .iter()
        .all(|s| s.headers.contains_key("x-forwarded-for")));
}

#[tokio::test]
async fn clients_may_speak_h2c() {
    let agent = TestAgent::start().await;
    let backend = Backend::echo("b").await;
    agent
        .add_instance("svc", "b-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(&agent, "[[route]]\nprefix = \"/\"\nservice = \"svc\"\n").await;
    gw.wait_upstreams("/", 1).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://api.example.com/h2/path")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["uri"], "/h2/path");
    assert_eq!(body["headers"]["host"], "api.example.com");
    assert_eq!(body["headers"]["x-forwarded-host"], "api.example.com");
}

/// A pooled connection the upstream closed while it sat idle is replaced by a new one, without
/// an error and without a retry (the route allows none): the request was never written on it.
#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers one request per connection (keep-alive promised), then closes it and reports.
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut served = 0u32;
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            served += 1;
            let body = format!("conn {served}");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            drop(stream);
            let _ = closed_tx.send(served);
        }
    });
    let agent = TestAgent::start().await;
    agent.add_instance("svc", "closer", port, json!({})).await;
    let gw = TestGateway::start(
        &agent,
        "[[route]]\nprefix = \"/\"\nservice = \"svc\"\n[route.retry]\nattempts = 1\n",
    )
    .await;
    gw.wait_upstreams("/", 1).await;
    for i in 1..=3u32 {
        let resp = gw.client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.text().await.unwrap(), format!("conn {i}"));
        // The upstream has closed the connection the gateway pooled before the next request.
        assert_eq!(closed.recv().await, Some(i));
    }
    server.abort();
}
