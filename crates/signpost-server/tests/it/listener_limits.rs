//! Every HTTP listener's own bounds (`[limits] http_header_timeout`, `http_idle_timeout`,
//! `http_body_timeout`, `http_max_conns`), over raw sockets: the dedicated Raft listener
//! included.

use std::time::Duration;

use signpost_core::model::Dur;
use signpost_server::agent::{Listeners, Listening};
use signpost_server::{Agent, AgentConfig};
use signpost_testkit::Served;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{eventually, TestAgent};

/// Whether the agent closes `conn` (EOF or reset) within 5 s, having sent nothing.
async fn closed_by_agent(conn: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// Reads one response whose body ends with `end` (or until the connection closes).
async fn read_response(conn: &mut TcpStream, end: &str) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = conn.read(&mut chunk).await.unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if n == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with(end)) {
                break;
            }
        }
    })
    .await
    .expect("an answer within 5 s");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn one_byte_of_a_head_on_the_raft_listener_is_cut_off() {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raft = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, raft_addr) = (http.local_addr().unwrap(), raft.local_addr().unwrap());
    let mut config = AgentConfig {
        dev: true,
        ..AgentConfig::default()
    };
    config.limits.http_header_timeout = Dur(300);
    let agent = Agent::start_with(
        config,
        Listening {
            http: http_addr,
            raft: Some(raft_addr),
        },
    )
    .await
    .unwrap();
    eventually("the agent leads", || async { agent.is_leader() }).await;
    let serving = agent.clone();
    let mut served = Served::spawn("the agent", |stopped| async move {
        let listeners = Listeners {
            http,
            raft: Some(raft),
            dns: None,
        };
        serving.serve_all(listeners, stopped).await.unwrap();
    });
    for addr in [raft_addr, http_addr] {
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"P").await.unwrap();
        assert!(
            closed_by_agent(&mut slow).await,
            "one byte of a head is cut off ({addr})"
        );
    }
    // Clients that send their preface in time are still served, HTTP/2 (h2c) included.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(format!("http://{http_addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    served.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let t = TestAgent::start_with(|c| {
        c.limits.http_header_timeout = Dur(60_000);
        c.limits.http_idle_timeout = Dur(300);
    })
    .await;
    let mut conn = TcpStream::connect(t.addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut conn, "}").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "kept alive: {answer}"
    );
    // Nothing more: the agent closes the idle connection long before the header timeout.
    assert!(
        closed_by_agent(&mut conn).await,
        "an idle connection is closed"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let t = TestAgent::start_with(|c| c.limits.http_body_timeout = Dur(300)).await;
    let mut conn = TcpStream::connect(t.addr).await.unwrap();
    conn.write_all(
        b"POST /api/v1/services/web/instances HTTP/1.1\r\nhost: x\r\n\
          content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"address\":",
    )
    .await
    .unwrap();
    let answer = read_response(&mut conn, "}").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"field\":\"body\""), "{answer}");
    assert!(t.ids("web", "any").await.is_empty(), "nothing registered");
    let metrics = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("signpost_limits_refused_total{reason=\"body_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn over_the_connection_cap_new_connections_wait_for_a_free_slot() {
    let t = TestAgent::start_with(|c| {
        c.limits.http_max_conns = 2;
        c.limits.http_header_timeout = Dur(60_000);
    })
    .await;
    let first = TcpStream::connect(t.addr).await.unwrap();
    let _second = TcpStream::connect(t.addr).await.unwrap();
    let mut third = TcpStream::connect(t.addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte))
            .await
            .is_err(),
        "the third connection is not served while two are open"
    );
    drop(first);
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
