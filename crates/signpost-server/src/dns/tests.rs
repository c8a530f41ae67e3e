use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{Name, RData, RecordType};
use signpost_core::model::NewInstance;
use signpost_core::{Command, Registry, Request, Status};

use super::answer::{decode_addr, encode_addr, parse, Answer, Lookup, Zone};
use super::{DnsConfig, DnsConfigError};

fn labels(name: &str) -> Vec<&[u8]> {
    if name.is_empty() {
        return Vec::new();
    }
    name.split('.').map(str::as_bytes).collect()
}

fn zone() -> Zone {
    Zone::new(&DnsConfig {
        ttl: 7,
        node_name: "Node-1".into(),
        node_addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ..DnsConfig::default()
    })
    .unwrap()
}

fn registry(instances: &[(&str, &str, &[&str], Status)]) -> Registry {
    let mut registry = Registry::new();
    for (n, (id, address, tags, status)) in instances.iter().enumerate() {
        let new = NewInstance {
            id: (*id).into(),
            service: "web".into(),
            address: (*address).into(),
            port: 8080,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            metadata: Default::default(),
            weight: 100,
            check: None,
            status: Some(*status),
            state: Default::default(),
        };
        registry.apply(n as u64 + 1, &Request::new(0, Command::Register(new)));
    }
    registry
}

fn ask(zone: &Zone, registry: &Registry, name: &str, qtype: RecordType) -> Answer {
    zone.resolve(registry, &Name::from_ascii(name).unwrap(), qtype)
}

fn addresses(answer: &Answer) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = answer
        .records
        .iter()
        .filter_map(|a| a.record.data.ip_addr())
        .collect();
    ips.sort();
    ips
}

#[test]
fn names_below_the_zone_parse_into_lookups() {
    assert_eq!(parse(&labels("")), Lookup::Apex);
    assert_eq!(parse(&labels("ns")), Lookup::Nameserver);
    assert_eq!(parse(&labels("n1.node")), Lookup::Node(b"n1"));
    assert_eq!(
        parse(&labels("0a000001.addr")),
        Lookup::Addr(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
    );
    assert_eq!(
        parse(&labels("web.service")),
        Lookup::Service {
            service: b"web",
            tag: None
        }
    );
    assert_eq!(
        parse(&labels("v1.web.service")),
        Lookup::Service {
            service: b"web",
            tag: Some(b"v1")
        }
    );
    assert_eq!(
        parse(&labels("_web._tcp.service")),
        Lookup::Service {
            service: b"web",
            tag: None
        }
    );
    assert_eq!(
        parse(&labels("_web._v1.service")),
        Lookup::Service {
            service: b"web",
            tag: Some(b"v1")
        }
    );
    for unknown in [
        "a.b.web.service",
        "service",
        "web",
        "x.node.extra",
        "zz.addr",
        "a.b.c",
    ] {
        assert_eq!(parse(&labels(unknown)), Lookup::Unknown, "{unknown}");
    }
}

#[test]
fn addr_labels_round_trip_both_families() {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let v6 = IpAddr::V6(Ipv6Addr::from_str("2001:db8::1").unwrap());
    assert_eq!(encode_addr(v4), "0a010203");
    assert_eq!(encode_addr(v6), "20010db8000000000000000000000001");
    for ip in [v4, v6] {
        assert_eq!(decode_addr(encode_addr(ip).as_bytes()), Some(ip));
    }
    assert_eq!(decode_addr(b"+a010203"), None);
    assert_eq!(decode_addr(b"0a0102"), None);
    assert_eq!(decode_addr(b"0a01020g"), None);
}

#[test]
fn config_errors_name_the_mistake() {
    let bad_domain = DnsConfig {
        domain: ".".into(),
        ..DnsConfig::default()
    };
    assert!(matches!(
        bad_domain.validate(),
        Err(DnsConfigError::Domain { .. })
    ));
    let too_long = DnsConfig {
        domain: format!(
            "{}.{}.{}.{}.",
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(40)
        ),
        ..DnsConfig::default()
    };
    assert!(matches!(
        too_long.validate(),
        Err(DnsConfigError::Domain { .. })
    ));
    let bad_node = DnsConfig {
        node_name: "a.b".into(),
        ..DnsConfig::default()
    };
    assert_eq!(
        bad_node.validate(),
        Err(DnsConfigError::NodeName("a.b".into()))
    );
    let relative = DnsConfig {
        domain: "Signpost.Example".into(),
        ..DnsConfig::default()
    };
    assert_eq!(relative.validate(), Ok(()));
}

#[test]
fn service_answers_only_passing_instances_matching_the_tag() {
    let reg = registry(&[
        ("a", "10.0.0.1", &["v1"], Status::Passing),
        ("b", "10.0.0.2", &["V2"], Status::Passing),
        ("c", "10.0.0.3", &["v1"], Status::Critical),
        ("d", "10.0.0.4", &[], Status::Warning),
        ("e", "2001:db8::5", &[], Status::Passing),
        ("f", "db.internal", &[], Status::Passing),
    ]);
    let z = zone();
    let all = ask(&z, &reg, "WEB.service.consul.", RecordType::A);
    assert_eq!(all.code, ResponseCode::NoError);
    assert!(all.authoritative);
    assert_eq!(
        addresses(&all),
        vec![
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))
        ]
    );
    assert!(all.records.iter().all(|a| a.record.ttl == 7));
    assert_eq!(
        all.records[0].record.name.to_string(),
        "WEB.service.consul.",
        "answers keep the question's spelling"
    );

    let v2 = ask(&z, &reg, "v2.web.service.consul.", RecordType::A);
    assert_eq!(addresses(&v2), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))]);

    let aaaa = ask(&z, &reg, "web.service.consul.", RecordType::AAAA);
    assert_eq!(
        addresses(&aaaa),
        vec![IpAddr::V6(Ipv6Addr::from_str("2001:db8::5").unwrap())]
    );

    // A tag no passing instance carries: the name does not exist.
    let none = ask(&z, &reg, "v3.web.service.consul.", RecordType::A);
    assert_eq!(none.code, ResponseCode::NXDomain);
    assert!(none.soa.is_some());

    // Passing instances exist but have no TXT: NOERROR, no records, SOA.
    let txt = ask(&z, &reg, "web.service.consul.", RecordType::TXT);
    assert_eq!(txt.code, ResponseCode::NoError);
    assert!(txt.records.is_empty());
    assert!(txt.soa.is_some());
}

#[test]
fn srv_targets_resolve_and_carry_their_address() {
    let reg = registry(&[
        ("a", "10.0.0.1", &[], Status::Passing),
        ("b", "10.0.0.1", &[], Status::Passing),
        ("f", "db.internal", &[], Status::Passing),
    ]);
    let z = zone();
    let srv = ask(&z, &reg, "_web._tcp.service.consul.", RecordType::SRV);
    assert_eq!(srv.code, ResponseCode::NoError);
    let mut targets = Vec::new();
    for a in &srv.records {
        let RData::SRV(s) = &a.record.data else {
            panic!("not an SRV: {:?}", a.record)
        };
        assert_eq!((s.priority, s.weight, s.port), (1, 100, 8080));
        targets.push(s.target.to_string());
        match &a.glue {
            Some(glue) => assert_eq!(glue.name, s.target),
            None => assert_eq!(s.target.to_string(), "db.internal."),
        }
    }
    targets.sort();
    assert_eq!(
        targets,
        [
            "0a000001.addr.consul.",
            "0a000001.addr.consul.",
            "db.internal."
        ]
    );
    let target = ask(&z, &reg, "0A000001.addr.consul.", RecordType::A);
    assert_eq!(
        addresses(&target),
        vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]
    );
}

#[test]
fn node_apex_and_outside_names() {
    let reg = registry(&[]);
    let z = zone();
    let node = ask(&z, &reg, "node-1.node.consul.", RecordType::A);
    assert_eq!(
        addresses(&node),
        vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))]
    );
    let other = ask(&z, &reg, "node-2.node.consul.", RecordType::A);
    assert_eq!(other.code, ResponseCode::NXDomain);
    let v6 = ask(&z, &reg, "node-1.node.consul.", RecordType::AAAA);
    assert_eq!((v6.code, v6.records.len()), (ResponseCode::NoError, 0));

    let soa = ask(&z, &reg, "consul.", RecordType::SOA);
    assert_eq!(soa.records.len(), 1);
    let ns = ask(&z, &reg, "consul.", RecordType::NS);
    assert_eq!(ns.records.len(), 1);
    assert!(ns.records[0].glue.is_some());

    let outside = ask(&z, &reg, "example.com.", RecordType::A);
    assert_eq!(outside.code, ResponseCode::Refused);
    assert!(!outside.authoritative);
    let suffix_only = ask(&z, &reg, "web.service.notconsul.", RecordType::A);
    assert_eq!(suffix_only.code, ResponseCode::Refused);
}

#[test]
fn soa_serial_is_the_registry_index() {
    let reg = registry(&[("a", "10.0.0.1", &[], Status::Passing)]);
    let missing = ask(&zone(), &reg, "nope.service.consul.", RecordType::A);
    let Some(soa) = missing.soa else {
        panic!("no SOA")
    };
    let RData::SOA(soa) = soa.data else {
        panic!("not an SOA")
    };
    assert_eq!(soa.serial, 1);
    assert_eq!(soa.mname.to_string(), "ns.consul.");
    assert_eq!(soa.rname.to_string(), "hostmaster.consul.");
    assert_eq!(soa.minimum, 7);
}

#[test]
fn a_service_the_dns_token_cannot_read_does_not_exist() {
    let zone = zone();
    let registry = registry(&[("w1", "10.0.0.1", &[], Status::Passing)]);
    let name = Name::from_ascii("web.service.consul.").unwrap();
    let seen = zone.resolve_visible(&registry, &name, RecordType::A, &|_| true);
    assert_eq!(addresses(&seen), [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
    let hidden = zone.resolve_visible(&registry, &name, RecordType::A, &|s| s != "web");
    assert_eq!(hidden.code, ResponseCode::NXDomain);
    assert!(addresses(&hidden).is_empty());
}
