//! `[limits]` on client connections (issue 14 §4): a request head that stalls is closed, and
//! upgraded connections are capped, closed when idle and closed at shutdown.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::common::{eventually, AgentExt, TestAgent, TestGateway};
use crate::websocket::echo_server;

/// Whether the peer closes `stream` within `within` (reading and discarding whatever it sends).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_connection_that_stalls_in_its_request_head_is_closed() {
    let agent = TestAgent::start().await;
    let gw = TestGateway::start(
        &agent,
        "[limits]\nheader_timeout = \"300ms\"\n[[route]]\nprefix = \"/\"\nservice = \"svc\"\n",
    )
    .await;
    // One byte of an HTTP/1.1 head; one byte of the HTTP/2 preface (which the protocol
    // detection waits on); most of a head.
    for sent in [&b"G"[..], b"P", b"GET / HTTP/1.1\r\nHo"] {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let started = Instant::now();
        assert!(
            closed_within(&mut stream, Duration::from_secs(10)).await,
            "{:?} kept open",
            String::from_utf8_lossy(sent)
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
    // A connection that says nothing at all is closed too.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    // So is an idle HTTP/1.1 keep-alive connection: its response is read, then nothing.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let agent = TestAgent::start().await;
    let gw = TestGateway::start(
        &agent,
        "[limits]\nheader_timeout = \"2s\"\nidle_timeout = \"600ms\"\n",
    )
    .await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/nowhere", gw.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 404);
    // No further request: the gateway ends the connection.
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .ok();
}

/// A gateway with one WebSocket echo route (`/ws`) and `limits` as its `[limits]` table.
async fn ws_gateway(agent: &TestAgent, limits: &str) -> TestGateway {
    let port = echo_server().await;
    agent.add_instance("ws", "ws-1", port, json!({})).await;
    let gw = TestGateway::start(
        agent,
        &format!("[limits]\n{limits}\n[[route]]\nprefix = \"/ws\"\nservice = \"ws\"\n"),
    )
    .await;
    gw.wait_upstreams("/ws", 1).await;
    gw
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &TestGateway) -> Result<Ws, tungstenite::Error> {
    tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", gw.addr))
        .await
        .map(|(ws, _)| ws)
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), text);
}

/// Whether the WebSocket ends (closed, reset or a close frame) within `within`.
async fn ends_within(ws: &mut Ws, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_))) => return true,
            Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn upgraded_connections_beyond_the_cap_are_refused_with_503() {
    let agent = TestAgent::start().await;
    let gw = ws_gateway(&agent, "max_upgraded = 1").await;
    let mut first = connect(&gw).await.unwrap();
    echo(&mut first, "one").await;

    let Err(tungstenite::Error::Http(refused)) = connect(&gw).await else {
        panic!("a second upgrade was let through");
    };
    assert_eq!(refused.status(), 503);
    let body: Value = serde_json::from_slice(refused.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["kind"], "upgrade_limit", "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_upgraded"));
    echo(&mut first, "still open").await;

    // The slot comes back when the first one closes.
    first.close(None).await.unwrap();
    drop(first);
    eventually("a new upgrade once the first closed", || async {
        match connect(&gw).await {
            Ok(mut ws) => {
                echo(&mut ws, "again").await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn an_idle_upgraded_connection_is_closed() {
    let agent = TestAgent::start().await;
    let gw = ws_gateway(&agent, "upgrade_idle_timeout = \"1s\"").await;
    let mut ws = connect(&gw).await.unwrap();
    // Traffic keeps it open past the idle timeout...
    for i in 0..4 {
        echo(&mut ws, &format!("ping {i}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    echo(&mut ws, "last").await;
    // ...silence closes it.
    let started = Instant::now();
    assert!(ends_within(&mut ws, Duration::from_secs(10)).await);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn upgraded_connections_are_closed_at_shutdown() {
    let agent = TestAgent::start().await;
    let gw = ws_gateway(&agent, "").await;
    let mut ws = connect(&gw).await.unwrap();
    echo(&mut ws, "hello").await;
    tokio::time::timeout(Duration::from_secs(30), gw.shutdown())
        .await
        .expect("shutdown finished");
    assert!(ends_within(&mut ws, Duration::from_secs(10)).await);
}
