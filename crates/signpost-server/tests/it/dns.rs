//! The DNS interface, queried over real UDP and TCP sockets with hickory's client.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{DnsResponse, ResponseCode};
use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use serde_json::json;
use signpost_server::dns::{self, DnsConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::TestAgent;

/// A DNS server over a test agent's store, on 127.0.0.1 ports picked by the OS.
pub(crate) struct DnsServer {
    udp: SocketAddr,
    tcp: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), dns::DnsError>>,
}

impl DnsServer {
    pub(crate) async fn start(t: &TestAgent, tweak: impl FnOnce(&mut DnsConfig)) -> DnsServer {
        let mut config = DnsConfig {
            node_name: "agent-one".into(),
            node_addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
            ..DnsConfig::default()
        };
        tweak(&mut config);
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dns::serve(t.agent.clone(), config, udp, tcp, async {
            let _ = stopped.await;
        }));
        DnsServer {
            udp: udp_addr,
            tcp: tcp_addr,
            stop: Some(stop),
            task,
        }
    }

    /// A query over UDP, with EDNS (hickory advertises 1232 bytes) or without (512 bytes).
    async fn udp_with(&self, name: &str, qtype: RecordType, edns: bool) -> DnsResponse {
        let stream = UdpClientStream::builder(self.udp, TokioRuntimeProvider::default()).build();
        let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        if !edns {
            client.disable_edns();
        }
        client
            .query(Name::from_ascii(name).unwrap(), DNSClass::IN, qtype)
            .await
            .unwrap()
    }

    pub(crate) async fn udp(&self, name: &str, qtype: RecordType) -> DnsResponse {
        self.udp_with(name, qtype, false).await
    }

    async fn tcp(&self, name: &str, qtype: RecordType) -> DnsResponse {
        let (connect, sender) =
            TcpClientStream::new(self.tcp, None, None, TokioRuntimeProvider::new());
        let (mut client, bg) = Client::<TokioRuntimeProvider>::new(connect.await.unwrap(), sender);
        tokio::spawn(bg);
        client
            .query(Name::from_ascii(name).unwrap(), DNSClass::IN, qtype)
            .await
            .unwrap()
    }

    /// Stops the server and checks it returns cleanly.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the DNS server stops promptly")
            .unwrap()
            .unwrap();
    }
}

pub(crate) fn ips(records: &[Record]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = records.iter().filter_map(|r| r.data.ip_addr()).collect();
    ips.sort();
    ips
}

pub(crate) fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

async fn register(t: &TestAgent, service: &str, body: serde_json::Value) {
    let (code, resp) = t.register(service, body).await;
    assert!(code == 200 || code == 201, "{code} {resp}");
}

/// web: two passing IPv4 instances (one tagged v1), a critical one, an IPv6 one and a host name.
async fn web_fixture(t: &TestAgent) {
    register(
        t,
        "web",
        json!({"id": "a", "address": "10.0.0.1", "port": 8001}),
    )
    .await;
    register(
        t,
        "web",
        json!({"id": "b", "address": "10.0.0.2", "port": 8002, "tags": ["v1"], "weight": 7}),
    )
    .await;
    register(
        t,
        "web",
        json!({"id": "c", "address": "10.0.0.3", "port": 8003, "tags": ["v1"], "status": "critical"}),
    )
    .await;
    register(
        t,
        "web",
        json!({"id": "d", "address": "2001:db8::4", "port": 8004}),
    )
    .await;
    register(
        t,
        "web",
        json!({"id": "e", "address": "web-e.internal", "port": 8005}),
    )
    .await;
}

#[tokio::test]
async fn a_records_list_passing_instances_only() {
    let t = TestAgent::start().await;
    web_fixture(&t).await;
    let d = DnsServer::start(&t, |_| {}).await;

    let r = d.udp("web.service.consul.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert!(!r.metadata.truncation);
    assert_eq!(ips(&r.answers), vec![v4(1), v4(2)], "{:?}", r.answers);
    assert!(r.answers.iter().all(|a| a.ttl == 0), "default TTL is 0");

    let r = d.tcp("web.service.consul.", RecordType::AAAA).await;
    assert_eq!(
        ips(&r.answers),
        vec!["2001:db8::4".parse::<Ipv6Addr>().unwrap()]
    );
    d.shutdown().await;
}

#[tokio::test]
async fn tags_filter_in_both_name_forms() {
    let t = TestAgent::start().await;
    web_fixture(&t).await;
    let d = DnsServer::start(&t, |_| {}).await;

    let r = d.udp("v1.web.service.consul.", RecordType::A).await;
    assert_eq!(ips(&r.answers), vec![v4(2)]);
    let r = d.udp("_web._v1.service.consul.", RecordType::A).await;
    assert_eq!(ips(&r.answers), vec![v4(2)]);
    // A tag no passing instance carries: the name does not exist.
    let r = d.udp("v2.web.service.consul.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    d.shutdown().await;
}

#[tokio::test]
async fn srv_answers_carry_targets_that_resolve() {
    let t = TestAgent::start().await;
    web_fixture(&t).await;
    let d = DnsServer::start(&t, |_| {}).await;

    for name in ["web.service.consul.", "_web._tcp.service.consul."] {
        let r = d.udp(name, RecordType::SRV).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        let mut seen = Vec::new();
        for answer in &r.answers {
            let RData::SRV(srv) = &answer.data else {
                panic!("{name}: not an SRV: {answer:?}")
            };
            seen.push((srv.port, srv.weight, srv.target.to_ascii()));
            assert_eq!(srv.priority, 1);
            if srv.port != 8005 {
                let glue: Vec<&Record> = r
                    .additionals
                    .iter()
                    .filter(|a| a.name == srv.target)
                    .collect();
                assert_eq!(glue.len(), 1, "{name}: one address for {}", srv.target);
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (8001, 100, "0a000001.addr.consul.".to_string()),
                (8002, 7, "0a000002.addr.consul.".to_string()),
                (
                    8004,
                    100,
                    "20010db8000000000000000000000004.addr.consul.".to_string()
                ),
                (8005, 100, "web-e.internal.".to_string()),
            ],
            "{name}"
        );
        let mut glue = ips(&r.additionals);
        glue.sort();
        assert_eq!(
            glue,
            vec![v4(1), v4(2), "2001:db8::4".parse::<IpAddr>().unwrap()]
        );
    }

    // The tagged RFC 2782 form filters.
    let r = d.udp("_web._v1.service.consul.", RecordType::SRV).await;
    assert_eq!(r.answers.len(), 1);

    // Targets resolve on their own too.
    let r = d.udp("0a000002.addr.consul.", RecordType::A).await;
    assert_eq!(ips(&r.answers), vec![v4(2)]);
    let r = d
        .udp(
            "20010db8000000000000000000000004.addr.consul.",
            RecordType::AAAA,
        )
        .await;
    assert_eq!(ips(&r.answers).len(), 1);
    d.shutdown().await;
}

#[tokio::test]
async fn unknown_names_are_nxdomain_with_the_soa() {
    let t = TestAgent::start().await;
    web_fixture(&t).await;
    let d = DnsServer::start(&t, |_| {}).await;

    for name in [
        "nope.service.consul.",
        "other-node.node.consul.",
        "what.ever.consul.",
    ] {
        let r = d.udp(name, RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(r.answers.is_empty());
        let soa = r.soa().expect("an SOA in the authority section");
        assert_eq!(soa.name().to_ascii(), "consul.");
        assert_eq!(soa.data().mname.to_ascii(), "ns.consul.");
        assert_eq!(soa.data().rname.to_ascii(), "hostmaster.consul.");
        assert!(soa.data().serial > 0, "serial is the registry index");
    }

    // A service whose only instance is critical does not exist either, as in Consul.
    register(
        &t,
        "down",
        json!({"address": "10.0.0.9", "port": 1, "status": "critical"}),
    )
    .await;
    let r = d.udp("down.service.consul.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    d.shutdown().await;
}

#[tokio::test]
async fn names_outside_the_domain_are_refused() {
    let t = TestAgent::start().await;
    let d = DnsServer::start(&t, |_| {}).await;
    let r = d.udp("example.com.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let r = d.tcp("web.service.notconsul.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    d.shutdown().await;
}

#[tokio::test]
async fn the_node_resolves_to_the_agent() {
    let t = TestAgent::start().await;
    let d = DnsServer::start(&t, |_| {}).await;
    let r = d.udp("agent-one.node.consul.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        ips(&r.answers),
        vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))]
    );
    d.shutdown().await;
}

#[tokio::test]
async fn big_udp_answers_set_tc_and_tcp_returns_everything() {
    let t = TestAgent::start().await;
    for n in 0..60u16 {
        register(
            &t,
            "big",
            json!({"id": format!("i{n}"), "address": format!("10.1.0.{n}"), "port": 9000 + n}),
        )
        .await;
    }
    let d = DnsServer::start(&t, |_| {}).await;

    for qtype in [RecordType::A, RecordType::SRV] {
        let udp = d.udp("big.service.consul.", qtype).await;
        assert!(udp.metadata.truncation, "{qtype}: TC over UDP");
        assert!(udp.as_buffer().len() <= 512, "{qtype}: fits 512 bytes");
        assert!(!udp.answers.is_empty() && udp.answers.len() < 60, "{qtype}");
        if qtype == RecordType::SRV {
            // Each SRV record kept keeps its address.
            assert_eq!(udp.additionals.len(), udp.answers.len());
        }

        let tcp = d.tcp("big.service.consul.", qtype).await;
        assert!(!tcp.metadata.truncation, "{qtype}");
        assert_eq!(tcp.answers.len(), 60, "{qtype}: TCP gets everything");
    }

    // With EDNS the client's larger buffer is used: 60 A records fit in 1232 bytes.
    let edns = d.udp_with("big.service.consul.", RecordType::A, true).await;
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 60);
    assert!(edns.edns.is_some(), "EDNS answered with EDNS");
    let edns = d
        .udp_with("big.service.consul.", RecordType::SRV, true)
        .await;
    assert!(edns.metadata.truncation);
    assert!(edns.as_buffer().len() <= 1232);
    assert!(edns.answers.len() > 10, "{}", edns.answers.len());
    d.shutdown().await;
}

#[tokio::test]
async fn udp_answer_limit_cuts_and_sets_tc() {
    let t = TestAgent::start().await;
    for n in 1..=5u8 {
        register(
            &t,
            "five",
            json!({"address": format!("10.2.0.{n}"), "port": 80}),
        )
        .await;
    }
    let d = DnsServer::start(&t, |c| c.udp_answer_limit = 3).await;
    let udp = d.udp("five.service.consul.", RecordType::A).await;
    assert_eq!(udp.answers.len(), 3);
    assert!(udp.metadata.truncation);
    let tcp = d.tcp("five.service.consul.", RecordType::A).await;
    assert_eq!(tcp.answers.len(), 5);
    d.shutdown().await;
}

#[tokio::test]
async fn answers_are_shuffled() {
    let t = TestAgent::start().await;
    for n in 1..=6u8 {
        register(
            &t,
            "many",
            json!({"address": format!("10.3.0.{n}"), "port": 80}),
        )
        .await;
    }
    let d = DnsServer::start(&t, |_| {}).await;
    let mut orders = HashSet::new();
    // 6! = 720 orders: twenty identical ones in a row would mean no shuffling.
    for _ in 0..20 {
        let r = d.udp("many.service.consul.", RecordType::A).await;
        let order: Vec<IpAddr> = r.answers.iter().filter_map(|a| a.data.ip_addr()).collect();
        assert_eq!(order.len(), 6);
        orders.insert(order);
    }
    assert!(orders.len() > 1, "always the same order");
    d.shutdown().await;
}

#[tokio::test]
async fn names_are_case_insensitive() {
    let t = TestAgent::start().await;
    web_fixture(&t).await;
    let d = DnsServer::start(&t, |c| c.domain = "Signpost.Test".into()).await;
    let r = d.udp("WeB.SeRvIcE.sIgNpOsT.tEsT.", RecordType::A).await;
    assert_eq!(ips(&r.answers), vec![v4(1), v4(2)]);
    let r = d.udp("V1.Web.Service.SIGNPOST.TEST.", RecordType::A).await;
    assert_eq!(ips(&r.answers), vec![v4(2)]);
    let r = d.udp("AGENT-ONE.NODE.signpost.test.", RecordType::A).await;
    assert_eq!(r.answers.len(), 1);
    d.shutdown().await;
}

#[tokio::test]
async fn the_configured_ttl_is_on_every_record() {
    let t = TestAgent::start().await;
    web_fixture(&t).await;
    let d = DnsServer::start(&t, |c| c.ttl = 30).await;
    let r = d.udp("web.service.consul.", RecordType::SRV).await;
    assert!(!r.answers.is_empty());
    assert!(r
        .answers
        .iter()
        .chain(&r.additionals)
        .all(|rec| rec.ttl == 30));
    let r = d.udp("nope.service.consul.", RecordType::A).await;
    let soa = r.soa().unwrap();
    assert_eq!((soa.ttl(), soa.data().minimum), (30, 30));
    d.shutdown().await;
}
