//! WebSocket upgrades pass through.

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{AgentExt, TestAgent, TestGateway};

/// A WebSocket echo server on 127.0.0.1:0; echoes every text and binary message.
pub async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let agent = TestAgent::start().await;
    let port = echo_server().await;
    agent.add_instance("ws", "ws-1", port, json!({})).await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [[route]]
        prefix = "/ws"
        service = "ws"
        strip_prefix = true
        timeout = "2s"
        "#,
    )
    .await;
    gw.wait_upstreams("/ws", 1).await;

    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", gw.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    for i in 0..10 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), text);
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_data().as_ref(), &big[..]);
    ws.close(None).await.unwrap();
}
