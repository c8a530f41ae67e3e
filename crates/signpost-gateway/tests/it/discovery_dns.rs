//! `[registry] kind = "dns"`: the gateway fronts a service it finds through DNS (Signpost's
//! own DNS interface over an in-process agent, record TTL 0), following instances as they come
//! and go.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::json;
use signpost_gateway::GatewayConfig;
use signpost_server::dns::{self, DnsConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;

use crate::common::{eventually, AgentExt, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn the_gateway_fronts_a_service_found_through_dns() {
    let agent = TestAgent::start().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns_addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop_dns, dns_stopped) = oneshot::channel::<()>();
    let config = DnsConfig {
        ttl: 0,
        node_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..DnsConfig::default()
    };
    let dns_task = tokio::spawn(dns::serve(agent.agent.clone(), config, udp, tcp, async {
        let _ = dns_stopped.await;
    }));

    let one = Backend::echo("one").await;
    agent
        .add_instance("web", "one", one.port(), json!({}))
        .await;
    let config = GatewayConfig::from_toml(&format!(
        r#"
        [registry]
        kind = "dns"
        resolver = "{dns_addr}"
        [registry.dns]
        name = "{{service}}.service.consul"
        ttl_floor = "100ms"
        ttl_ceiling = "1s"
        [[route]]
        prefix = "/web"
        service = "web"
        "#
    ))
    .unwrap();
    let gw = TestGateway::start_with(config).await;
    gw.wait_upstreams("/web", 1).await;
    let (status, body) = gw.get("/web/hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "one");

    // A second instance appears in DNS, then the first leaves: the gateway follows.
    let two = Backend::echo("two").await;
    agent
        .add_instance("web", "two", two.port(), json!({}))
        .await;
    gw.wait_upstreams("/web", 2).await;
    assert_eq!(agent.deregister("web", "one").await, 204);
    gw.wait_upstreams("/web", 1).await;
    for _ in 0..4 {
        assert_eq!(gw.get("/web/x").await.1["backend"], "two");
    }

    // The last one leaves: nothing to route to.
    assert_eq!(agent.deregister("web", "two").await, 204);
    eventually("the route has no upstream", || async {
        gw.get("/web/x").await.0 == 503
    })
    .await;

    gw.shutdown().await;
    let _ = stop_dns.send(());
    tokio::time::timeout(Duration::from_secs(5), dns_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    agent.shutdown().await;
}
