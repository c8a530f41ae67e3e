//! What to answer: a query name and type, read against the registry, become records.
//!
//! Nothing here does IO or draws random numbers, so every rule is unit-tested in `tests.rs`;
//! the server ([`super`]) shuffles the records and fits them into the transport.

use std::net::IpAddr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use signpost_core::{Instance, Registry};

use super::{DnsConfig, DnsConfigError};

/// SOA timers (seconds). Nobody transfers this zone, so they only need to be sane.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;

/// The zone Signpost is authoritative for, prepared once from a [`DnsConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// The domain, lower-cased and fully qualified (`consul.`).
    origin: Name,
    /// Number of labels in `origin`, to split a query name into the part below it.
    origin_labels: usize,
    /// `addr.<domain>`: SRV targets for instances registered by IP live under it.
    addr_origin: Name,
    /// `ns.<domain>`, the SOA's primary server and the apex NS record.
    nameserver: Name,
    /// `hostmaster.<domain>`, the SOA's mailbox.
    hostmaster: Name,
    /// TTL of every record, also the SOA minimum (negative-caching TTL).
    ttl: u32,
    /// This agent's node name, lower-cased, answered at `<node>.node.<domain>`.
    node_name: String,
    /// The address answered for the node and for `ns.<domain>`.
    node_addr: IpAddr,
}

/// One answer record and the additional record that goes with it (an SRV target's address).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answered {
    pub record: Record,
    pub glue: Option<Record>,
}

/// The response to one question, before it is fitted into a transport.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub code: ResponseCode,
    /// Set for every name inside the zone.
    pub authoritative: bool,
    pub records: Vec<Answered>,
    /// The zone's SOA, sent in the authority section of negative answers.
    pub soa: Option<Record>,
}

impl Answer {
    fn refused() -> Answer {
        Answer {
            code: ResponseCode::Refused,
            authoritative: false,
            records: Vec::new(),
            soa: None,
        }
    }
}

/// What a name below the zone asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// The domain itself (SOA, NS).
    Apex,
    /// `ns.<domain>`.
    Nameserver,
    /// `<node>.node.<domain>`.
    Node(&'a [u8]),
    /// `<hex>.addr.<domain>`: an address spelled in hex, as Consul writes SRV targets.
    Addr(IpAddr),
    /// `<service>.service`, `<tag>.<service>.service` or `_<service>._<tag|tcp>.service`.
    Service {
        service: &'a [u8],
        tag: Option<&'a [u8]>,
    },
    /// Anything else: NXDOMAIN.
    Unknown,
}

/// Classifies the labels of a name below the zone (lower-cased, leftmost first).
pub(crate) fn parse<'a>(labels: &[&'a [u8]]) -> Lookup<'a> {
    match *labels {
        [] => Lookup::Apex,
        [ns] if ns == b"ns" => Lookup::Nameserver,
        [node, kind] if kind == b"node" => Lookup::Node(node),
        [hex, kind] if kind == b"addr" => decode_addr(hex).map_or(Lookup::Unknown, Lookup::Addr),
        [service, kind] if kind == b"service" => Lookup::Service { service, tag: None },
        // RFC 2782: `_<service>._<protocol>`, where the protocol is a tag and `_tcp` means any.
        [service, tag, kind]
            if kind == b"service" && service.starts_with(b"_") && tag.starts_with(b"_") =>
        {
            let tag = &tag[1..];
            Lookup::Service {
                service: &service[1..],
                tag: (tag != b"tcp").then_some(tag),
            }
        }
        [tag, service, kind] if kind == b"service" => Lookup::Service {
            service,
            tag: Some(tag),
        },
        _ => Lookup::Unknown,
    }
}

/// The `addr` label of an address: 8 hex digits for IPv4, 32 for IPv6 (Consul's form).
pub(crate) fn encode_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

/// The inverse of [`encode_addr`].
pub(crate) fn decode_addr(label: &[u8]) -> Option<IpAddr> {
    if !label.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(label).ok()?;
    match label.len() {
        8 => u32::from_str_radix(text, 16)
            .ok()
            .map(|n| IpAddr::V4(n.into())),
        32 => u128::from_str_radix(text, 16)
            .ok()
            .map(|n| IpAddr::V6(n.into())),
        _ => None,
    }
}

/// The address record for `ip` if `qtype` asks for its family.
fn address_record(owner: &Name, ip: IpAddr, qtype: RecordType, ttl: u32) -> Option<Record> {
    let rdata = match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
        _ => return None,
    };
    Some(Record::from_rdata(owner.clone(), ttl, rdata))
}

fn ip_record(owner: Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner, ttl, rdata)
}

impl Zone {
    pub(crate) fn new(config: &DnsConfig) -> Result<Zone, DnsConfigError> {
        let bad_domain = |reason: String| DnsConfigError::Domain {
            domain: config.domain.clone(),
            reason,
        };
        let mut origin = Name::from_ascii(config.domain.trim())
            .map_err(|e| bad_domain(e.to_string()))?
            .to_lowercase();
        origin.set_fqdn(true);
        if origin.is_root() {
            return Err(bad_domain("Signpost does not serve the root zone".into()));
        }
        let below = |label: &str| {
            origin
                .prepend_label(label)
                .map_err(|_| bad_domain("too long to hold the names served under it".into()))
        };
        let addr_origin = below("addr")?;
        // The longest name served: an IPv6 SRV target.
        addr_origin
            .prepend_label("0".repeat(32))
            .map_err(|_| bad_domain("too long to hold the names served under it".into()))?;
        let node_ok = !config.node_name.is_empty()
            && config.node_name.len() <= 63
            && config
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !node_ok {
            return Err(DnsConfigError::NodeName(config.node_name.clone()));
        }
        Ok(Zone {
            origin_labels: origin.iter().count(),
            nameserver: below("ns")?,
            hostmaster: below("hostmaster")?,
            addr_origin,
            origin,
            ttl: config.ttl,
            node_name: config.node_name.to_ascii_lowercase(),
            node_addr: config.node_addr,
        })
    }

    /// The zone's SOA record; its serial is the registry's last index.
    fn soa(&self, registry: &Registry) -> Record {
        // Serial numbers wrap (RFC 1982): keeping the low 32 bits keeps them growing.
        let serial = (registry.last_index() & u64::from(u32::MAX)) as u32;
        let soa = SOA::new(
            self.nameserver.clone(),
            self.hostmaster.clone(),
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.ttl,
        );
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }

    fn found(&self, records: Vec<Answered>) -> Answer {
        Answer {
            code: ResponseCode::NoError,
            authoritative: true,
            records,
            soa: None,
        }
    }

    /// NOERROR without records (the name exists, not with this type), or NXDOMAIN; both carry
    /// the SOA so resolvers can cache the absence.
    fn negative(&self, code: ResponseCode, registry: &Registry) -> Answer {
        Answer {
            code,
            authoritative: true,
            records: Vec::new(),
            soa: Some(self.soa(registry)),
        }
    }

    /// Answers `qtype` for `qname` (any case; the answers' owner keeps the query's spelling).
    #[cfg(test)]
    pub(crate) fn resolve(&self, registry: &Registry, qname: &Name, qtype: RecordType) -> Answer {
        self.resolve_visible(registry, qname, qtype, &|_| true)
    }

    /// [`Zone::resolve`], where a service `visible` refuses to show (the DNS token cannot read
    /// it) does not exist.
    pub(crate) fn resolve_visible(
        &self,
        registry: &Registry,
        qname: &Name,
        qtype: RecordType,
        visible: &dyn Fn(&str) -> bool,
    ) -> Answer {
        let lower = qname.to_lowercase();
        if !self.origin.zone_of(&lower) {
            return Answer::refused();
        }
        let labels: Vec<&[u8]> = lower.iter().collect();
        let below = &labels[..labels.len().saturating_sub(self.origin_labels)];
        match parse(below) {
            Lookup::Apex => self.apex(registry, qname, qtype),
            Lookup::Nameserver => self.host(registry, qname, qtype, self.node_addr),
            Lookup::Node(node) if node == self.node_name.as_bytes() => {
                self.host(registry, qname, qtype, self.node_addr)
            }
            Lookup::Addr(ip) => self.host(registry, qname, qtype, ip),
            Lookup::Service { service, tag } => {
                self.service(registry, qname, qtype, service, tag, visible)
            }
            Lookup::Node(_) | Lookup::Unknown => self.negative(ResponseCode::NXDomain, registry),
        }
    }

    fn apex(&self, registry: &Registry, qname: &Name, qtype: RecordType) -> Answer {
        let mut records = Vec::new();
        if matches!(qtype, RecordType::SOA | RecordType::ANY) {
            let mut soa = self.soa(registry);
            soa.name = qname.clone();
            records.push(Answered {
                record: soa,
                glue: None,
            });
        }
        if matches!(qtype, RecordType::NS | RecordType::ANY) {
            let ns = RData::NS(NS(self.nameserver.clone()));
            records.push(Answered {
                record: Record::from_rdata(qname.clone(), self.ttl, ns),
                glue: Some(ip_record(self.nameserver.clone(), self.node_addr, self.ttl)),
            });
        }
        if records.is_empty() {
            return self.negative(ResponseCode::NoError, registry);
        }
        self.found(records)
    }

    /// A name that stands for one address.
    fn host(&self, registry: &Registry, qname: &Name, qtype: RecordType, ip: IpAddr) -> Answer {
        match address_record(qname, ip, qtype, self.ttl) {
            Some(record) => self.found(vec![Answered { record, glue: None }]),
            None => self.negative(ResponseCode::NoError, registry),
        }
    }

    fn service(
        &self,
        registry: &Registry,
        qname: &Name,
        qtype: RecordType,
        service: &[u8],
        tag: Option<&[u8]>,
        visible: &dyn Fn(&str) -> bool,
    ) -> Answer {
        let Ok(service) = std::str::from_utf8(service) else {
            return self.negative(ResponseCode::NXDomain, registry);
        };
        if !visible(service) {
            return self.negative(ResponseCode::NXDomain, registry);
        }
        let passing: Vec<&Instance> = registry
            .instances(service)
            // Passing, up and not in maintenance: what discovery hands out.
            .filter(|i| i.discoverable())
            .filter(|i| {
                tag.is_none_or(|tag| {
                    i.tags
                        .iter()
                        .any(|t| t.as_bytes().eq_ignore_ascii_case(tag))
                })
            })
            .collect();
        // As Consul: a service with nothing healthy to offer does not exist.
        if passing.is_empty() {
            return self.negative(ResponseCode::NXDomain, registry);
        }
        let records: Vec<Answered> = match qtype {
            RecordType::SRV => passing.iter().filter_map(|i| self.srv(qname, i)).collect(),
            _ => passing
                .iter()
                .filter_map(|i| i.address.parse::<IpAddr>().ok())
                .filter_map(|ip| address_record(qname, ip, qtype, self.ttl))
                .map(|record| Answered { record, glue: None })
                .collect(),
        };
        if records.is_empty() {
            return self.negative(ResponseCode::NoError, registry);
        }
        self.found(records)
    }

    /// An instance's SRV record. Instances registered by IP get a target under `addr.` whose
    /// address rides along; instances registered by host name point at that name.
    fn srv(&self, qname: &Name, instance: &Instance) -> Option<Answered> {
        let (target, glue) = match instance.address.parse::<IpAddr>() {
            Ok(ip) => {
                let target = self.addr_origin.prepend_label(encode_addr(ip)).ok()?;
                let glue = ip_record(target.clone(), ip, self.ttl);
                (target, Some(glue))
            }
            Err(_) => {
                let mut host = Name::from_ascii(&instance.address).ok()?;
                host.set_fqdn(true);
                (host, None)
            }
        };
        let weight = u16::try_from(instance.weight).unwrap_or(u16::MAX);
        let srv = SRV::new(1, weight, instance.port, target);
        Some(Answered {
            record: Record::from_rdata(qname.clone(), self.ttl, RData::SRV(srv)),
            glue,
        })
    }
}
