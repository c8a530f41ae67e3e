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
