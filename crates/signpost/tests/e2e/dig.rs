//! The DNS interface answers `dig`, the tool operators reach for first.

use std::process::Command;

use serde_json::json;

use crate::harness::{free_port, Agent};

fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect(
            "dig is not installed: scripts/test.sh installs dnsutils (apt-get install dnsutils)",
        );
    assert!(
        out.status.success(),
        "dig {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn dig_gets_a_and_srv_answers_and_nxdomain() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    let dns_addr = format!("127.0.0.1:{dns_port}");
    let agent = Agent::start(dir.path(), ["--dev", "--dns-addr", &dns_addr]).await;
    for (id, ip, port) in [("web-1", "10.0.0.1", 8080), ("web-2", "10.0.0.2", 8081)] {
        let (code, body) = agent
            .register(
                "web",
                &json!({"id": id, "address": ip, "port": port, "tags": ["v1"]}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    agent
        .register(
            "web",
            &json!({"id": "web-3", "address": "10.0.0.3", "port": 8082, "status": "critical"}),
        )
        .await;

    let mut a: Vec<String> = dig(dns_port, &["web.service.consul", "A", "+short"])
        .lines()
        .map(str::to_string)
        .collect();
    a.sort();
    assert_eq!(a, ["10.0.0.1", "10.0.0.2"], "passing instances only");

    let srv = dig(dns_port, &["_web._v1.service.consul", "SRV"]);
    assert!(srv.contains("status: NOERROR"), "{srv}");
    assert!(srv.contains("1 100 8080 0a000001.addr.consul."), "{srv}");
    assert!(srv.contains("1 100 8081 0a000002.addr.consul."), "{srv}");
    assert!(srv.contains("ADDITIONAL SECTION"), "{srv}");
    assert!(
        srv.contains("0a000001.addr.consul.\t0\tIN\tA\t10.0.0.1"),
        "{srv}"
    );

    let tcp = dig(dns_port, &["v1.web.service.consul", "A", "+tcp", "+short"]);
    assert_eq!(tcp.lines().count(), 2, "{tcp}");

    let missing = dig(dns_port, &["nope.service.consul", "A"]);
    assert!(missing.contains("status: NXDOMAIN"), "{missing}");
    assert!(
        missing.contains("SOA\tns.consul. hostmaster.consul."),
        "{missing}"
    );

    let node = dig(dns_port, &["signpost-1.node.consul", "A", "+short"]);
    assert_eq!(node.trim(), "127.0.0.1");
}
