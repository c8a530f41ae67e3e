//! Agent configuration: a typed TOML file, overridden by command-line flags, validated at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use signpost_core::model::Dur;
use thiserror::Error;

/// Why the configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The agent's settings. Every field has a default; a file only names what it changes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Keep everything in memory; no data dir.
    pub dev: bool,
    /// Where the durable state lives (required unless `dev`).
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API.
    pub http_addr: SocketAddr,
    /// This agent's Raft node id (≥ 1).
    pub node_id: u64,
    /// Name this node reports (defaults to `signpost-<node_id>`).
    pub node_name: Option<String>,
    /// Datacenter this agent belongs to.
    pub datacenter: String,
    /// HTTP addresses of cluster members to ask for admission when this agent starts fresh.
    /// Empty: a fresh agent starts a cluster of its own.
    pub join: Vec<String>,
    pub health: HealthConfig,
    pub raft: RaftConfig,
    pub dns: DnsSettings,
    /// What members present to each other (`[cluster]`).
    pub cluster: ClusterSettings,
    /// Per-client limits on the HTTP API (`[limits]`).
    pub limits: LimitsConfig,
    /// HTTPS on the agent's listeners and between members (`[tls]`).
    pub tls: TlsSettings,
    /// Access control (off by default).
    pub acl: AclSettings,
    /// The audit log of writes (off by default).
    pub audit: AuditSettings,
    /// `[log]`: text or JSON lines (`--log-format` overrides it).
    pub log: signpost_telemetry::LogSection,
    /// `[telemetry]`: OpenTelemetry trace export (off unless an OTLP endpoint is set).
    pub telemetry: signpost_telemetry::TelemetrySection,
    /// What the agent does when its storage or Raft stops (`[storage]`).
    pub storage: StorageSettings,
}

/// `[storage]`: how the agent fails when its storage (or Raft, which stops after a storage
/// error such as a full disk) stops.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// How long the agent stays up, reporting itself unhealthy (`/health` 503, reads 503,
    /// `/v1/status/leader` empty), after Raft or storage stopped, before it exits with status 1
    /// so that a supervisor restarts it.
    pub fatal_exit_after: Dur,
    /// Bytes of memory redb may keep as its page cache (default 64 MiB). redb's own default
    /// (1 GiB) let the cache grow with the log and snapshots to several hundred bytes per
    /// registered instance; the state the agent serves is in memory anyway.
    pub cache_size: u64,
}

/// The default `[storage] cache_size`: 64 MiB.
pub const DEFAULT_CACHE_SIZE: u64 = 64 * 1024 * 1024;

/// The least `[storage] cache_size` accepted: 1 MiB (redb needs room for a few pages of each
/// table it touches in one transaction).
pub const MIN_CACHE_SIZE: u64 = 1024 * 1024;

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            fatal_exit_after: Dur(30_000),
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }
}

/// `[tls]`: with a certificate and key the HTTP listener speaks HTTPS only, members dial each
/// other over TLS and the Raft listener requires their client certificates (signed by
/// `ca_file`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain of this agent (leaf first); also its client certificate towards
    /// other members.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA that signs the members' (and, with `verify_incoming`, the clients')
    /// certificates; members trust each other through it.
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `ca_file` on the HTTP API too (mTLS).
    pub verify_incoming: bool,
}

impl TlsSettings {
    /// Whether TLS is on (a certificate and key are given).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// The HTTP listener's TLS, if on.
    pub fn http(&self) -> Option<signpost_tls::ServerTls> {
        Some(signpost_tls::ServerTls {
            cert_file: self.cert_file.clone()?,
            key_file: self.key_file.clone()?,
            ca_file: self.ca_file.clone(),
            verify_incoming: self.verify_incoming,
        })
    }

    /// The Raft listener's TLS, if on: client certificates always required.
    pub fn raft(&self) -> Option<signpost_tls::ServerTls> {
        Some(signpost_tls::ServerTls {
            verify_incoming: true,
            ..self.http()?
        })
    }

    /// What this agent trusts and presents when it calls other members, if TLS is on.
    pub fn member_client(&self) -> Option<signpost_tls::ClientTls> {
        self.enabled().then(|| signpost_tls::ClientTls {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            skip_verify: false,
        })
    }
}

/// Fewest bytes a cluster secret may have.
pub const MIN_SECRET_LEN: usize = 32;

/// How members authenticate each other when TLS is not configured.
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Shared secret every member call (`/raft/*`) must carry, at least [`MIN_SECRET_LEN`]
    /// bytes. Unset: member calls are not authenticated (TLS aside).
    pub secret: Option<String>,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Limits that keep one client (one IP address) from hurting the others.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most open HTTP connections from one client address; more are closed at accept
    /// (0: no limit). Consul's default.
    pub http_max_conns_per_client: usize,
    /// Requests per second one client address may make (token bucket); 0: no limit.
    pub http_request_rate: f64,
    /// The bucket's size: requests a client may make at once after being idle (default: the
    /// rate, at least 1).
    pub http_request_burst: Option<f64>,
    /// Most blocking queries and watch streams one client address may hold open (0: no limit).
    pub max_blocking_per_client: usize,
    /// How long a client has to send a whole request head (and to finish a TLS handshake).
    pub http_header_timeout: Dur,
    // -- listener limits (crate::listener): every HTTP listener, the Raft listener included --
    /// How long a keep-alive connection may sit between requests before it is closed.
    pub http_idle_timeout: Dur,
    /// How long a client has to send a whole request body, counted from its request head;
    /// over it the request is answered 408.
    pub http_body_timeout: Dur,
    /// Most connections one listener serves at once (0: no limit). Over it the listener stops
    /// accepting: new connections wait in the kernel's backlog until one closes.
    pub http_max_conns: usize,
    /// Most services (with instances or a definition); the state machine refuses more (429
    /// naming the limit). This and the next five bound the replicated state: every member
    /// must be configured alike.
    pub max_services: usize,
    /// Most instances across all services.
    pub max_instances: usize,
    /// Most instances of one service.
    pub max_instances_per_service: usize,
    /// Most live KV keys.
    pub max_kv_keys: usize,
    /// Most bytes of KV keys and values together.
    pub max_kv_bytes: usize,
    /// How long a deleted key's tombstone is kept, so blocking queries still see the delete.
    pub kv_tombstone_ttl: Dur,
    /// Largest single write (its command, encoded), as etcd's `--max-request-bytes`; a larger
    /// one is refused with 413.
    pub max_entry_bytes: usize,
}

impl LimitsConfig {
    /// The bounds the registry enforces.
    pub fn state(&self) -> signpost_core::limits::Limits {
        let s = self;
        signpost_core::limits::Limits {
            max_services: s.max_services,
            max_instances: s.max_instances,
            max_instances_per_service: s.max_instances_per_service,
            max_kv_keys: s.max_kv_keys,
            max_kv_bytes: s.max_kv_bytes,
            kv_tombstone_ttl_ms: s.kv_tombstone_ttl.as_millis(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            http_max_conns_per_client: 200,
            http_request_rate: 0.0,
            http_request_burst: None,
            max_blocking_per_client: 256,
            http_header_timeout: Dur(10_000),
            http_idle_timeout: Dur(60_000),
            http_body_timeout: Dur(30_000),
            http_max_conns: 4096,
            max_services: 10_000,
            max_instances: 250_000,
            max_instances_per_service: 50_000,
            max_kv_keys: 100_000,
            max_kv_bytes: 256 * 1024 * 1024,
            kv_tombstone_ttl: Dur(15 * 60 * 1000),
            max_entry_bytes: 1536 * 1024,
        }
    }
}

/// ACL settings: `[acl]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclSettings {
    /// Check every request's token; off, every request may do everything (as before ACLs).
    pub enabled: bool,
    /// What decides when no rule of a token matches.
    pub default_policy: signpost_core::acl::DefaultPolicy,
    /// A management token created at start (idempotently, through Raft) with this secret.
    pub initial_management_token: Option<String>,
    /// The token whose rights DNS answers use; without it, the anonymous token's.
    pub dns_token: Option<String>,
}

impl Default for AclSettings {
    fn default() -> Self {
        AclSettings {
            enabled: false,
            default_policy: signpost_core::acl::DefaultPolicy::Deny,
            initial_management_token: None,
            dns_token: None,
        }
    }
}

/// Audit log settings: `[audit]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// The file each audited write is appended to, one JSON line each; unset, only the
    /// `signpost::audit` tracing target gets them.
    pub path: Option<PathBuf>,
}

/// The DNS interface's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSettings {
    /// Serve DNS at all.
    pub enabled: bool,
    /// UDP and TCP address of the DNS interface.
    pub addr: SocketAddr,
    /// The zone served (`consul.` so Consul's tools work unchanged).
    pub domain: String,
    /// TTL of every record, in seconds.
    pub ttl: u32,
    /// Most answer records in one UDP response (0: only the 512-byte/EDNS size limit). 3 by
    /// default, as Consul: a small query cannot draw a large answer; a cut answer carries the
    /// TC bit and the client can ask again over TCP.
    pub udp_answer_limit: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 8600)),
            domain: "consul.".to_string(),
            ttl: 0,
            udp_answer_limit: 3,
        }
    }
}

/// Health-checking settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Share of TTL instances whose expiry within one window engages the mass-eviction guard.
    pub guard_threshold: f64,
    /// The guard's window.
    pub guard_window: Dur,
    /// Fewer TTL instances than this never engage the guard.
    pub guard_min_instances: usize,
    /// How often TTL deadlines and `deregister_after` are checked.
    pub tick: Dur,
    /// Addresses an HTTP, TCP or gRPC check may never reach (default: the link-local ranges
    /// `169.254.0.0/16` and `fe80::/10`, where cloud metadata services live). Wins over
    /// `check_allow_cidrs`. See [`crate::health::targets`].
    pub check_deny_cidrs: Vec<ipnet::IpNet>,
    /// When set, the only addresses a check may reach.
    pub check_allow_cidrs: Option<Vec<ipnet::IpNet>>,
    /// PEM CA certificates HTTPS and gRPC-over-TLS checks verify the checked service against
    /// (default: the system's roots). `tls_skip_verify` on a check skips verification.
    pub ca_file: Option<PathBuf>,
}

impl HealthConfig {
    /// The address policy checks are held to.
    pub fn check_policy(&self) -> signpost_core::cidr::AddressPolicy {
        signpost_core::cidr::AddressPolicy {
            deny: self.check_deny_cidrs.clone(),
            allow: self.check_allow_cidrs.clone(),
        }
    }
}

/// Raft timing and snapshot settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// A dedicated listener for Raft RPCs; unset, they share the HTTP port.
    pub addr: Option<SocketAddr>,
    /// The Raft address other members use to reach this one (default: the listening address).
    pub advertise_addr: Option<String>,
    pub heartbeat_interval: Dur,
    pub election_timeout_min: Dur,
    pub election_timeout_max: Dur,
    /// Take a snapshot after this many log entries.
    pub snapshot_every: u64,
}

/// Slices of `[election_timeout_min, election_timeout_max)`: see [`RaftConfig::election_timeouts`].
const ELECTION_SLOTS: u64 = 5;

impl RaftConfig {
    /// The election timeout range node `node_id` gives openraft, in milliseconds.
    ///
    /// openraft 0.9 draws a node's election timeout once, when the node starts, and a follower
    /// waits its leader lease (its `election_timeout_max`) plus that timeout before it stands. Two
    /// survivors whose draws happen to lie close together stand at the same moment, split the
    /// vote, and then collide again on every retry, since neither draws anew: that is what made
    /// some failovers take 3-4 s. So each node draws from its own fifth of the configured range,
    /// chosen by its id: nodes 1 to 5 never share a slice, and a node in a higher slice also
    /// waits a longer lease, so the survivors of a failure stand one after another, ~100 ms
    /// apart with the default timing. Ranges narrower than 50 ms are given whole.
    pub fn election_timeouts(&self, node_id: u64) -> (u64, u64) {
        let (min, max) = (
            self.election_timeout_min.as_millis(),
            self.election_timeout_max.as_millis(),
        );
        let width = (max - min) / ELECTION_SLOTS;
        if width < 10 {
            return (min, max);
        }
        let low = min + node_id.wrapping_sub(1) % ELECTION_SLOTS * width;
        (low, low + width)
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            dev: false,
            data_dir: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8500)),
            node_id: 1,
            node_name: None,
            datacenter: "dc1".to_string(),
            join: Vec::new(),
            health: HealthConfig::default(),
            raft: RaftConfig::default(),
            dns: DnsSettings::default(),
            cluster: ClusterSettings::default(),
            limits: LimitsConfig::default(),
            tls: TlsSettings::default(),
            acl: AclSettings::default(),
            audit: AuditSettings::default(),
            storage: StorageSettings::default(),
            log: signpost_telemetry::LogSection::default(),
            telemetry: signpost_telemetry::TelemetrySection::default(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        let guard = signpost_core::health::GuardConfig::default();
        HealthConfig {
            guard_threshold: guard.threshold,
            guard_window: Dur(guard.window_ms),
            guard_min_instances: guard.min_instances,
            tick: Dur(100),
            check_deny_cidrs: signpost_core::cidr::default_deny(),
            check_allow_cidrs: None,
            ca_file: None,
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            addr: None,
            advertise_addr: None,
            // openraft 0.9 lets a follower stand for election only after the leader's lease
            // (= election_timeout_max) plus its own random timeout has passed since the last
            // heartbeat, checked on a tick of 1.5 x heartbeat_interval: with these values a
            // dead leader is replaced after ~0.9-1.4 s. heartbeat_interval is also openraft's
            // timeout for one AppendEntries round trip (including the follower's fsync), so it
            // must not be much shorter than this.
            heartbeat_interval: Dur(100),
            election_timeout_min: Dur(300),
            election_timeout_max: Dur(600),
            snapshot_every: 10_000,
        }
    }
}

impl AgentConfig {
    /// Reads a TOML config file. Unknown keys and ill-typed values are errors.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.telemetry
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        match (self.dev, &self.data_dir) {
            (true, Some(dir)) => {
                return invalid(format!(
                    "dev mode keeps everything in memory; remove data_dir {}",
                    dir.display()
                ))
            }
            (false, None) => {
                return invalid(
                    "a data dir is required (--data-dir DIR), or run in memory with --dev".into(),
                )
            }
            _ => {}
        }
        if self.node_id == 0 {
            return invalid("node_id must be 1 or more".into());
        }
        if self.datacenter.is_empty() {
            return invalid("datacenter must not be empty".into());
        }
        let h = &self.health;
        if !(h.guard_threshold > 0.0 && h.guard_threshold <= 1.0) {
            return invalid(format!(
                "health.guard_threshold must be in (0, 1], got {}",
                h.guard_threshold
            ));
        }
        if h.tick.as_millis() < 10 {
            return invalid(format!("health.tick must be at least 10ms, got {}", h.tick));
        }
        if let Some(ca) = &h.ca_file {
            signpost_tls::roots(Some(ca))
                .map_err(|e| ConfigError::Invalid(format!("health.ca_file: {e}")))?;
        }
        let r = &self.raft;
        if r.heartbeat_interval.as_millis() == 0
            || r.election_timeout_min <= r.heartbeat_interval
            || r.election_timeout_max <= r.election_timeout_min
        {
            return invalid(format!(
                "raft timing must satisfy 0 < heartbeat_interval ({}) < election_timeout_min ({}) < election_timeout_max ({})",
                r.heartbeat_interval, r.election_timeout_min, r.election_timeout_max
            ));
        }
        if r.snapshot_every == 0 {
            return invalid("raft.snapshot_every must be 1 or more".into());
        }
        if let Some(addr) = &r.advertise_addr {
            crate::cluster::validate_member_addr(addr).map_err(|e| {
                ConfigError::Invalid(format!("raft.advertise_addr {addr:?}: {}", e.message))
            })?;
        }
        if let Some(secret) = &self.cluster.secret {
            if secret.len() < MIN_SECRET_LEN {
                return invalid(format!(
                    "cluster.secret must be at least {MIN_SECRET_LEN} bytes, got {}",
                    secret.len()
                ));
            }
            if http::HeaderValue::from_str(secret).is_err() {
                return invalid(
                    "cluster.secret must be printable ASCII (it travels in an HTTP header)".into(),
                );
            }
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return invalid("tls: cert_file and key_file go together; give both".into());
        }
        if !t.enabled() && (t.ca_file.is_some() || t.verify_incoming) {
            return invalid(
                "tls: ca_file and verify_incoming need cert_file and key_file (the agent's own certificate)"
                    .into(),
            );
        }
        if t.verify_incoming && t.ca_file.is_none() {
            return invalid(
                "tls.verify_incoming needs tls.ca_file: the CA that signs the clients' certificates"
                    .into(),
            );
        }
        if t.enabled() && t.ca_file.is_none() && (r.addr.is_some() || !self.join.is_empty()) {
            return invalid(
                "tls.ca_file is required in a cluster: members present certificates signed by it"
                    .into(),
            );
        }
        if t.ca_file.is_some() && r.addr.is_none() && !t.verify_incoming {
            return invalid(
                "tls: members authenticate with client certificates; give them a Raft listener \
                 of their own (raft.addr, --raft-addr) or set tls.verify_incoming = true"
                    .into(),
            );
        }
        let l = &self.limits;
        if !(l.http_request_rate >= 0.0 && l.http_request_rate.is_finite()) {
            return invalid(format!(
                "limits.http_request_rate must be 0 (off) or a positive number, got {}",
                l.http_request_rate
            ));
        }
        if let Some(burst) = l.http_request_burst {
            if !(burst >= 1.0 && burst.is_finite()) {
                return invalid(format!(
                    "limits.http_request_burst must be at least 1, got {burst}"
                ));
            }
        }
        for (key, value) in [
            ("limits.http_header_timeout", l.http_header_timeout),
            ("limits.http_idle_timeout", l.http_idle_timeout),
            ("limits.http_body_timeout", l.http_body_timeout),
            ("storage.fatal_exit_after", self.storage.fatal_exit_after),
        ] {
            if value.as_millis() == 0 {
                return invalid(format!("{key} must be more than 0"));
            }
        }
        if self.storage.cache_size < MIN_CACHE_SIZE {
            return invalid(format!(
                "storage.cache_size must be at least {MIN_CACHE_SIZE} bytes (1 MiB), got {}",
                self.storage.cache_size
            ));
        }
        let st = l;
        for (key, n) in [
            ("max_services", st.max_services),
            ("max_instances", st.max_instances),
            ("max_instances_per_service", st.max_instances_per_service),
            ("max_kv_keys", st.max_kv_keys),
            ("max_kv_bytes", st.max_kv_bytes),
            ("max_entry_bytes", st.max_entry_bytes),
        ] {
            if n == 0 {
                return invalid(format!("limits.{key} must be at least 1"));
            }
        }
        if st.max_entry_bytes > crate::http::raft::MAX_RAFT_BODY / 2 {
            return invalid(format!(
                "limits.max_entry_bytes must be at most {} (half the member body limit)",
                crate::http::raft::MAX_RAFT_BODY / 2
            ));
        }
        for (key, secret) in [
            (
                "acl.initial_management_token",
                &self.acl.initial_management_token,
            ),
            ("acl.dns_token", &self.acl.dns_token),
        ] {
            if secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return invalid(format!("{key} must not be empty"));
            }
        }
        if self.dns.enabled {
            self.dns_config(self.http_addr.ip())
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("dns: {e}")))?;
        }
        Ok(())
    }

    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .unwrap_or_else(|| format!("signpost-{}", self.node_id))
    }

    /// The DNS interface's settings, answering `node_addr` for this node.
    pub fn dns_config(&self, node_addr: std::net::IpAddr) -> crate::dns::DnsConfig {
        crate::dns::DnsConfig {
            domain: self.dns.domain.clone(),
            ttl: self.dns.ttl,
            node_name: self.node_name(),
            node_addr,
            udp_answer_limit: self.dns.udp_answer_limit,
        }
    }

    pub fn guard(&self) -> signpost_core::health::GuardConfig {
        signpost_core::health::GuardConfig {
            threshold: self.health.guard_threshold,
            window_ms: self.health.guard_window.as_millis(),
            min_instances: self.health.guard_min_instances,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nodes_draw_election_timeouts_from_their_own_slices() {
        let raft = super::RaftConfig::default();
        let (min, max) = (
            raft.election_timeout_min.as_millis(),
            raft.election_timeout_max.as_millis(),
        );
        let slices: Vec<(u64, u64)> = (1..=5).map(|id| raft.election_timeouts(id)).collect();
        for (i, &(low, high)) in slices.iter().enumerate() {
            assert!(min <= low && low < high && high <= max, "{slices:?}");
            for &(other_low, other_high) in &slices[i + 1..] {
                assert!(
                    high <= other_low || other_high <= low,
                    "overlap: {slices:?}"
                );
            }
        }
        assert_eq!(
            raft.election_timeouts(6),
            slices[0],
            "ids wrap around the slices"
        );
        let narrow = super::RaftConfig {
            election_timeout_min: super::Dur(300),
            election_timeout_max: super::Dur(320),
            ..raft
        };
        assert_eq!(narrow.election_timeouts(3), (300, 320));
    }

    use super::*;

    #[test]
    fn a_full_file_parses() {
        let c = AgentConfig::from_toml(
            r#"
            data_dir = "/var/lib/signpost"
            http_addr = "0.0.0.0:9500"
            node_id = 3
            [health]
            guard_threshold = 0.8
            guard_window = "2m"
            [raft]
            snapshot_every = 500
            [dns]
            addr = "127.0.0.1:8653"
            domain = "signpost."
            ttl = 5
            "#,
        )
        .unwrap();
        assert_eq!(c.http_addr.port(), 9500);
        assert_eq!(c.node_id, 3);
        assert_eq!(c.health.guard_window, Dur(120_000));
        assert_eq!(c.raft.snapshot_every, 500);
        assert_eq!(
            (c.dns.addr.port(), c.dns.domain.as_str(), c.dns.ttl),
            (8653, "signpost.", 5)
        );
        assert_eq!(
            c.raft.heartbeat_interval,
            RaftConfig::default().heartbeat_interval
        );
        c.validate().unwrap();
    }

    #[test]
    fn acl_and_audit_sections_parse_and_are_off_by_default() {
        let c = AgentConfig::default();
        assert!(!c.acl.enabled);
        assert_eq!(c.audit.path, None);
        let c = AgentConfig::from_toml(
            r#"
            [acl]
            enabled = true
            default_policy = "allow"
            initial_management_token = "root"
            dns_token = "dns"
            [audit]
            path = "/var/log/signpost-audit.jsonl"
            "#,
        )
        .unwrap();
        assert!(c.acl.enabled);
        assert_eq!(
            c.acl.default_policy,
            signpost_core::acl::DefaultPolicy::Allow
        );
        assert_eq!(c.acl.initial_management_token.as_deref(), Some("root"));
        assert_eq!(c.acl.dns_token.as_deref(), Some("dns"));
        assert_eq!(
            c.audit.path.as_deref(),
            Some(Path::new("/var/log/signpost-audit.jsonl"))
        );
        let enabled = AgentConfig::from_toml("[acl]\nenabled = true").unwrap();
        assert_eq!(
            enabled.acl.default_policy,
            signpost_core::acl::DefaultPolicy::Deny
        );
        let err = AgentConfig::from_toml("[acl]\ndefault_policy = \"maybe\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("maybe"), "{err}");
        let err = AgentConfig::from_toml("[acl]\nenable = true")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `enable`"), "{err}");
        let mut c = AgentConfig {
            dev: true,
            ..AgentConfig::default()
        };
        c.acl.initial_management_token = Some(" ".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("initial_management_token"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_clearly() {
        let err = AgentConfig::from_toml("data_dri = \"/x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `data_dri`"), "{err}");
        let err = AgentConfig::from_toml("http_addr = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http_addr"), "{err}");
        let err = AgentConfig::from_toml("[health]\nguard_window = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn check_cidrs_parse_and_default_to_link_local() {
        let c = AgentConfig::default();
        assert_eq!(
            c.health.check_policy(),
            signpost_core::cidr::AddressPolicy::default()
        );
        let c = AgentConfig::from_toml(
            "[health]\ncheck_deny_cidrs = [\"10.9.0.0/16\"]\ncheck_allow_cidrs = [\"10.0.0.0/8\"]",
        )
        .unwrap();
        let policy = c.health.check_policy();
        assert!(policy.check("10.1.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("10.9.0.1".parse().unwrap()).is_err());
        assert!(policy.check("169.254.169.254".parse().unwrap()).is_err());
        // Setting the deny list replaces the default: the link-local range must be named.
        let c = AgentConfig::from_toml("[health]\ncheck_deny_cidrs = []").unwrap();
        assert!(c
            .health
            .check_policy()
            .check("169.254.169.254".parse().unwrap())
            .is_ok());
        let err = AgentConfig::from_toml("[health]\ncheck_deny_cidrs = [\"169.254.0.0/33\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("check_deny_cidrs"), "{err}");
    }

    #[test]
    fn inconsistent_settings_fail_validation() {
        let mut c = AgentConfig::default();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("data dir is required"));
        c.dev = true;
        c.validate().unwrap();
        c.health.guard_threshold = 1.5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("guard_threshold"));
        c.health.guard_threshold = 0.5;
        c.node_id = 0;
        assert!(c.validate().is_err());
        c.node_id = 1;
        c.dns.domain = "bad domain!".into();
        assert!(c.validate().unwrap_err().to_string().contains("dns"));
    }

    #[test]
    fn tls_settings_are_checked() {
        let base = AgentConfig {
            dev: true,
            ..AgentConfig::default()
        };
        let with = |f: &dyn Fn(&mut AgentConfig)| {
            let mut c = base.clone();
            f(&mut c);
            c.validate().err().map(|e| e.to_string())
        };
        let cert = |c: &mut AgentConfig| {
            c.tls.cert_file = Some("a.pem".into());
            c.tls.key_file = Some("a-key.pem".into());
        };
        assert_eq!(with(&cert), None, "cert and key alone: HTTPS, one node");
        let err = with(&|c| c.tls.cert_file = Some("a.pem".into())).unwrap();
        assert!(err.contains("cert_file and key_file go together"), "{err}");
        let err = with(&|c| c.tls.ca_file = Some("ca.pem".into())).unwrap();
        assert!(err.contains("need cert_file and key_file"), "{err}");
        let err = with(&|c| {
            cert(c);
            c.tls.verify_incoming = true;
        })
        .unwrap();
        assert!(err.contains("verify_incoming needs tls.ca_file"), "{err}");
        let err = with(&|c| {
            cert(c);
            c.join = vec!["10.0.0.1:8500".into()];
        })
        .unwrap();
        assert!(err.contains("ca_file is required in a cluster"), "{err}");
        let err = with(&|c| {
            cert(c);
            c.tls.ca_file = Some("ca.pem".into());
        })
        .unwrap();
        assert!(err.contains("Raft listener of their own"), "{err}");
        assert_eq!(
            with(&|c| {
                cert(c);
                c.tls.ca_file = Some("ca.pem".into());
                c.raft.addr = Some(SocketAddr::from(([127, 0, 0, 1], 8300)));
                c.join = vec!["10.0.0.1:8500".into()];
            }),
            None
        );
    }

    #[test]
    fn member_settings_are_checked() {
        let mut c = AgentConfig {
            dev: true,
            ..AgentConfig::default()
        };
        c.cluster.secret = Some("short".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("at least 32 bytes, got 5"), "{err}");
        c.cluster.secret = Some("x".repeat(32));
        c.validate().unwrap();
        for bad in ["http://10.0.0.1:8300", "10.0.0.1:8300/x", "10.0.0.1"] {
            c.raft.advertise_addr = Some(bad.into());
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("host:port"), "{bad}: {err}");
        }
        c.raft.advertise_addr = Some("node-2.internal:8300".into());
        c.validate().unwrap();
        let c = AgentConfig::from_toml(
            "[cluster]\nsecret = \"s\"\n[limits]\nhttp_request_rate = 5.0\nmax_blocking_per_client = 3",
        )
        .unwrap();
        assert_eq!(c.limits.http_request_rate, 5.0);
        assert_eq!(c.limits.max_blocking_per_client, 3);
        assert_eq!(c.limits.http_max_conns_per_client, 200);
        assert!(
            !format!("{c:?}").contains("secret: Some(\"s\")"),
            "the secret is not logged"
        );
    }
}
