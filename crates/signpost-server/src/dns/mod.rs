//! The DNS interface: Consul-style names over UDP and TCP, answered from the registry.
//!
//! Names served under the domain (`consul.` by default), all case-insensitive:
//! - `<service>.service.<domain>`, `<tag>.<service>.service.<domain>`: A/AAAA of the passing
//!   instances registered by IP; SRV (priority 1, the instance's weight, its port) for every
//!   passing instance. NXDOMAIN when no passing instance matches, as Consul does.
//! - `_<service>._<tag>.service.<domain>` (RFC 2782; `_tcp` means any tag): the same.
//! - `<hex>.addr.<domain>`: the address spelled in hex (`0a000001` is 10.0.0.1). SRV targets of
//!   instances registered by IP are such names, and their A/AAAA records go in the additional
//!   section. Instances registered by host name get that host name as target.
//! - `<node>.node.<domain>` and `ns.<domain>`: this agent's address. The apex answers SOA and NS.
//!
//! Names outside the domain are refused. Negative answers carry the zone's SOA, whose serial is
//! the registry's last index. Records come in random order, all with the configured TTL.
//!
//! Over UDP an answer is cut to what fits the client's buffer (512 bytes, or its EDNS payload
//! size) and to `udp_answer_limit` records, keeping each SRV record's address with it; a cut
//! answer carries the TC bit so the client asks again over TCP, which gets everything.
//!
//! [`answer`] decides what to answer (no IO, unit-tested); this module handles the transports.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, UdpSocket};

use crate::agent::Agent;
use crate::service;

pub(crate) mod answer;
#[cfg(test)]
mod tests;

use answer::{Answer, Answered, Zone};

/// A TCP connection that sends no query for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// The largest UDP response sent, whatever a client advertises; also what we advertise.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// The EDNS version this server speaks.
const EDNS_VERSION: u8 = 0;

/// Settings of the DNS interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The zone served; names outside it are refused. Default `consul.`, as Consul's tools expect.
    pub domain: String,
    /// TTL in seconds of every record, and the SOA minimum. Default 0: health changes apply at
    /// once, as in Consul.
    pub ttl: u32,
    /// This agent's node name, answered at `<node_name>.node.<domain>`. One DNS label.
    pub node_name: String,
    /// The address answered for the node name and for `ns.<domain>`.
    pub node_addr: IpAddr,
    /// The most answer records in one UDP response; 0 (this type's default) leaves only the
    /// size limit. The agent's `[dns] udp_answer_limit` is 3 by default, as Consul's: a 40-byte
    /// query cannot draw a 4 KiB answer. Cut answers carry the TC bit, so a client that needs
    /// everything retries over TCP.
    pub udp_answer_limit: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "consul.".to_string(),
            ttl: 0,
            node_name: "signpost".to_string(),
            node_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp_answer_limit: 0,
        }
    }
}

/// Why a [`DnsConfig`] cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsConfigError {
    #[error("invalid DNS domain {domain:?}: {reason}")]
    Domain { domain: String, reason: String },
    #[error(
        "invalid DNS node name {0:?}: it must be one DNS label of 1 to 63 letters, digits, '-' or '_'"
    )]
    NodeName(String),
}

impl DnsConfig {
    /// Checks the settings can be served.
    pub fn validate(&self) -> Result<(), DnsConfigError> {
        Zone::new(self).map(|_| ())
    }
}

/// Why the DNS interface stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The zone cannot be served.
    #[error(transparent)]
    Config(#[from] DnsConfigError),
    /// The server failed.
    #[error("the DNS server stopped: {0}")]
    Server(#[from] hickory_server::net::NetError),
}

/// Serves DNS on the bound `udp` socket and `tcp` listener until `shutdown` resolves.
pub async fn serve(
    agent: Arc<Agent>,
    config: DnsConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DnsError> {
    let zone = Zone::new(&config)?;
    let handler = DnsHandler {
        agent,
        zone,
        udp_answer_limit: config.udp_answer_limit,
        cache: std::sync::Mutex::new(std::collections::HashMap::new()),
    };
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    let token = server.shutdown_token().clone();
    let stopper = tokio::spawn(async move {
        shutdown.await;
        token.cancel();
    });
    let result = server.block_until_done().await;
    stopper.abort();
    Ok(result?)
}

/// Answers queries from the registry; hickory runs it for every request on either transport.
struct DnsHandler {
    /// The agent whose registry is answered from, through the service layer.
    agent: Arc<Agent>,
    zone: Zone,
    udp_answer_limit: usize,
    /// Answers already built, by question (the name as asked, its type), with the registry and
    /// ACL indexes they were built at: a repeated question is answered without rebuilding its
    /// records until something changes. At most [`ANSWER_CACHE`] entries.
    cache: std::sync::Mutex<AnswerCache>,
}

/// Built answers by question (name as asked, type): the (registry, ACL) indexes they were
/// built at, and the answer.
type AnswerCache = std::collections::HashMap<(String, RecordType), ((u64, u64), Answer)>;

/// Most answers the DNS interface keeps built (the cache starts over when full).
const ANSWER_CACHE: usize = 4096;

impl DnsHandler {
    /// Resolves the question under the state read lock, released before anything is sent;
    /// from the cache when nothing changed since it was last built.
    fn answer(&self, name: &Name, qtype: RecordType) -> Answer {
        let caller = service::acl::dns_caller(&self.agent);
        let acl_index = service::acl::index(&self.agent);
        let key = (name.to_string(), qtype);
        service::with_registry(&self.agent, &caller, |registry, visible| {
            let at = (registry.last_index(), acl_index);
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((built, answer)) = cache.get(&key) {
                if *built == at {
                    return answer.clone();
                }
            }
            let answer = self.zone.resolve_visible(registry, name, qtype, visible);
            metrics::with_local_recorder(self.agent.recorder(), || {
                metrics::counter!("signpost_dns_answers_built_total").increment(1);
            });
            if cache.len() >= ANSWER_CACHE && !cache.contains_key(&key) {
                cache.clear();
            }
            cache.insert(key, (at, answer.clone()));
            answer
        })
    }

    /// How many of `answer`'s records fit in `limit` bytes (with their additional records, the
    /// question, the SOA and the OPT record), also bounded by `udp_answer_limit`.
    fn fitting(
        &self,
        request: &Request,
        edns: Option<&Edns>,
        metadata: Metadata,
        answer: &Answer,
        limit: u16,
    ) -> usize {
        let fits = |n: usize| {
            let mut buf = Vec::with_capacity(usize::from(limit));
            let mut encoder = BinEncoder::new(&mut buf);
            encoder.set_max_size(limit);
            build(request, edns, metadata, answer, n)
                .destructive_emit(&mut encoder)
                .is_ok_and(|header| !header.truncation)
        };
        let mut most = answer.records.len();
        if self.udp_answer_limit > 0 {
            most = most.min(self.udp_answer_limit);
        }
        if fits(most) {
            return most;
        }
        // Binary search: `low` records fit (or low is 0), `high` do not.
        let (mut low, mut high) = (0, most);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if fits(mid) {
                low = mid;
            } else {
                high = mid;
            }
        }
        low
    }
}

/// The additional records of `records`, each address once.
fn glue(records: &[Answered]) -> Vec<&Record> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter_map(|a| a.glue.as_ref())
        .filter(|g| seen.insert(&g.name))
        .collect()
}

/// The response carrying the first `n` records of `answer`.
fn build<'q, 'a>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    metadata: Metadata,
    answer: &'a Answer,
    n: usize,
) -> MessageResponse<
    'q,
    'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
> {
    let kept = &answer.records[..n];
    MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        kept.iter().map(|a| &a.record),
        std::iter::empty(),
        answer.soa.iter(),
        glue(kept),
    )
}

/// Sends `response`; a failure to send is logged and reported as SERVFAIL.
async fn send<'q, 'a, R: ResponseHandler>(
    mut handle: R,
    request: &Request,
    response: MessageResponse<
        'q,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, src = %request.src(), "cannot send a DNS response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD)
                .set_version(EDNS_VERSION);
            edns
        });
        let refuse = |code: ResponseCode| {
            MessageResponseBuilder::new(&request.queries, response_edns.as_ref())
                .error_msg(&request.metadata, code)
        };
        if request.metadata.op_code != OpCode::Query {
            return send(response_handle, request, refuse(ResponseCode::NotImp)).await;
        }
        if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            return send(response_handle, request, refuse(ResponseCode::BADVERS)).await;
        }
        let Ok(info) = request.request_info() else {
            return send(response_handle, request, refuse(ResponseCode::FormErr)).await;
        };
        let query = info.query.original();
        if query.query_class() != DNSClass::IN {
            return send(response_handle, request, refuse(ResponseCode::Refused)).await;
        }
        if crate::vitals::failed(&self.agent) {
            // Raft or storage stopped: the registry is no longer kept up to date.
            return send(response_handle, request, refuse(ResponseCode::ServFail)).await;
        }

        let mut answer = self.answer(query.name(), query.query_type());
        answer.records.shuffle(&mut rand::rng());
        tracing::debug!(
            name = %query.name(),
            qtype = %query.query_type(),
            code = %answer.code,
            records = answer.records.len(),
            protocol = %info.protocol,
            "dns query"
        );

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.code;
        metadata.authoritative = answer.authoritative;
        let kept = if info.protocol == Protocol::Udp {
            let limit = request.max_payload().min(MAX_UDP_PAYLOAD);
            self.fitting(request, response_edns.as_ref(), metadata, &answer, limit)
        } else {
            answer.records.len()
        };
        metadata.truncation = kept < answer.records.len();
        let response = build(request, response_edns.as_ref(), metadata, &answer, kept);
        send(response_handle, request, response).await
    }
}
