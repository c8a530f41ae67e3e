//! An instance as the agent renders it, and the small types around it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An instance's health, lowercase on the wire: the core's own type, which the agent writes as
/// is (one definition for the agent and its clients).
pub use signpost_core::Status;

/// An instance's lifecycle state (`starting`, `up`, `stopping`), lowercase on the wire: the
/// core's own type, which the agent writes as is.
pub use signpost_core::Lifecycle;

/// An operator's maintenance mark on an instance, as the agent renders it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Why, as the operator gave it (may be empty).
    #[serde(default)]
    pub reason: String,
    /// When maintenance began (RFC 3339, as the agent writes it).
    #[serde(default)]
    pub since: String,
}

/// How the agent checks an instance: in a registration body, and as an instance carries it.
///
/// Durations are text (`10s`, `250ms`, `1m30s`), as the agent writes and parses them. Only the
/// fields given are sent, so the agent's defaults apply to the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Check id (the agent derives one from the instance id when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Human-readable check name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// TTL check: the instance must heartbeat at least this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// HTTP check: the URL the agent GETs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// TCP check: the `host:port` the agent connects to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// gRPC health check: the `host:port` the agent asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// Time between active checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long one active check may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Remove the instance once it has been critical this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_after: Option<String>,
    /// Consecutive successes before a failing instance is passing again (agent default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_before_passing: Option<u32>,
    /// Consecutive failures before a passing instance is critical (agent default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures_before_critical: Option<u32>,
}

/// One instance of a service, as the agent renders it in listings, watch events and
/// registration answers.
///
/// Decoding is lenient (everything but `id`, `address`, `port` and `status` has a default) so a
/// client keeps working against an agent that leaves a field out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within the service.
    pub id: String,
    /// The service this is an instance of.
    #[serde(default)]
    pub service: String,
    /// IP address or host name clients connect to.
    pub address: String,
    /// Port clients connect to.
    pub port: u16,
    /// Labels such as versions or regions.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form key/values (e.g. `zone`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Relative weight for load balancing.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Health as the agent last judged it.
    pub status: Status,
    /// How the agent checks the instance, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// When it was registered (RFC 3339, as the agent writes it).
    #[serde(default)]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
    /// Registry index of its registration.
    #[serde(default)]
    pub create_index: u64,
    /// Registry index of its last change.
    #[serde(default)]
    pub modify_index: u64,
    /// Where it is in its life; `up` when the agent leaves it out (agents from before
    /// lifecycle states).
    #[serde(default)]
    pub state: Lifecycle,
    /// Set while an operator holds it in maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
}

/// The agent's default weight, for answers that leave it out.
fn default_weight() -> u32 {
    100
}

impl Instance {
    /// Whether it may be sent traffic as far as its own state goes: `up` and not in
    /// maintenance (health aside).
    pub fn serving(&self) -> bool {
        self.state == Lifecycle::Up && self.maintenance.is_none()
    }

    /// `address:port`, with IPv6 addresses in brackets (see [`authority`]).
    pub fn authority(&self) -> String {
        authority(&self.address, self.port)
    }
}

/// `address:port` for a URL or a connection: an IPv6 address (it contains `:`) goes in
/// brackets, unless it already is. Every instance type (the agent's rendering, the SDK's
/// registry-neutral one) formats its authority here.
///
/// ```
/// use signpost_api::instance::authority;
/// assert_eq!(authority("10.0.0.1", 80), "10.0.0.1:80");
/// assert_eq!(authority("::1", 80), "[::1]:80");
/// assert_eq!(authority("[::1]", 80), "[::1]:80");
/// ```
pub fn authority(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// Names one instance (`{"service", "id"}`): in heartbeat batches and their answers. The
/// core's own type, which the agent writes as is.
pub use signpost_core::InstanceKey;
