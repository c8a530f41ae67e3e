//! The gateway's configuration: a typed TOML file, validated at start with a message that names
//! every mistake it finds.
//!
//! Every key is optional except each `[[route]]`'s `prefix` and `service`; the README's
//! "Gateway" section shows a complete file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use signpost_core::model::Dur;

pub use discovery::{DiscoveryProblem, DnsRecord, DnsSection, RegistryKind};

use crate::route::{BalancerKind, HashOn, Protocol, RetrySpec, RouteSource, RouteSpec};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrongly typed values.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the key).
        source: TomlError,
    },
    /// The values do not hang together; every problem found, one per line.
    #[error("invalid gateway configuration:\n  - {}", join(.0, "\n  - "))]
    Invalid(Vec<Problem>),
}

/// The text is not valid TOML, or has unknown keys or wrongly typed values (the message names
/// the key).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.to_string().trim_end())]
pub struct TomlError(#[from] toml::de::Error);

/// One problem [`GatewayConfig::validate`] found, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// No agent to ask.
    #[error("registry.addrs: name at least one Signpost agent")]
    NoAgents,
    /// A client certificate without its key, or a key without its certificate.
    #[error("registry.cert_file and registry.key_file go together: give both or neither")]
    RegistryHalfIdentity,
    /// Too many worker threads.
    #[error("workers: at most 1024 (0 = one per core), got {0}")]
    Workers(usize),
    /// Idle upstream connections would be closed at once.
    #[error("upstream.idle_timeout must be above 0")]
    IdleTimeout,
    /// A share above 100 %.
    #[error("outlier.max_ejection_percent must be 0 to 100, got {0}")]
    MaxEjectionPercent(u8),
    /// A negative or infinite retry budget ratio.
    #[error("retry_budget.ratio must be 0 or more")]
    BudgetRatio,
    /// `[telemetry]` cannot be used.
    #[error("{0}")]
    Telemetry(signpost_telemetry::ConfigError),
    /// Retry budget tokens that never last.
    #[error("retry_budget.ttl must be above 0")]
    BudgetTtl,
    /// A breaker that could never open on the ratio rule.
    #[error("breaker.failure_ratio must be above 0")]
    FailureRatio,
    /// What is wrong with `[defaults]`, on one line.
    #[error("{}", join(.0, "; "))]
    Defaults(Vec<DefaultsProblem>),
    /// What is wrong with one `[[route]]` (counted from 0).
    #[error("route[{index}]: {problem}")]
    Route {
        /// Which route.
        index: usize,
        /// The problem.
        problem: ValueError,
    },
    /// Two routes with the same host and prefix.
    #[error("route[{index}]: another route already has host {} and prefix {prefix:?}", host.as_deref().unwrap_or("(any)"))]
    DuplicateRoute {
        /// The later route.
        index: usize,
        /// The host both have.
        host: Option<String>,
        /// The prefix both have.
        prefix: String,
    },
    /// A `registry.metadata_prefixes` entry that is not a plain absolute path.
    #[error("registry.metadata_prefixes[{index}]: {problem}")]
    MetadataPrefix {
        /// Which entry (counted from 0).
        index: usize,
        /// The problem.
        problem: ValueError,
    },
    /// A bad `[auto_routes] prefix`.
    #[error("auto_routes.{0}")]
    AutoRoutesPrefix(ValueError),
    /// `[auto_routes] max_services = 0`.
    #[error("auto_routes.max_services must be above 0")]
    AutoRoutesMax,
    /// A `[limits]` duration of zero.
    #[error("limits.{0} must be above 0")]
    ZeroLimit(&'static str),
    /// What is wrong with `registry.kind` and the keys it reads.
    #[error(transparent)]
    Discovery(#[from] DiscoveryProblem),
    /// Two routes with the same name.
    #[error("route[{index}]: another route is already named {name:?}")]
    DuplicateName {
        /// The later route.
        index: usize,
        /// The name both have.
        name: String,
    },
}

/// One problem with `[defaults]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefaultsProblem {
    /// A bad value of a named key.
    #[error("defaults.{key}: {problem}")]
    Key {
        /// The key under `[defaults]`.
        key: &'static str,
        /// What is wrong with it.
        problem: ValueError,
    },
    /// A problem whose message names its key.
    #[error("defaults.{0}")]
    Named(ValueError),
}

/// One bad value in a route (configured, or declared in instance metadata).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A prefix that is not absolute.
    #[error("prefix must start with '/', got {0:?}")]
    PrefixNotAbsolute(String),
    /// A prefix longer than 1024 bytes.
    #[error("prefix must be at most 1024 bytes")]
    PrefixTooLong,
    /// A prefix with a query, fragment, spaces, `//` or dot segments.
    #[error("prefix must be a plain path (no '?', '#', spaces, '//' or dot segments), got {0:?}")]
    PrefixNotPlain(String),
    /// A host pattern that is not a host name.
    #[error("host must be a host name without port (optionally starting with \"*.\"), got {0:?}")]
    Host(String),
    /// Not a registry service name.
    #[error("service must be a registry service name ([a-z0-9-], 1 to 63), got {0:?}")]
    Service(String),
    /// A balancer name nobody knows.
    #[error("unknown balancer {0:?} (round_robin, random, weighted_random, smooth_weighted, least_outstanding, peak_ewma, consistent_hash)")]
    UnknownBalancer(String),
    /// `hash_on: header:<name>` with a name that is not a header name.
    #[error("hash_on: {0:?} is not a header name")]
    HashHeader(String),
    /// A `hash_on` nobody knows.
    #[error("hash_on must be client_ip, path or header:<name>, got {0:?}")]
    HashOn(String),
    /// `hash_on` with another balancer than consistent hashing.
    #[error("hash_on applies to the consistent_hash balancer only")]
    HashOnWithoutConsistentHash,
    /// A protocol nobody knows.
    #[error("protocol must be http1, h2c or https, got {0:?}")]
    Protocol(String),
    /// A zero response timeout.
    #[error("timeout must be above 0")]
    ZeroTimeout,
    /// A zero connect timeout.
    #[error("connect_timeout must be above 0")]
    ZeroConnectTimeout,
    /// An empty tag filter.
    #[error("tag must not be empty")]
    EmptyTag,
    /// A `compress` entry that is not an encoding the gateway applies, or one named twice.
    #[error("compress: {0:?} is not one of \"zstd\", \"br\", \"gzip\" (each at most once)")]
    Compress(String),
    /// A route name that is empty or too long.
    #[error("name must be 1 to 128 characters")]
    Name,
    /// Bad retry settings.
    #[error("retry: {0}")]
    Retry(RetryError),
}

/// Bad retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// Attempts out of 1..=10.
    #[error("attempts must be 1 to 10, got {0}")]
    Attempts(u32),
    /// A retried status that is not a 5xx.
    #[error("statuses must be 5xx, got {0}")]
    Status(u16),
}

/// `items` shown one after the other with `separator` between.
fn join<T: std::fmt::Display>(items: &[T], separator: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Where clients connect (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// The admin API: `GET /` (routes and upstream health) and `GET /metrics`.
    pub admin_listen: SocketAddr,
    /// Worker threads serving client traffic in `signpost gateway` (0: one per core). Each runs
    /// its own single-threaded runtime, accept loop and idle upstream connections (see
    /// [`crate::Gateway::serve_workers`]); with 1 the whole gateway runs on one thread.
    pub workers: usize,
    /// One `tracing` line per request (target `signpost_gateway::access`, level info).
    pub access_log: bool,
    /// Keep `X-Forwarded-Proto` and `X-Forwarded-Host` from the client (set them when absent)
    /// instead of overwriting them: only behind a proxy you trust.
    pub trust_forwarded_headers: bool,
    /// How long open connections get to finish their requests at shutdown.
    pub shutdown_grace: Dur,
    /// Serve clients over TLS (HTTPS only on `listen`); unset: plain HTTP.
    pub tls: Option<TlsSection>,
    /// How `protocol = "https"` routes verify their instances.
    pub upstream_tls: UpstreamTlsSection,
    /// Where instances and registry routes come from.
    pub registry: RegistrySection,
    /// Route settings every `[[route]]` and every registry route starts from.
    pub defaults: RouteDefaults,
    /// Connection pooling to upstream instances.
    pub upstream: UpstreamSection,
    /// Per-instance circuit breakers (the SDK's `BreakerConfig`).
    pub breaker: BreakerSection,
    /// Passive outlier ejection (the SDK's `OutlierConfig`).
    pub outlier: OutlierSection,
    /// The retry budget each route gets (the SDK's `RetryBudget`).
    pub retry_budget: BudgetSection,
    /// Client connection timeouts and caps.
    pub limits: LimitsSection,
    /// Routes by service name (off unless `prefix` is set).
    pub auto_routes: AutoRoutesSection,
    /// `[log]`: text or JSON lines, the access log included (`--log-format` overrides it).
    pub log: signpost_telemetry::LogSection,
    /// `[telemetry]`: OpenTelemetry trace export (off unless an OTLP endpoint is set).
    pub telemetry: signpost_telemetry::TelemetrySection,
    /// The configured routes.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// `[tls]`: the certificate the proxy listener presents. Re-read on SIGHUP and when the files
/// change (new connections get the new one; open ones keep theirs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf.
    pub key_file: PathBuf,
}

/// `[upstream_tls]`: what `protocol = "https"` routes trust and present. Every HTTPS
/// instance's certificate must be valid for the address it is registered at (IP or name).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsSection {
    /// PEM CA certificates instances' certificates must chain to (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// A client certificate presented to instances that ask (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Where instances come from: `signpost` (the agents at `addrs`, the default), `dns` (the
    /// DNS server at `resolver`, see `[registry.dns]`) or `env` (the gateway's environment, as
    /// Kubernetes injects it). `dns` and `env` carry no metadata: `routes_from_metadata` is
    /// ignored with them.
    pub kind: RegistryKind,
    /// The DNS server `kind = "dns"` asks (`ip:port`, e.g. `127.0.0.1:8600`).
    pub resolver: Option<SocketAddr>,
    /// How `kind = "dns"` turns a service into a query.
    pub dns: DnsSection,
    /// Signpost agents (`host:port`, `http://host:port` or `https://host:port`); the first
    /// that answers is used.
    pub addrs: Vec<String>,
    /// ACL token the gateway presents to the agents (`X-Consul-Token`); it needs
    /// `service:read` on the services it routes to. Never logged.
    pub token: Option<Secret>,
    /// PEM CA certificates `https://` agents must chain to (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// A client certificate presented to agents that require one (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Route services whose instances declare `gateway.prefix` in their metadata (see
    /// [`crate::metadata`]). The gateway then follows every service in the catalog.
    pub routes_from_metadata: bool,
    /// Persist each followed service's last instance list here, so a gateway that starts while
    /// the registry is down still routes.
    pub cache_dir: Option<PathBuf>,
    /// The prefixes a registry route may claim (each one or below it, on whole segments).
    /// Unset: a service may claim `/<its name>` or below it. See [`crate::guard`].
    pub metadata_prefixes: Option<Vec<String>>,
    /// Instance addresses the gateway never forwards to (such instances are left out of
    /// selection, and host names resolving into these ranges are not dialled). Default: the
    /// link-local ranges `169.254.0.0/16` and `fe80::/10`, where cloud metadata services live.
    pub deny_cidrs: Vec<ipnet::IpNet>,
}

/// A secret read from the config file (a token): its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl RegistrySection {
    /// The SDK's TLS settings for the agents.
    pub fn tls(&self) -> signpost_client::registry::ClientTls {
        signpost_client::registry::ClientTls {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            skip_verify: false,
        }
    }
}

/// `[defaults]`: the settings of a route that does not name them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteDefaults {
    /// `round_robin`, `random`, `weighted_random`, `smooth_weighted`, `least_outstanding`,
    /// `peak_ewma` or `consistent_hash`.
    pub balancer: String,
    /// Time from sending a request until the upstream's response headers arrive (504 after).
    pub timeout: Dur,
    /// Time to establish a TCP connection to an instance.
    pub connect_timeout: Dur,
    /// Remove the route's prefix from the path sent upstream.
    pub strip_prefix: bool,
    /// `http1`, `h2c` (HTTP/2 over cleartext, prior knowledge) or `https` (HTTP/1.1 over
    /// TLS, see `[upstream_tls]`).
    pub protocol: String,
    /// Retries.
    pub retry: RetryConfig,
}

/// `retry` tables: which failed attempts are tried again on another instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1: no retries).
    pub attempts: u32,
    /// Upstream statuses retried (idempotent requests without a body only).
    pub statuses: Vec<u16>,
    /// Retry timeouts too (idempotent requests without a body only).
    pub timeouts: bool,
    /// Backoff before the first retry; doubles per retry, at most 1 s, with jitter.
    pub backoff: Dur,
}

/// A `[route.retry]` table: each key overrides `[defaults.retry]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryOverride {
    /// See [`RetryConfig::attempts`].
    pub attempts: Option<u32>,
    /// See [`RetryConfig::statuses`].
    pub statuses: Option<Vec<u16>>,
    /// See [`RetryConfig::timeouts`].
    pub timeouts: Option<bool>,
    /// See [`RetryConfig::backoff`].
    pub backoff: Option<Dur>,
}

/// `[upstream]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// Idle keep-alive connections kept per instance.
    pub max_idle_per_instance: usize,
    /// Idle connections are closed after between half and all of this.
    pub idle_timeout: Dur,
}

/// `[limits]`: how long a client connection may take and hold, so that no client can keep
/// connections (file descriptors, memory) open for free.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// A request head must arrive within this. HTTP/1.1: from the moment the connection is
    /// ready for a request (accepted, or the previous response sent) until the head is
    /// complete, so an idle HTTP/1.1 keep-alive connection also closes after it; any
    /// connection: its first request must start within it (a stalled protocol preface too).
    pub header_timeout: Dur,
    /// A connection on which no request starts is closed after between half and all of
    /// this (HTTP/2 connections, and any connection the head timer does not cover); the
    /// request in progress, if any, is finished first.
    pub idle_timeout: Dur,
    /// Upgraded (WebSocket) connections open at once; an upgrade request beyond it is
    /// answered 503 `upgrade_limit` (0: upgrades refused).
    pub max_upgraded: usize,
    /// An upgraded connection with no byte in either direction for this long is closed.
    pub upgrade_idle_timeout: Dur,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            header_timeout: Dur::from_secs(10),
            idle_timeout: Dur::from_secs(60),
            max_upgraded: 10_000,
            upgrade_idle_timeout: Dur::from_secs(300),
        }
    }
}

/// `[auto_routes]`: `<prefix>/<service>/rest` goes to `<service>` as `/rest`, for every
/// service the registry lists for the gateway's token, without a route per service (see the
/// README's "Routes by service name").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoRoutesSection {
    /// The path prefix the service name follows (e.g. `/svc`); unset: no auto routes.
    pub prefix: Option<String>,
    /// At most this many services are followed because a request named them; a request for
    /// one more is answered 503 `auto_route_limit`.
    pub max_services: usize,
}

impl Default for AutoRoutesSection {
    fn default() -> Self {
        AutoRoutesSection {
            prefix: None,
            max_services: 1000,
        }
    }
}

/// `[breaker]`: see `signpost_client::breaker::BreakerConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Open after this many failures in a row (0: never on this rule).
    pub consecutive_failures: u32,
    /// Open when this share of the window's results failed (above 1: never on this rule).
    pub failure_ratio: f64,
    /// The rolling window of the ratio rule.
    pub window: Dur,
    /// The ratio rule needs this many results in the window.
    pub min_requests: u32,
    /// How long an open breaker rejects before letting a probe through.
    pub cool_down: Dur,
}

/// `[outlier]`: see `signpost_client::breaker::OutlierConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierSection {
    /// Eject after this many 5xx / connect failures / timeouts in a row (0: never).
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection: Dur,
    /// The longest ejection.
    pub max_ejection: Dur,
    /// At most this share of a service's instances is ejected at once, in percent.
    pub max_ejection_percent: u8,
}

/// `[retry_budget]`: see `signpost_client::retry::RetryBudget`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSection {
    /// Retries allowed per request over `ttl` (0.2: at most 20 % extra traffic).
    pub ratio: f64,
    /// Retries per second always allowed, so a quiet route can retry at all.
    pub min_per_sec: u32,
    /// How long a request's deposit counts.
    pub ttl: Dur,
}

/// One `[[route]]`. Unset keys come from `[defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// The route's name in metrics, logs and the admin API (default: `host` + `prefix`).
    pub name: Option<String>,
    /// Path prefix, matched on whole segments (`/api` matches `/api` and `/api/x`, not
    /// `/apix`); the longest matching prefix wins.
    pub prefix: String,
    /// Only requests for this host (`Host` header, port ignored; `*.example.com` matches any
    /// subdomain). Host routes win over host-less routes of the same prefix.
    pub host: Option<String>,
    /// The service in the registry.
    pub service: String,
    /// See [`RouteDefaults::strip_prefix`].
    pub strip_prefix: Option<bool>,
    /// See [`RouteDefaults::balancer`].
    pub balancer: Option<String>,
    /// For `consistent_hash`: `client_ip` (default), `path`, or `header:<name>`.
    pub hash_on: Option<String>,
    /// See [`RouteDefaults::timeout`].
    pub timeout: Option<Dur>,
    /// See [`RouteDefaults::connect_timeout`].
    pub connect_timeout: Option<Dur>,
    /// Only instances carrying this tag.
    pub tag: Option<String>,
    /// See [`RouteDefaults::protocol`].
    pub protocol: Option<String>,
    /// Overrides of `[defaults.retry]`.
    pub retry: RetryOverride,
    /// Compress responses with these encodings (`zstd`, `br`, `gzip`), in order of preference,
    /// when the client accepts one; off when empty (the default). See [`crate::compress`].
    pub compress: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            workers: 0,
            access_log: true,
            trust_forwarded_headers: false,
            shutdown_grace: Dur::from_secs(10),
            tls: None,
            upstream_tls: UpstreamTlsSection::default(),
            registry: RegistrySection::default(),
            defaults: RouteDefaults::default(),
            upstream: UpstreamSection::default(),
            breaker: BreakerSection::default(),
            outlier: OutlierSection::default(),
            retry_budget: BudgetSection::default(),
            limits: LimitsSection::default(),
            auto_routes: AutoRoutesSection::default(),
            log: signpost_telemetry::LogSection::default(),
            telemetry: signpost_telemetry::TelemetrySection::default(),
            routes: Vec::new(),
        }
    }
}

impl Default for RegistrySection {
    fn default() -> Self {
        RegistrySection {
            kind: RegistryKind::default(),
            resolver: None,
            dns: DnsSection::default(),
            addrs: vec!["127.0.0.1:8500".to_string()],
            token: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            routes_from_metadata: true,
            cache_dir: None,
            metadata_prefixes: None,
            deny_cidrs: signpost_core::cidr::default_deny(),
        }
    }
}

impl Default for RouteDefaults {
    fn default() -> Self {
        RouteDefaults {
            balancer: "round_robin".to_string(),
            timeout: Dur::from_secs(30),
            connect_timeout: Dur::from_secs(2),
            strip_prefix: false,
            protocol: "http1".to_string(),
            retry: RetryConfig::default(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 2,
            statuses: vec![502, 503, 504],
            timeouts: false,
            backoff: Dur::from_millis(25),
        }
    }
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            max_idle_per_instance: 256,
            idle_timeout: Dur::from_secs(60),
        }
    }
}

impl Default for BreakerSection {
    fn default() -> Self {
        let sdk = signpost_client::breaker::BreakerConfig::default();
        BreakerSection {
            consecutive_failures: sdk.consecutive_failures,
            failure_ratio: sdk.failure_ratio,
            window: dur(sdk.window),
            min_requests: sdk.min_requests,
            cool_down: dur(sdk.cool_down),
        }
    }
}

impl Default for OutlierSection {
    fn default() -> Self {
        OutlierSection {
            consecutive_failures: 5,
            base_ejection: Dur::from_secs(30),
            max_ejection: Dur::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl Default for BudgetSection {
    fn default() -> Self {
        BudgetSection {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Dur::from_secs(10),
        }
    }
}

fn dur(d: Duration) -> Dur {
    Dur(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl GatewayConfig {
    /// Reads and parses a TOML file (not yet validated: see [`GatewayConfig::validate`]).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses TOML text.
    ///
    /// ```
    /// let config = signpost_gateway::GatewayConfig::from_toml(r#"
    ///     [[route]]
    ///     prefix = "/users"
    ///     service = "users"
    /// "#).unwrap();
    /// assert_eq!(config.routes[0].service, "users");
    /// assert!(config.validate().is_ok());
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, TomlError> {
        Ok(toml::from_str(text)?)
    }

    /// The number of worker threads `workers` asks for (0: one per core).
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }

    /// Checks that the settings hang together; the error lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        problems.extend(discovery::check(&self.registry));
        if self.registry.cert_file.is_some() != self.registry.key_file.is_some() {
            problems.push(Problem::RegistryHalfIdentity);
        }
        for (index, prefix) in self.registry.metadata_prefixes.iter().flatten().enumerate() {
            if let Err(problem) = check_prefix(prefix) {
                problems.push(Problem::MetadataPrefix { index, problem });
            }
        }
        if self.workers > 1024 {
            problems.push(Problem::Workers(self.workers));
        }
        if self.upstream.idle_timeout.as_millis() == 0 {
            problems.push(Problem::IdleTimeout);
        }
        for (key, value) in [
            ("header_timeout", self.limits.header_timeout),
            ("idle_timeout", self.limits.idle_timeout),
            ("upgrade_idle_timeout", self.limits.upgrade_idle_timeout),
        ] {
            if value.as_millis() == 0 {
                problems.push(Problem::ZeroLimit(key));
            }
        }
        if let Some(prefix) = &self.auto_routes.prefix {
            if let Err(problem) = check_prefix(prefix) {
                problems.push(Problem::AutoRoutesPrefix(problem));
            }
            if self.auto_routes.max_services == 0 {
                problems.push(Problem::AutoRoutesMax);
            }
        }
        if self.outlier.max_ejection_percent > 100 {
            problems.push(Problem::MaxEjectionPercent(
                self.outlier.max_ejection_percent,
            ));
        }
        if !(self.retry_budget.ratio >= 0.0 && self.retry_budget.ratio.is_finite()) {
            problems.push(Problem::BudgetRatio);
        }
        if let Err(e) = self.telemetry.validate() {
            problems.push(Problem::Telemetry(e));
        }
        if self.retry_budget.ttl.as_millis() == 0 {
            problems.push(Problem::BudgetTtl);
        }
        if self.breaker.failure_ratio.is_nan() || self.breaker.failure_ratio <= 0.0 {
            problems.push(Problem::FailureRatio);
        }
        if let Err(e) = self.defaults_spec_check() {
            problems.push(Problem::Defaults(e));
        }
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            match self.route_spec(route) {
                Ok(spec) => {
                    if !seen.insert((spec.host.clone(), spec.prefix.clone())) {
                        problems.push(Problem::DuplicateRoute {
                            index: i,
                            host: spec.host.clone(),
                            prefix: spec.prefix.clone(),
                        });
                    } else if !names.insert(spec.name.clone()) {
                        problems.push(Problem::DuplicateName {
                            index: i,
                            name: spec.name.clone(),
                        });
                    }
                }
                Err(errors) => problems.extend(
                    errors
                        .into_iter()
                        .map(|problem| Problem::Route { index: i, problem }),
                ),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn defaults_spec_check(&self) -> Result<(), Vec<DefaultsProblem>> {
        let d = &self.defaults;
        let mut errors = Vec::new();
        if let Err(problem) = parse_balancer(&d.balancer, None) {
            errors.push(DefaultsProblem::Key {
                key: "balancer",
                problem,
            });
        }
        if let Err(problem) = parse_protocol(&d.protocol) {
            errors.push(DefaultsProblem::Key {
                key: "protocol",
                problem,
            });
        }
        if d.timeout.as_millis() == 0 {
            errors.push(DefaultsProblem::Named(ValueError::ZeroTimeout));
        }
        if d.connect_timeout.as_millis() == 0 {
            errors.push(DefaultsProblem::Named(ValueError::ZeroConnectTimeout));
        }
        if let Err(e) = check_retry(&self.retry_spec(&RetryOverride::default())) {
            errors.push(DefaultsProblem::Named(ValueError::Retry(e)));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The retry settings of a route: its overrides over `[defaults.retry]`.
    pub(crate) fn retry_spec(&self, o: &RetryOverride) -> RetrySpec {
        let d = &self.defaults.retry;
        RetrySpec {
            attempts: o.attempts.unwrap_or(d.attempts),
            statuses: o.statuses.clone().unwrap_or_else(|| d.statuses.clone()),
            timeouts: o.timeouts.unwrap_or(d.timeouts),
            backoff: o.backoff.unwrap_or(d.backoff).to_std(),
        }
    }

    /// Resolves a configured route against `[defaults]`, or says everything wrong with it.
    pub fn route_spec(&self, r: &RouteConfig) -> Result<RouteSpec, Vec<ValueError>> {
        let d = &self.defaults;
        let mut errors = Vec::new();
        if let Err(e) = check_prefix(&r.prefix) {
            errors.push(e);
        }
        let host = match r.host.as_deref().map(normalize_host).transpose() {
            Ok(h) => h,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if let Err(e) = check_service(&r.service) {
            errors.push(e);
        }
        let balancer = r.balancer.as_deref().unwrap_or(&d.balancer);
        let balancer = match parse_balancer(balancer, r.hash_on.as_deref()) {
            Ok(b) => b,
            Err(e) => {
                errors.push(e);
                BalancerKind::RoundRobin
            }
        };
        let protocol = match parse_protocol(r.protocol.as_deref().unwrap_or(&d.protocol)) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                Protocol::Http1
            }
        };
        let timeout = r.timeout.unwrap_or(d.timeout);
        if timeout.as_millis() == 0 {
            errors.push(ValueError::ZeroTimeout);
        }
        let connect_timeout = r.connect_timeout.unwrap_or(d.connect_timeout);
        if connect_timeout.as_millis() == 0 {
            errors.push(ValueError::ZeroConnectTimeout);
        }
        if let Some(tag) = &r.tag {
            if tag.is_empty() {
                errors.push(ValueError::EmptyTag);
            }
        }
        let retry = self.retry_spec(&r.retry);
        if let Err(e) = check_retry(&retry) {
            errors.push(ValueError::Retry(e));
        }
        let mut compress = Vec::new();
        for token in &r.compress {
            match crate::compress::Encoding::parse(token) {
                Some(e) if !compress.contains(&e) => compress.push(e),
                _ => errors.push(ValueError::Compress(token.clone())),
            }
        }
        if let Some(name) = &r.name {
            if name.is_empty() || name.len() > 128 {
                errors.push(ValueError::Name);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| crate::route::default_name(host.as_deref(), &r.prefix));
        Ok(RouteSpec {
            name,
            host,
            prefix: r.prefix.clone(),
            service: r.service.clone(),
            strip_prefix: r.strip_prefix.unwrap_or(d.strip_prefix),
            balancer,
            timeout: timeout.to_std(),
            connect_timeout: connect_timeout.to_std(),
            retry,
            tag: r.tag.clone(),
            protocol,
            source: RouteSource::Config,
            compress,
        })
    }
}

/// A prefix starts with `/` and is plain: no query, no fragment, no `//`, no dot segments.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ValueError> {
    if !prefix.starts_with('/') {
        return Err(ValueError::PrefixNotAbsolute(prefix.to_string()));
    }
    if prefix.len() > 1024 {
        return Err(ValueError::PrefixTooLong);
    }
    if prefix
        .bytes()
        .any(|b| b == b'?' || b == b'#' || b.is_ascii_whitespace() || b.is_ascii_control())
        || prefix.contains("//")
        || prefix.split('/').any(|s| s == "." || s == "..")
    {
        return Err(ValueError::PrefixNotPlain(prefix.to_string()));
    }
    Ok(())
}

/// Lower-cases a host pattern and checks it: DNS characters, an optional leading `*.`.
pub(crate) fn normalize_host(host: &str) -> Result<String, ValueError> {
    let h = host.trim().to_ascii_lowercase();
    let bare = h.strip_prefix("*.").unwrap_or(&h);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !bare.starts_with('.')
        && !bare.ends_with('.');
    if ok {
        Ok(h)
    } else {
        Err(ValueError::Host(host.to_string()))
    }
}

pub(crate) fn check_service(service: &str) -> Result<(), ValueError> {
    let ok = !service.is_empty()
        && service.len() <= 63
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValueError::Service(service.to_string()))
    }
}

fn check_retry(r: &RetrySpec) -> Result<(), RetryError> {
    if !(1..=10).contains(&r.attempts) {
        return Err(RetryError::Attempts(r.attempts));
    }
    if let Some(s) = r.statuses.iter().find(|s| !(500..=599).contains(*s)) {
        return Err(RetryError::Status(*s));
    }
    Ok(())
}

/// Parses a balancer name (and, for consistent hashing, what to hash).
pub(crate) fn parse_balancer(
    name: &str,
    hash_on: Option<&str>,
) -> Result<BalancerKind, ValueError> {
    let kind = match name {
        "round_robin" => BalancerKind::RoundRobin,
        "random" => BalancerKind::Random,
        "weighted_random" => BalancerKind::WeightedRandom,
        "smooth_weighted" => BalancerKind::SmoothWeighted,
        "least_outstanding" => BalancerKind::LeastOutstanding,
        "peak_ewma" => BalancerKind::PeakEwma,
        "consistent_hash" => {
            let on = match hash_on.unwrap_or("client_ip") {
                "client_ip" => HashOn::ClientIp,
                "path" => HashOn::Path,
                other => match other.strip_prefix("header:") {
                    Some(h) => HashOn::Header(
                        http::HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| ValueError::HashHeader(h.to_string()))?,
                    ),
                    None => return Err(ValueError::HashOn(other.to_string())),
                },
            };
            return Ok(BalancerKind::ConsistentHash(on));
        }
        other => return Err(ValueError::UnknownBalancer(other.to_string())),
    };
    if hash_on.is_some() {
        return Err(ValueError::HashOnWithoutConsistentHash);
    }
    Ok(kind)
}

pub(crate) fn parse_protocol(p: &str) -> Result<Protocol, ValueError> {
    match p {
        "http1" => Ok(Protocol::Http1),
        "h2c" => Ok(Protocol::H2c),
        "https" => Ok(Protocol::Https),
        other => Err(ValueError::Protocol(other.to_string())),
    }
}

#[cfg(test)]
mod tests;

pub(crate) mod discovery;
