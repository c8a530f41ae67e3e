//! `[limits]` over real sockets: connections per client, the request rate, open blocking
//! queries and watches per client, and the request-head deadline; each refusal counted in
//! `/metrics`.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use signpost_core::model::Dur;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{eventually, TestAgent};

/// A second loopback address: another client as far as the agent can tell.
const OTHER: [u8; 4] = [127, 0, 0, 2];

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    signpost_tls::install_default_provider();
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

/// `signpost_limits_refused_total{reason}` as `/metrics` shows it (asked from [`OTHER`]).
async fn refused(t: &TestAgent, reason: &str) -> u64 {
    let text = client_from(OTHER)
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("signpost_limits_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

/// Whether the agent closes `conn` (EOF or reset) within 5 s instead of answering.
async fn closed_by_agent(conn: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

async fn get_over(conn: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn the_201st_connection_from_one_client_is_closed_at_accept() {
    // The held connections send nothing: a long head deadline keeps them open meanwhile.
    let t = TestAgent::start_with(|c| c.limits.http_header_timeout = Dur(120_000)).await;
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(TcpStream::connect(t.addr).await.unwrap());
    }
    // The 200 are accepted (in order) before the 201st; it is closed without an answer.
    let mut extra = TcpStream::connect(t.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /api/v1/agent/self HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    assert!(closed_by_agent(&mut extra).await, "the 201st is refused");
    assert!(refused(&t, "conns_per_client").await >= 1);

    // Another client address is not affected.
    let resp = client_from(OTHER)
        .get(t.url("/api/v1/agent/self"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // One of the 200 serves normally, and once one closes a new connection is admitted.
    let answer = get_over(&mut held[0], "/api/v1/agent/self").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    held.truncate(150);
    eventually("a new connection is admitted again", || async {
        let mut conn = TcpStream::connect(t.addr).await.unwrap();
        let conn = &mut conn;
        let request = b"GET /api/v1/agent/self HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        if conn.write_all(request).await.is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
        buf.starts_with(b"HTTP/1.1 200")
    })
    .await;
    drop(held);
}

#[tokio::test]
async fn a_client_over_the_request_rate_gets_429_with_retry_after() {
    let t = TestAgent::start_with(|c| {
        // One token every 5 s: the three requests below come well within that.
        c.limits.http_request_rate = 0.2;
        c.limits.http_request_burst = Some(2.0);
    })
    .await;
    let client = client_from([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..3 {
        let resp = client.get(t.url("/api/v1/services")).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let body: Value = resp.json().await.unwrap();
            refusal = Some((retry, body));
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    let (retry, body) = refusal.unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many requests"),
        "{body}"
    );
    // Another address has its own bucket (the metrics request below is from it too).
    assert_eq!(
        client_from(OTHER)
            .get(t.url("/api/v1/services"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(refused(&t, "request_rate").await, 1);
    // The bucket refills: after Retry-After the client is served again.
    eventually("the client is served again", || async {
        client
            .get(t.url("/api/v1/services"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}

#[tokio::test]
async fn open_blocking_queries_and_watches_are_capped_per_client() {
    let t = TestAgent::start_with(|c| c.limits.max_blocking_per_client = 2).await;
    let client = client_from([127, 0, 0, 1]);
    let watch = || client.get(t.url("/api/v1/services/web/watch")).send();
    let first = watch().await.unwrap();
    assert_eq!(first.status(), 200);
    // A Consul blocking query holds the second slot until it times out.
    let blocking = tokio::spawn({
        let client = client.clone();
        let url = t.url("/v1/kv/some/key?index=100000&wait=5s");
        async move { client.get(url).send().await.unwrap().status() }
    });
    let third = loop {
        // Until the blocking query holds its slot, the watch below may still get it.
        let resp = watch().await.unwrap();
        if resp.status() == 429 {
            break resp;
        }
        drop(resp);
        tokio::task::yield_now().await;
    };
    let body: Value = third.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("blocking queries"),
        "{body}"
    );
    let kv = client
        .get(t.url("/v1/kv/other?index=100000&wait=5s"))
        .send()
        .await
        .unwrap();
    assert_eq!(kv.status(), 429, "blocking queries count too");
    // Plain reads are not capped, nor other clients.
    assert_eq!(
        client
            .get(t.url("/api/v1/services"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client_from(OTHER)
            .get(t.url("/api/v1/services/web/watch"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(refused(&t, "blocking_per_client").await >= 2);
    // Closing a watch frees its slot.
    drop(first);
    eventually("a watch can be opened again", || async {
        watch().await.unwrap().status() == 200
    })
    .await;
    blocking.abort();
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_request_head_is_cut_off() {
    let t = TestAgent::start_with(|c| c.limits.http_header_timeout = Dur(1_000)).await;
    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(t.addr).await.unwrap();
    slow.write_all(b"GET /api/v1/services HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(t.addr).await.unwrap();
    assert!(
        closed_by_agent(&mut slow).await,
        "a partial head is cut off"
    );
    assert!(
        closed_by_agent(&mut silent).await,
        "a silent client is cut off"
    );
    assert_eq!(refused(&t, "header_timeout").await, 2);
    // A client that sends its head in time is served.
    let socket = TcpSocket::new_v4().unwrap();
    let mut prompt = socket.connect(t.addr).await.unwrap();
    let answer = get_over(&mut prompt, "/api/v1/services").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
