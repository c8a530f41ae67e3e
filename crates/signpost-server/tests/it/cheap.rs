//! Cheap requests stay cheap: invented HTTP methods do not make metric series.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestAgent;

#[tokio::test]
async fn invented_methods_share_one_metrics_label() {
    let t = TestAgent::start().await;
    for method in ["FOO", "BAR", "X-INVENTED"] {
        let mut conn = TcpStream::connect(t.addr).await.unwrap();
        let request =
            format!("{method} /api/v1/services HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 405"));
    }
    let metrics = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("signpost_http_requests_total{"))
        .collect();
    assert!(
        requests
            .iter()
            .any(|l| l.contains("method=\"other\"") && l.ends_with(" 3")),
        "{requests:?}"
    );
    for invented in ["FOO", "BAR", "X-INVENTED"] {
        assert!(!metrics.contains(invented), "{invented} is not a label");
    }
}

/// Asks `name` (type A) over UDP.
async fn ask(dns: std::net::SocketAddr, name: &str) -> hickory_net::proto::op::DnsResponse {
    use hickory_net::client::{Client, ClientHandle};
    use hickory_net::proto::rr::{DNSClass, Name, RecordType};
    use hickory_net::runtime::TokioRuntimeProvider;
    use hickory_net::udp::UdpClientStream;
    let stream = UdpClientStream::builder(dns, TokioRuntimeProvider::default()).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, RecordType::A)
        .await
        .unwrap()
}

/// `signpost_dns_answers_built_total` as `/metrics` shows it.
async fn answers_built(t: &TestAgent) -> u64 {
    let text = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("signpost_dns_answers_built_total "))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_repeated_dns_question_is_answered_from_the_cache_until_something_changes() {
    let t = TestAgent::start().await;
    assert_eq!(t.register("web", crate::common::instance(80)).await.0, 201);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dns = udp.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = signpost_server::dns::DnsConfig::default();
    let server = tokio::spawn(signpost_server::dns::serve(
        t.agent.clone(),
        config,
        udp,
        tcp,
        async {
            let _ = stopped.await;
        },
    ));
    let name = "web.service.consul.";
    assert_eq!(ask(dns, name).await.answers.len(), 1);
    let built = answers_built(&t).await;
    assert!(built >= 1);
    for _ in 0..5 {
        assert_eq!(ask(dns, name).await.answers.len(), 1);
    }
    assert_eq!(answers_built(&t).await, built, "answered from the cache");
    // A change: the next answer is built anew and shows it.
    let mut second = crate::common::instance(81);
    second["address"] = serde_json::json!("10.0.0.2");
    assert_eq!(t.register("web", second).await.0, 201);
    assert_eq!(ask(dns, name).await.answers.len(), 2);
    assert_eq!(answers_built(&t).await, built + 1);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
