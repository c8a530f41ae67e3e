//! [`DnsRegistry`]: instances from the platform's DNS, for services on a platform (Kubernetes,
//! Consul, Signpost) that already publishes them there.
//!
//! A service name becomes a query name through a [`DnsLookup`]: SRV records (each target and
//! port an instance: Kubernetes' `_<port>._<proto>.<service>.<ns>.svc.<domain>`, or Signpost's
//! and Consul's `<service>.service.<domain>`), or A/AAAA records on a known port (a Kubernetes
//! headless service `<service>.<ns>.svc.<domain>`). Queries go to one configured resolver
//! (`ip:port`), never through the system's configuration, search domains or hosts file.
//!
//! A watch resolves at once and yields a `Reset`, then resolves again when the answer's
//! records expire: their smallest TTL, clamped to [`DnsOptions::ttl_floor`] and
//! [`DnsOptions::ttl_ceiling`] (a TTL of 0, Signpost's default, means "at the floor"). Each new
//! answer is compared with the last one and the differences come as `Add`, `Update` and
//! `Remove`. An instance's id is its `address:port`. A name that does not exist (NXDOMAIN, or no
//! records) is an empty service, not an error; an unreachable resolver ends the watch with
//! [`RegistryError::Unavailable`], and discovery reconnects.
//!
//! The registry is read-only: registering, deregistering and heartbeats are
//! [`RegistryError::Unsupported`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use super::{
    Cause, ConfigError, RegistrationSpec, Registry, RegistryError, ServiceSet, TransportKind,
};
use crate::instance::{Instance, Update};

/// The placeholder a name template carries.
const PLACEHOLDER: &str = "{service}";

/// Which records name a service's instances, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsLookup {
    /// SRV records at the name (`{service}` replaced by the service): each target and port is
    /// an instance (its address from the answer's additional A/AAAA records, else the target
    /// name). Only the lowest priority present is used, as RFC 2782 asks.
    Srv {
        /// The name template, e.g. `{service}.service.consul`.
        name: String,
    },
    /// A and AAAA records at the name: each address is an instance on `port`.
    Address {
        /// The name template, e.g. `{service}.default.svc.cluster.local`.
        name: String,
        /// The port every address serves on.
        port: u16,
    },
}

impl DnsLookup {
    /// Signpost's (and Consul's) DNS interface: SRV at `<service>.service.<domain>`, healthy
    /// instances only.
    pub fn signpost(domain: &str) -> DnsLookup {
        DnsLookup::Srv {
            name: format!("{PLACEHOLDER}.service.{}", domain.trim_matches('.')),
        }
    }

    /// A Kubernetes service's named port: SRV at
    /// `_<port_name>._<protocol>.<service>.<namespace>.svc.<cluster_domain>`.
    pub fn kubernetes_srv(
        port_name: &str,
        protocol: &str,
        namespace: &str,
        cluster_domain: &str,
    ) -> DnsLookup {
        DnsLookup::Srv {
            name: format!(
                "_{port_name}._{protocol}.{PLACEHOLDER}.{namespace}.svc.{}",
                cluster_domain.trim_matches('.')
            ),
        }
    }

    /// A Kubernetes headless service: its pods' addresses at
    /// `<service>.<namespace>.svc.<cluster_domain>`, all on `port`.
    pub fn kubernetes_headless(namespace: &str, cluster_domain: &str, port: u16) -> DnsLookup {
        DnsLookup::Address {
            name: format!(
                "{PLACEHOLDER}.{namespace}.svc.{}",
                cluster_domain.trim_matches('.')
            ),
            port,
        }
    }

    fn template(&self) -> &str {
        match self {
            DnsLookup::Srv { name } | DnsLookup::Address { name, .. } => name,
        }
    }

    /// The fully qualified query name for `service`.
    fn name_for(&self, service: &str) -> Result<Name, String> {
        let text = self.template().replace(PLACEHOLDER, service);
        let mut name = Name::from_ascii(text.trim_end_matches('.')).map_err(|e| e.to_string())?;
        name.set_fqdn(true);
        Ok(name)
    }
}

/// How a [`DnsRegistry`] asks and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOptions {
    /// Which records name a service's instances.
    pub lookup: DnsLookup,
    /// The shortest wait between two resolutions of one watched name (what a TTL of 0 means).
    pub ttl_floor: Duration,
    /// The longest wait between two resolutions, however long the records' TTL.
    pub ttl_ceiling: Duration,
    /// How long one query may take before it is tried again (twice) or fails.
    pub timeout: Duration,
}

impl Default for DnsOptions {
    /// Signpost's DNS interface at `consul.`, re-resolved every 1 s to 60 s.
    fn default() -> Self {
        DnsOptions {
            lookup: DnsLookup::signpost("consul"),
            ttl_floor: Duration::from_secs(1),
            ttl_ceiling: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A watch-only registry over DNS (see the module documentation).
#[derive(Clone)]
pub struct DnsRegistry {
    /// The resolver and the settings, shared with every watch.
    inner: Arc<Inner>,
}

struct Inner {
    /// Asks only the configured server; its cache is cleared before each resolution.
    resolver: TokioResolver,
    /// The server asked, for errors.
    server: SocketAddr,
    options: DnsOptions,
}

impl std::fmt::Debug for DnsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsRegistry")
            .field("server", &self.inner.server)
            .field("options", &self.inner.options)
            .finish()
    }
}

/// One resolution: the instances by id, and how long the answer may be kept.
struct Answer {
    instances: BTreeMap<String, Instance>,
    ttl: Option<u32>,
}

impl DnsRegistry {
    /// A registry asking the DNS server at `server` (UDP, then TCP for truncated answers).
    /// Fails on a template without `{service}` or that is not a DNS name, and on TTL bounds
    /// that are zero or reversed.
    pub fn new(server: SocketAddr, options: DnsOptions) -> Result<DnsRegistry, RegistryError> {
        let template = options.lookup.template();
        let bad_template = |reason: String| {
            RegistryError::Config(ConfigError::DnsTemplate {
                template: template.to_string(),
                reason,
            })
        };
        if !template.contains(PLACEHOLDER) {
            return Err(bad_template(format!("it must contain {PLACEHOLDER}")));
        }
        options
            .lookup
            .name_for("service-name")
            .map_err(|e| bad_template(format!("not a DNS name: {e}")))?;
        if options.ttl_floor.is_zero() || options.ttl_floor > options.ttl_ceiling {
            return Err(RegistryError::Config(ConfigError::DnsTtlBounds {
                floor: options.ttl_floor,
                ceiling: options.ttl_ceiling,
            }));
        }
        let connection = |mut c: ConnectionConfig| {
            c.port = server.port();
            c
        };
        let name_server = NameServerConfig::new(
            server.ip(),
            true,
            vec![
                connection(ConnectionConfig::udp()),
                connection(ConnectionConfig::tcp()),
            ],
        );
        let mut opts = ResolverOpts::default();
        opts.timeout = options.timeout;
        opts.attempts = 2;
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.try_tcp_on_error = true;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![name_server]),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| RegistryError::Unavailable {
            agent: format!("dns {server}"),
            cause: Cause::Transport {
                kind: TransportKind::Other,
                detail: e.to_string(),
            },
        })?;
        Ok(DnsRegistry {
            inner: Arc::new(Inner {
                resolver,
                server,
                options,
            }),
        })
    }

    fn unsupported<T: Send + 'static>(
        operation: &'static str,
    ) -> BoxFuture<'static, Result<T, RegistryError>> {
        Box::pin(async move {
            Err(RegistryError::Unsupported {
                registry: "the DNS",
                operation,
            })
        })
    }
}

impl Inner {
    /// Resolves `service` once.
    async fn resolve(&self, service: &str) -> Result<Answer, RegistryError> {
        let name = self.options.lookup.name_for(service).map_err(|e| {
            RegistryError::invalid(
                format!("dns name of {service}"),
                format!("not a DNS name: {e}"),
            )
        })?;
        // The watch keeps its own time; the resolver's cache must not answer for the server.
        self.resolver.clear_cache();
        let mut answer = Answer {
            instances: BTreeMap::new(),
            ttl: None,
        };
        match &self.options.lookup {
            DnsLookup::Srv { .. } => {
                let Some(lookup) = self.query(&name, RecordType::SRV).await? else {
                    return Ok(answer);
                };
                let srvs: Vec<_> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some((r.ttl, srv)),
                        _ => None,
                    })
                    .collect();
                let Some(best) = srvs.iter().map(|(_, srv)| srv.priority).min() else {
                    return Ok(answer);
                };
                for (ttl, srv) in srvs.into_iter().filter(|(_, s)| s.priority == best) {
                    answer.keep(ttl);
                    let glue: Vec<(u32, IpAddr)> = lookup
                        .additionals()
                        .iter()
                        .filter(|r| r.name == srv.target)
                        .filter_map(|r| Some((r.ttl, r.data.ip_addr()?)))
                        .collect();
                    let target = srv.target.to_ascii();
                    let addresses: Vec<String> = if glue.is_empty() {
                        vec![target.trim_end_matches('.').to_string()]
                    } else {
                        glue.iter()
                            .map(|(ttl, ip)| {
                                answer.keep(*ttl);
                                ip.to_string()
                            })
                            .collect()
                    };
                    for address in addresses {
                        let mut instance = instance(service, address, srv.port);
                        instance.weight = u32::from(srv.weight).clamp(1, 10_000);
                        instance
                            .metadata
                            .insert("dns.target".to_string(), target.clone());
                        answer.instances.insert(instance.id.clone(), instance);
                    }
                }
            }
            DnsLookup::Address { port, .. } => {
                for qtype in [RecordType::A, RecordType::AAAA] {
                    let Some(lookup) = self.query(&name, qtype).await? else {
                        continue;
                    };
                    for record in lookup.answers() {
                        if let Some(ip) = record.data.ip_addr() {
                            answer.keep(record.ttl);
                            let instance = instance(service, ip.to_string(), *port);
                            answer.instances.insert(instance.id.clone(), instance);
                        }
                    }
                }
            }
        }
        Ok(answer)
    }

    /// One query; `None` when the name or the records do not exist.
    async fn query(
        &self,
        name: &Name,
        qtype: RecordType,
    ) -> Result<Option<hickory_resolver::lookup::Lookup>, RegistryError> {
        match self.resolver.lookup(name.clone(), qtype).await {
            Ok(lookup) => Ok(Some(lookup)),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    fn unavailable(&self, e: &NetError) -> RegistryError {
        let text = e.to_string();
        let kind = if matches!(e, NetError::Timeout) || text.contains("timed out") {
            TransportKind::TimedOut
        } else {
            TransportKind::Other
        };
        RegistryError::Unavailable {
            agent: format!("dns {}", self.server),
            cause: Cause::Transport { kind, detail: text },
        }
    }

    /// How long to wait before resolving again after an answer with this TTL.
    fn wait(&self, ttl: Option<u32>) -> Duration {
        let ttl = Duration::from_secs(u64::from(ttl.unwrap_or(0)));
        ttl.clamp(self.options.ttl_floor, self.options.ttl_ceiling)
    }
}

impl Answer {
    /// Keeps the smallest TTL seen.
    fn keep(&mut self, ttl: u32) {
        self.ttl = Some(self.ttl.map_or(ttl, |t| t.min(ttl)));
    }
}

fn instance(service: &str, address: String, port: u16) -> Instance {
    Instance {
        id: signpost_api::instance::authority(&address, port),
        service: service.to_string(),
        address,
        port,
        tags: Vec::new(),
        metadata: BTreeMap::from([("source".to_string(), "dns".to_string())]),
        weight: 100,
        state: Default::default(),
        maintenance: None,
    }
}

/// The updates that take a watcher from `old` to `new`, all at `index`.
fn diff(
    old: &BTreeMap<String, Instance>,
    new: &BTreeMap<String, Instance>,
    index: u64,
) -> Vec<Update> {
    let mut updates = Vec::new();
    for id in old.keys().filter(|id| !new.contains_key(*id)) {
        updates.push(Update::Remove {
            index,
            id: id.clone(),
        });
    }
    for (id, instance) in new {
        match old.get(id) {
            None => updates.push(Update::Add {
                index,
                instance: instance.clone(),
            }),
            Some(before) if before != instance => updates.push(Update::Update {
                index,
                instance: instance.clone(),
            }),
            Some(_) => {}
        }
    }
    updates
}

/// Where a watch stands between resolutions.
struct WatchState {
    inner: Arc<Inner>,
    service: String,
    /// The last answer's instances; `None` before the first (which becomes the `Reset`).
    known: Option<BTreeMap<String, Instance>>,
    /// Counts answers that changed something; the updates' index.
    index: u64,
    /// When to resolve next.
    wait: Duration,
    /// Set after an error: the stream then ends.
    failed: bool,
}

impl Registry for DnsRegistry {
    fn register<'a>(
        &'a self,
        _spec: &'a RegistrationSpec,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Self::unsupported("register")
    }

    fn deregister<'a>(
        &'a self,
        _service: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Self::unsupported("deregister")
    }

    fn heartbeat<'a>(
        &'a self,
        _service: &'a str,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryError>> {
        Self::unsupported("heartbeat")
    }

    fn list<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<(u64, Vec<Instance>), RegistryError>> {
        Box::pin(async move {
            let answer = self.inner.resolve(service).await?;
            Ok((1, answer.instances.into_values().collect()))
        })
    }

    fn watch(&self, service: &str) -> BoxStream<'static, Result<Update, RegistryError>> {
        let state = WatchState {
            inner: self.inner.clone(),
            service: service.to_string(),
            known: None,
            index: 0,
            wait: Duration::ZERO,
            failed: false,
        };
        stream::unfold(state, |mut state| async move {
            if state.failed {
                return None;
            }
            loop {
                if state.known.is_some() {
                    tokio::time::sleep(state.wait).await;
                }
                let answer = match state.inner.resolve(&state.service).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        state.failed = true;
                        return Some((vec![Err(e)], state));
                    }
                };
                state.wait = state.inner.wait(answer.ttl);
                let updates = match &state.known {
                    None => {
                        state.index = 1;
                        vec![Update::Reset {
                            index: 1,
                            instances: answer.instances.values().cloned().collect(),
                        }]
                    }
                    Some(known) => diff(known, &answer.instances, state.index + 1),
                };
                state.known = Some(answer.instances);
                if !updates.is_empty() {
                    state.index = updates[0].index();
                    return Some((updates.into_iter().map(Ok).collect(), state));
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }

    fn watch_services(&self) -> BoxStream<'static, Result<ServiceSet, RegistryError>> {
        // DNS cannot list its names: say so once, and end.
        stream::once(Self::unsupported("watch_services")).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(address: &str, port: u16) -> Instance {
        instance("web", address.to_string(), port)
    }

    fn map(list: &[Instance]) -> BTreeMap<String, Instance> {
        list.iter().map(|i| (i.id.clone(), i.clone())).collect()
    }

    #[test]
    fn diff_adds_removes_and_updates() {
        let a = inst("10.0.0.1", 80);
        let b = inst("10.0.0.2", 80);
        let mut b2 = b.clone();
        b2.weight = 7;
        let c = inst("10.0.0.3", 80);
        let updates = diff(&map(&[a.clone(), b]), &map(&[b2.clone(), c.clone()]), 5);
        assert_eq!(
            updates,
            [
                Update::Remove {
                    index: 5,
                    id: a.id.clone()
                },
                Update::Update {
                    index: 5,
                    instance: b2
                },
                Update::Add {
                    index: 5,
                    instance: c
                },
            ]
        );
        assert!(diff(&map(std::slice::from_ref(&a)), &map(&[a]), 6).is_empty());
    }

    #[test]
    fn templates_and_bounds_are_checked() {
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let with = |lookup, floor, ceiling| DnsOptions {
            lookup,
            ttl_floor: Duration::from_secs(floor),
            ttl_ceiling: Duration::from_secs(ceiling),
            ..DnsOptions::default()
        };
        let err = DnsRegistry::new(
            server,
            with(
                DnsLookup::Srv {
                    name: "web.service.consul".into(),
                },
                1,
                60,
            ),
        )
        .unwrap_err();
        assert!(err.to_string().contains("{service}"), "{err}");
        let err = DnsRegistry::new(
            server,
            with(
                DnsLookup::Srv {
                    name: "{service}..bad name".into(),
                },
                1,
                60,
            ),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a DNS name"), "{err}");
        for (floor, ceiling) in [(0, 60), (61, 60)] {
            let err = DnsRegistry::new(server, with(DnsLookup::signpost("consul"), floor, ceiling))
                .unwrap_err();
            assert!(
                matches!(err, RegistryError::Config(ConfigError::DnsTtlBounds { .. })),
                "{err}"
            );
        }
    }

    #[test]
    fn lookups_name_services_as_the_platforms_do() {
        let name = |l: DnsLookup| l.name_for("users").unwrap().to_ascii();
        assert_eq!(
            name(DnsLookup::signpost("consul.")),
            "users.service.consul."
        );
        assert_eq!(
            name(DnsLookup::kubernetes_srv(
                "http",
                "tcp",
                "default",
                "cluster.local"
            )),
            "_http._tcp.users.default.svc.cluster.local."
        );
        assert_eq!(
            name(DnsLookup::kubernetes_headless(
                "prod",
                "cluster.local",
                8080
            )),
            "users.prod.svc.cluster.local."
        );
    }

    #[test]
    fn waits_are_clamped() {
        let registry = DnsRegistry::new(
            "127.0.0.1:53".parse().unwrap(),
            DnsOptions {
                ttl_floor: Duration::from_secs(2),
                ttl_ceiling: Duration::from_secs(30),
                ..DnsOptions::default()
            },
        )
        .unwrap();
        let inner = &registry.inner;
        assert_eq!(inner.wait(None), Duration::from_secs(2));
        assert_eq!(inner.wait(Some(0)), Duration::from_secs(2));
        assert_eq!(inner.wait(Some(10)), Duration::from_secs(10));
        assert_eq!(inner.wait(Some(3600)), Duration::from_secs(30));
    }
}
