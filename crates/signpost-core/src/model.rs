//! The registry's data: instances, their health checks, and service definitions.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::compact::Metadata;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Health of an instance. Only `passing` instances are returned by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy: listed by default and sent traffic.
    Passing,
    /// Degraded: listed only when asked for (`?status=warning` or `any`).
    Warning,
    /// Failing: listed only when asked for.
    Critical,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Passing, Status::Warning, Status::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is none of `passing`, `warning` and `critical` (any case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}: expected passing, warning or critical")]
pub struct UnknownStatus(
    /// The name given, lowercased.
    pub String,
);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "passing" => Ok(Status::Passing),
            "warning" => Ok(Status::Warning),
            "critical" => Ok(Status::Critical),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// A duration written the way operators write them: `"10s"`, `"1m30s"`, `"250ms"`, `"120000ms"`.
///
/// Stored as whole milliseconds so the state machine stays deterministic and serialisable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub u64);

impl Dur {
    pub fn from_millis(ms: u64) -> Self {
        Dur(ms)
    }

    pub fn from_secs(s: u64) -> Self {
        Dur(s.saturating_mul(1000))
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    pub fn to_std(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration {text:?}: {source} (use e.g. \"10s\", \"250ms\", \"5m\")")]
pub struct BadDuration {
    /// The text given.
    pub text: String,
    /// Why it is not a duration.
    #[source]
    pub source: humantime::DurationError,
}

// humantime's error compares positions and kinds only: its equality is total.
impl Eq for BadDuration {}

impl FromStr for Dur {
    type Err = BadDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // What `Display` writes (`<n>ms`, `<n>s`, `<n>m`, `<n>h`) reads back exactly, however
        // large: humantime counts in nanoseconds and refuses more than about 584 years.
        let text = s.trim();
        for (suffix, size) in [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)] {
            if let Some(n) = text
                .strip_suffix(suffix)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok())
            {
                return Ok(Dur(n.saturating_mul(size)));
            }
        }
        let d = humantime::parse_duration(text).map_err(|source| BadDuration {
            text: s.to_string(),
            source,
        })?;
        Ok(Dur(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&compact_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&compact_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            /// Bare numbers are seconds, as in most service-discovery configs.
            Secs(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Raw::Secs(s) => Ok(Dur::from_secs(s)),
        }
    }
}

/// Formats milliseconds as the shortest exact unit: `10s`, `250ms`, `5m`, `2h`.
fn compact_duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1000, "s")];
    for (size, unit) in UNITS {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Milliseconds since the Unix epoch, serialised as RFC 3339 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// The latest time a [`Timestamp`] can show: 9999-12-31T23:59:59.999Z, the last instant RFC 3339
/// (four-digit years) can write. Later values are written as this one, so serialising stored
/// state can never fail.
pub const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Clamped: humantime refuses years past 9999, and a failed serialisation of stored
        // state would break every listing, watch and snapshot that includes it.
        let t = std::time::UNIX_EPOCH + Duration::from_millis(self.0.min(MAX_TIMESTAMP_MS));
        s.collect_str(&humantime::format_rfc3339_millis(t))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let t = humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)?;
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Timestamp(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

/// How the agent decides whether an instance is healthy.
///
/// Exactly one of `ttl`, `http`, `tcp` or `grpc` is set (checked by [`crate::validate`]).
/// Hashable so that the registry can share one copy among the instances that carry equal
/// ones ([`crate::compact::Interner`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// The check's id (default `service:<instance id>`, as Consul names service checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The instance heartbeats at least this often, or it turns critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
    /// The agent GETs this URL: 2xx passing, 429 warning, anything else critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The agent opens a TCP connection to this `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// The agent calls `grpc.health.v1.Health/Check` on this `host:port[/service]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// Time between active checks (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// How long an active check may take (default 2s, at most the interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Remove the instance once it has been critical this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_after: Option<Dur>,
    /// Consecutive successes needed to turn passing again (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub success_before_passing: u32,
    /// Consecutive failures needed to turn critical (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub failures_before_critical: u32,
    /// Accept any certificate from the checked service (HTTPS checks and gRPC checks over
    /// TLS; Consul's `TLSSkipVerify`). Otherwise it is verified against the system's roots or
    /// the agent's `[health] ca_file`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_skip_verify: bool,
    /// Speak TLS to a gRPC check's target (Consul's `GRPCUseTLS`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub grpc_use_tls: bool,
}

impl Default for CheckSpec {
    /// No kind set, and the thresholds at their serde defaults (1), so that a spec built in
    /// code reads like one decoded from `{}`.
    fn default() -> Self {
        CheckSpec {
            id: None,
            name: None,
            ttl: None,
            http: None,
            tcp: None,
            grpc: None,
            interval: None,
            timeout: None,
            deregister_after: None,
            success_before_passing: 1,
            failures_before_critical: 1,
            tls_skip_verify: false,
            grpc_use_tls: false,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The kind of a check, derived from which field of [`CheckSpec`] is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind<'a> {
    Ttl(Dur),
    Http(&'a str),
    Tcp(&'a str),
    Grpc(&'a str),
}

impl CheckSpec {
    pub const DEFAULT_INTERVAL: Dur = Dur(10_000);
    pub const DEFAULT_TIMEOUT: Dur = Dur(2_000);

    /// The check's kind; `None` only for a spec that failed validation.
    pub fn kind(&self) -> Option<CheckKind<'_>> {
        if let Some(ttl) = self.ttl {
            return Some(CheckKind::Ttl(ttl));
        }
        if let Some(url) = &self.http {
            return Some(CheckKind::Http(url));
        }
        if let Some(addr) = &self.tcp {
            return Some(CheckKind::Tcp(addr));
        }
        self.grpc.as_deref().map(CheckKind::Grpc)
    }

    /// The check's id for instance `instance_id`.
    pub fn id_for(&self, instance_id: &str) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("service:{instance_id}"))
    }

    /// A short description of the kind: `ttl`, `http`, `tcp` or `grpc`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind() {
            Some(CheckKind::Ttl(_)) => "ttl",
            Some(CheckKind::Http(_)) => "http",
            Some(CheckKind::Tcp(_)) => "tcp",
            Some(CheckKind::Grpc(_)) | None => "grpc",
        }
    }

    pub fn is_ttl(&self) -> bool {
        self.ttl.is_some()
    }

    /// Time between active checks, clamped to what validation admits
    /// ([`MIN_CHECK_PERIOD`](crate::validate::MIN_CHECK_PERIOD) to
    /// [`MAX_CHECK_PERIOD`](crate::validate::MAX_CHECK_PERIOD)), so that a spec that bypassed
    /// validation cannot make the checker spin or panic (a zero period panics a timer).
    pub fn interval(&self) -> Dur {
        self.interval.unwrap_or(Self::DEFAULT_INTERVAL).clamp(
            crate::validate::MIN_CHECK_PERIOD,
            crate::validate::MAX_CHECK_PERIOD,
        )
    }

    /// How long one check run may take: at least 1 ms, at most the interval.
    pub fn timeout(&self) -> Dur {
        self.timeout
            .unwrap_or(Self::DEFAULT_TIMEOUT)
            .min(self.interval())
            .max(Dur(1))
    }

    /// The status an instance starts with when it registers with this check and names none.
    ///
    /// TTL instances start passing: the registration itself is their first heartbeat. Actively
    /// checked instances start critical until their first check passes, as in Consul.
    pub fn initial_status(&self) -> Status {
        if self.is_ttl() {
            Status::Passing
        } else {
            Status::Critical
        }
    }
}

/// Splits a gRPC check target `host:port[/service]` into the address to dial and the
/// `service` of the `HealthCheckRequest` (empty: the server's overall health).
pub fn grpc_target(target: &str) -> (&str, &str) {
    target.split_once('/').unwrap_or((target, ""))
}

/// Identifies an instance: ids are unique within a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey {
    pub service: String,
    pub id: String,
}

impl InstanceKey {
    pub fn new(service: impl Into<String>, id: impl Into<String>) -> Self {
        InstanceKey {
            service: service.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.id)
    }
}

/// A validated, normalised registration: what [`crate::registry::Command::Register`] carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInstance {
    pub id: String,
    pub service: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    /// Its metadata, sorted by key (written as a JSON object, as a map would be).
    pub metadata: Metadata,
    pub weight: u32,
    pub check: Option<CheckSpec>,
    /// The status to start with; `None` means "derive it from the check".
    pub status: Option<Status>,
    /// Where the instance is in its life when it registers (`starting` keeps it out of
    /// discovery until it says it is `up`). Absent from log entries written before lifecycle
    /// states existed: those registered `up`.
    #[serde(default, skip_serializing_if = "Lifecycle::is_up")]
    pub state: Lifecycle,
}

/// Where an instance is in its life (the design notes' Starting/Up/Stopping). Only `up`
/// instances are discovered: a `starting` one is not ready yet, a `stopping` one is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Registered but not ready for traffic yet.
    Starting,
    /// Serving (the default, and what every instance registered before lifecycle states was).
    #[default]
    Up,
    /// Announced its departure: clients drain it before it deregisters.
    Stopping,
}

impl Lifecycle {
    /// Every state, in order.
    pub const ALL: [Lifecycle; 3] = [Lifecycle::Starting, Lifecycle::Up, Lifecycle::Stopping];

    /// The lowercase name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Up => "up",
            Lifecycle::Stopping => "stopping",
        }
    }

    /// True for `up` (lets serde leave the default out).
    pub fn is_up(&self) -> bool {
        *self == Lifecycle::Up
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is none of `starting`, `up` and `stopping`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}: expected starting, up or stopping")]
pub struct UnknownLifecycle(
    /// The name given, lowercased.
    pub String,
);

impl FromStr for Lifecycle {
    type Err = UnknownLifecycle;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "starting" => Ok(Lifecycle::Starting),
            "up" => Ok(Lifecycle::Up),
            "stopping" => Ok(Lifecycle::Stopping),
            other => Err(UnknownLifecycle(other.to_string())),
        }
    }
}

/// An operator's maintenance mark on an instance: it stays registered but leaves discovery
/// until the mark is lifted (Consul's service maintenance mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Why, as the operator gave it (may be empty).
    #[serde(default)]
    pub reason: String,
    /// When maintenance began (the proposer's clock).
    pub since: Timestamp,
}

/// A registered instance of a service, as the registry stores and serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub service: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    /// Its metadata, sorted by key; keys and values shared through the registry's
    /// [`Interner`](crate::compact::Interner).
    pub metadata: Metadata,
    pub weight: u32,
    pub status: Status,
    /// Its check, shared (through the registry's interner) with every instance that carries
    /// an equal one, and with the health monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Arc<CheckSpec>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub create_index: u64,
    pub modify_index: u64,
    /// Where the instance is in its life; instances stored before lifecycle states existed
    /// read as `up`.
    #[serde(default)]
    pub state: Lifecycle,
    /// Set while an operator holds the instance in maintenance; absent otherwise (and in data
    /// written before maintenance existed).
    /// Boxed: rarely set, so it costs a pointer, not the mark's size, in every instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Box<Maintenance>>,
}

impl Instance {
    /// Whether discovery hands the instance out: `up` and not in maintenance. Health is
    /// judged separately (a serving instance must also be passing to be listed by default).
    pub fn serving(&self) -> bool {
        self.state == Lifecycle::Up && self.maintenance.is_none()
    }

    /// Passing and [`serving`](Self::serving): what the default listing, Consul's `?passing`
    /// and DNS answer with.
    pub fn discoverable(&self) -> bool {
        self.status == Status::Passing && self.serving()
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey::new(&self.service, &self.id)
    }

    /// True when the instance carries every one of `tags`.
    pub fn has_tags(&self, tags: &[String]) -> bool {
        tags.iter().all(|t| self.tags.iter().any(|own| own == t))
    }
}

/// A parameter of an endpoint in a service definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    /// The parameter's name.
    pub name: String,
    /// Its type, free-form (`string`, `int`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether callers must give it.
    #[serde(default)]
    pub required: bool,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

/// An endpoint a service exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its path (`/users/{id}`).
    pub path: String,
    /// Its HTTP method.
    pub method: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Its parameters.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
}

/// What a service is, stored beside its instances: version, API, dependencies and config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDefinition {
    /// The service's name.
    pub name: String,
    /// The service's version.
    #[serde(default)]
    pub version: String,
    /// What the service does.
    #[serde(default)]
    pub description: String,
    /// Its API.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The services it calls.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Free-form configuration.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Index of the write that created it.
    #[serde(default)]
    pub create_index: u64,
    /// Index of its last write.
    #[serde(default)]
    pub modify_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tls_flags_default_off_and_old_checks_read_and_write_as_before() {
        // A check stored before the TLS flags existed.
        let old = r#"{"http":"https://h:1/x","interval":"5s"}"#;
        let spec: CheckSpec = serde_json::from_str(old).unwrap();
        assert!(!spec.tls_skip_verify && !spec.grpc_use_tls);
        assert_eq!(serde_json::to_string(&spec).unwrap(), old);
        let spec: CheckSpec =
            serde_json::from_str(r#"{"grpc":"h:1","grpc_use_tls":true,"tls_skip_verify":true}"#)
                .unwrap();
        assert!(spec.tls_skip_verify && spec.grpc_use_tls);
    }

    #[test]
    fn durations_parse_go_and_human_forms() {
        assert_eq!("10s".parse::<Dur>().unwrap(), Dur(10_000));
        assert_eq!("120000ms".parse::<Dur>().unwrap(), Dur(120_000));
        assert_eq!("5m".parse::<Dur>().unwrap(), Dur(300_000));
        assert_eq!("1m30s".parse::<Dur>().unwrap(), Dur(90_000));
        assert!("ten seconds".parse::<Dur>().is_err());
        assert!("".parse::<Dur>().is_err());
    }

    #[test]
    fn durations_round_trip_through_json() {
        for ms in [250, 1000, 90_000, 300_000, 7_200_000] {
            let text = serde_json::to_string(&Dur(ms)).unwrap();
            assert_eq!(
                serde_json::from_str::<Dur>(&text).unwrap(),
                Dur(ms),
                "{text}"
            );
        }
        assert_eq!(serde_json::to_string(&Dur(10_000)).unwrap(), "\"10s\"");
        assert_eq!(serde_json::from_str::<Dur>("30").unwrap(), Dur(30_000));
    }

    #[test]
    fn timestamps_round_trip_as_rfc3339() {
        let t = Timestamp(1_700_000_000_123);
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(text, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&text).unwrap(), t);
    }

    #[test]
    fn every_duration_reads_back_what_it_writes() {
        for ms in [
            0,
            1,
            999,
            1000,
            60_000,
            3_600_000,
            3_017_768_367_064_338_508,
            u64::MAX,
        ] {
            let text = serde_json::to_string(&Dur(ms)).unwrap();
            assert_eq!(
                serde_json::from_str::<Dur>(&text).unwrap(),
                Dur(ms),
                "{text}"
            );
        }
        assert_eq!("1m30s".parse::<Dur>(), Ok(Dur(90_000)));
    }

    #[test]
    fn a_zero_interval_is_clamped_for_the_checker() {
        let spec = CheckSpec {
            tcp: Some("h:1".into()),
            interval: Some(Dur(0)),
            timeout: Some(Dur(0)),
            ..CheckSpec::default()
        };
        assert_eq!(spec.interval(), crate::validate::MIN_CHECK_PERIOD);
        assert_eq!(spec.timeout(), Dur(1));
        let huge = CheckSpec {
            interval: Some(Dur(u64::MAX)),
            ..spec
        };
        assert_eq!(huge.interval(), crate::validate::MAX_CHECK_PERIOD);
    }

    #[test]
    fn timestamps_past_year_9999_serialise_clamped() {
        for ms in [MAX_TIMESTAMP_MS + 1, 300_000_000_000_000, u64::MAX] {
            let text = serde_json::to_string(&Timestamp(ms)).expect("never fails");
            assert_eq!(text, "\"9999-12-31T23:59:59.999Z\"");
        }
    }

    #[test]
    fn grpc_targets_split_at_the_first_slash() {
        assert_eq!(grpc_target("db:50051"), ("db:50051", ""));
        assert_eq!(grpc_target("db:50051/"), ("db:50051", ""));
        assert_eq!(
            grpc_target("[::1]:50051/pkg.Users"),
            ("[::1]:50051", "pkg.Users")
        );
        assert_eq!(grpc_target("h:1/a/b"), ("h:1", "a/b"));
    }

    #[test]
    fn check_spec_rejects_unknown_fields() {
        let err = serde_json::from_str::<CheckSpec>(r#"{"ttl":"10s","bogus":1}"#).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn instances_stored_before_lifecycle_states_read_as_up_without_maintenance() {
        let old = r#"{"id":"u1","service":"users","address":"10.0.0.1","port":80,"tags":[],
            "metadata":{},"weight":100,"status":"passing",
            "created_at":"2023-11-14T22:13:20.123Z","updated_at":"2023-11-14T22:13:20.123Z",
            "create_index":3,"modify_index":4}"#;
        let i: Instance = serde_json::from_str(old).unwrap();
        assert_eq!(i.state, Lifecycle::Up);
        assert_eq!(i.maintenance, None);
        assert!(i.discoverable());
        let new: NewInstance = serde_json::from_str(
            r#"{"id":"u1","service":"users","address":"a","port":1,"tags":[],"metadata":{},
            "weight":100,"check":null,"status":null}"#,
        )
        .unwrap();
        assert_eq!(new.state, Lifecycle::Up);
        assert!(!serde_json::to_string(&new).unwrap().contains("state"));
    }

    #[test]
    fn lifecycle_names_parse_in_any_case() {
        assert_eq!("Stopping".parse::<Lifecycle>(), Ok(Lifecycle::Stopping));
        assert_eq!(
            "down".parse::<Lifecycle>(),
            Err(UnknownLifecycle("down".into()))
        );
        for s in Lifecycle::ALL {
            assert_eq!(s.as_str().parse::<Lifecycle>(), Ok(s));
        }
    }

    #[test]
    fn parse_errors_are_typed() {
        assert_eq!("Warning".parse::<Status>(), Ok(Status::Warning));
        assert_eq!(
            "Bogus".parse::<Status>(),
            Err(UnknownStatus("bogus".into()))
        );
        assert_eq!("1m30s".parse::<Dur>(), Ok(Dur::from_secs(90)));
        let err = "10 parsecs".parse::<Dur>().unwrap_err();
        assert_eq!(err.text, "10 parsecs");
        assert!(std::error::Error::source(&err).is_some());
    }
}
