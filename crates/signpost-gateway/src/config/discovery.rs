//! `[registry] kind`: where the gateway finds instances. Signpost's agents (the default), the
//! platform's DNS (`kind = "dns"`, with `resolver` and the `[registry.dns]` table), or the
//! environment variables Kubernetes injects (`kind = "env"`). The checks and the SDK registry
//! each kind builds live here, so `config.rs` only names the keys.

use std::sync::Arc;

use serde::Deserialize;
use signpost_client::registry::dns::{DnsLookup, DnsOptions, DnsRegistry};
use signpost_client::registry::env::EnvRegistry;
use signpost_client::registry::signpost::{SignpostOptions, SignpostRegistry};
use signpost_client::registry::{Registry, RegistryError};
use signpost_core::model::Dur;

use super::{Problem, RegistrySection};

/// Which registry `[registry]` describes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    /// Signpost agents at `addrs` (watched over SSE, with failover).
    #[default]
    Signpost,
    /// The DNS server at `resolver` (see [`DnsSection`]); watch-only.
    Dns,
    /// The gateway's own environment (`<NAME>_SERVICE_HOST` / `_SERVICE_PORT`); watch-only.
    Env,
}

impl RegistryKind {
    /// The name the config file uses.
    pub fn name(self) -> &'static str {
        match self {
            RegistryKind::Signpost => "signpost",
            RegistryKind::Dns => "dns",
            RegistryKind::Env => "env",
        }
    }

    /// Whether this registry knows instance metadata and its catalog, so
    /// `routes_from_metadata` can apply.
    pub fn has_metadata(self) -> bool {
        self == RegistryKind::Signpost
    }
}

/// Which DNS records name a service's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecord {
    /// SRV records: each target and port an instance.
    #[default]
    Srv,
    /// A and AAAA records, all on `port` (a Kubernetes headless service).
    Address,
}

/// `[registry.dns]`: how `kind = "dns"` turns a service into a query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// The name asked, `{service}` replaced by the route's service:
    /// `{service}.service.consul` (Signpost, Consul; the default),
    /// `_http._tcp.{service}.default.svc.cluster.local` (a Kubernetes named port, SRV),
    /// `{service}.default.svc.cluster.local` (a headless service, with `record = "address"`).
    pub name: String,
    /// `srv` (default) or `address`.
    pub record: DnsRecord,
    /// The port of every address with `record = "address"`.
    pub port: Option<u16>,
    /// The shortest wait between two resolutions (what a TTL of 0 means).
    pub ttl_floor: Dur,
    /// The longest wait between two resolutions, whatever the records' TTL.
    pub ttl_ceiling: Dur,
    /// How long one query may take.
    pub timeout: Dur,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            name: "{service}.service.consul".to_string(),
            record: DnsRecord::Srv,
            port: None,
            ttl_floor: Dur::from_secs(1),
            ttl_ceiling: Dur::from_secs(60),
            timeout: Dur::from_secs(2),
        }
    }
}

/// One problem with `kind` and the keys it reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryProblem {
    /// `kind = "dns"` without a server to ask.
    #[error("registry.resolver: kind = \"dns\" needs the DNS server's address (ip:port, e.g. \"127.0.0.1:8600\")")]
    NoResolver,
    /// A resolver set for a kind that does not use DNS.
    #[error("registry.resolver: only kind = \"dns\" uses a resolver (kind is \"{}\")", .0.name())]
    ResolverUnused(RegistryKind),
    /// A name template that cannot name a service.
    #[error("registry.dns.name: {0}")]
    Name(String),
    /// `record = "address"` without the port.
    #[error("registry.dns.port: record = \"address\" needs the port the addresses serve on (1 to 65535)")]
    NoPort,
    /// A floor of zero or above the ceiling.
    #[error("registry.dns.ttl_floor must be above 0 and at most registry.dns.ttl_ceiling")]
    TtlBounds,
    /// A query timeout of zero.
    #[error("registry.dns.timeout must be above 0")]
    Timeout,
}

impl DnsSection {
    /// The SDK's options for these settings.
    fn options(&self) -> Result<DnsOptions, DiscoveryProblem> {
        let lookup = match self.record {
            DnsRecord::Srv => DnsLookup::Srv {
                name: self.name.clone(),
            },
            DnsRecord::Address => DnsLookup::Address {
                name: self.name.clone(),
                port: self
                    .port
                    .filter(|p| *p != 0)
                    .ok_or(DiscoveryProblem::NoPort)?,
            },
        };
        Ok(DnsOptions {
            lookup,
            ttl_floor: self.ttl_floor.to_std(),
            ttl_ceiling: self.ttl_ceiling.to_std(),
            timeout: self.timeout.to_std(),
        })
    }
}

/// The problems with `[registry]`'s kind and the keys that kind reads.
pub(super) fn check(registry: &RegistrySection) -> Vec<Problem> {
    let mut problems = Vec::new();
    match registry.kind {
        RegistryKind::Signpost => {
            if registry.addrs.is_empty() {
                problems.push(Problem::NoAgents);
            }
        }
        RegistryKind::Dns => {
            if registry.resolver.is_none() {
                problems.push(Problem::Discovery(DiscoveryProblem::NoResolver));
            }
            let dns = &registry.dns;
            if dns.timeout.as_millis() == 0 {
                problems.push(Problem::Discovery(DiscoveryProblem::Timeout));
            }
            match dns.options() {
                Err(problem) => problems.push(Problem::Discovery(problem)),
                Ok(options) => {
                    // The SDK checks the template and the bounds; a loopback address stands in
                    // for the resolver, which is checked above.
                    let probe = std::net::SocketAddr::from(([127, 0, 0, 1], 53));
                    match DnsRegistry::new(probe, options) {
                        Err(RegistryError::Config(
                            signpost_client::registry::ConfigError::DnsTtlBounds { .. },
                        )) => problems.push(Problem::Discovery(DiscoveryProblem::TtlBounds)),
                        Err(RegistryError::Config(e)) => {
                            problems.push(Problem::Discovery(DiscoveryProblem::Name(e.to_string())))
                        }
                        _ => {}
                    }
                }
            }
        }
        RegistryKind::Env => {}
    }
    if registry.kind != RegistryKind::Dns && registry.resolver.is_some() {
        problems.push(Problem::Discovery(DiscoveryProblem::ResolverUnused(
            registry.kind,
        )));
    }
    problems
}

/// The SDK registry `[registry]` describes (already validated).
pub(crate) fn build(registry: &RegistrySection) -> Result<Arc<dyn Registry>, RegistryError> {
    Ok(match registry.kind {
        RegistryKind::Signpost => {
            let options = SignpostOptions {
                token: registry.token.as_ref().map(|t| t.0.clone()),
                tls: registry.tls(),
                ..SignpostOptions::default()
            };
            Arc::new(SignpostRegistry::with_options(
                registry.addrs.clone(),
                options,
            )?)
        }
        RegistryKind::Dns => {
            let resolver = registry.resolver.ok_or(RegistryError::Config(
                signpost_client::registry::ConfigError::NoAgents { system: "DNS" },
            ))?;
            let options = registry.dns.options().map_err(|problem| {
                RegistryError::Config(signpost_client::registry::ConfigError::DnsTemplate {
                    template: registry.dns.name.clone(),
                    reason: problem.to_string(),
                })
            })?;
            Arc::new(DnsRegistry::new(resolver, options)?)
        }
        RegistryKind::Env => Arc::new(EnvRegistry::from_process_env()),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, GatewayConfig};

    /// The problems `validate` finds in `toml`, one string each.
    fn problems(toml: &str) -> Vec<String> {
        match GatewayConfig::from_toml(toml).unwrap().validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn dns_needs_a_resolver_and_sane_settings() {
        assert_eq!(
            problems("[registry]\nkind = \"dns\""),
            ["registry.resolver: kind = \"dns\" needs the DNS server's address (ip:port, e.g. \"127.0.0.1:8600\")"]
        );
        assert!(problems("[registry]\nkind = \"dns\"\nresolver = \"127.0.0.1:8600\"").is_empty());
        let found = problems(
            "[registry]\nkind = \"dns\"\nresolver = \"127.0.0.1:8600\"\n[registry.dns]\nrecord = \"address\"",
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("registry.dns.port:"), "{found:?}");
        let found = problems(
            "[registry]\nkind = \"dns\"\nresolver = \"127.0.0.1:8600\"\n[registry.dns]\nname = \"web.service.consul\"",
        );
        assert!(
            found[0].starts_with("registry.dns.name:") && found[0].contains("{service}"),
            "{found:?}"
        );
        let found = problems(
            "[registry]\nkind = \"dns\"\nresolver = \"127.0.0.1:8600\"\n[registry.dns]\nttl_floor = \"2m\"",
        );
        assert_eq!(
            found,
            ["registry.dns.ttl_floor must be above 0 and at most registry.dns.ttl_ceiling"]
        );
    }

    #[test]
    fn kinds_check_only_their_own_keys() {
        // Without agents, only the signpost kind complains.
        assert!(problems("[registry]\nkind = \"env\"\naddrs = []").is_empty());
        assert!(
            problems("[registry]\nkind = \"dns\"\naddrs = []\nresolver = \"127.0.0.1:53\"")
                .is_empty()
        );
        assert_eq!(problems("[registry]\naddrs = []").len(), 1);
        assert_eq!(
            problems("[registry]\nkind = \"env\"\nresolver = \"127.0.0.1:53\""),
            ["registry.resolver: only kind = \"dns\" uses a resolver (kind is \"env\")"]
        );
        // An unknown kind or a resolver that is not ip:port is a parse error naming the key.
        let err = GatewayConfig::from_toml("[registry]\nkind = \"zookeeper\"").unwrap_err();
        assert!(err.to_string().contains("kind"), "{err}");
        let err = GatewayConfig::from_toml("[registry]\nkind = \"dns\"\nresolver = \"dns.local\"")
            .unwrap_err();
        assert!(err.to_string().contains("resolver"), "{err}");
    }
}
