//! The SDK's registry-neutral instance type and the update stream registries emit.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// An instance's lifecycle state (`starting`, `up`, `stopping`), as the agent's wire has it.
pub use signpost_api::Lifecycle;

/// One instance of a service, as the SDK sees it whatever registry it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique within the service.
    pub id: String,
    /// The service this is an instance of.
    pub service: String,
    /// IP address or host name clients connect to.
    pub address: String,
    /// Port clients connect to.
    pub port: u16,
    /// Labels such as versions or regions (filters select on them).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form key/values, e.g. `zone` for zone-aware balancing.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Relative weight, 1..=10000 (default 100).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Where the instance is in its life: only `up` instances are chosen (a `starting` one is
    /// not ready, a `stopping` one is draining). Registries without lifecycle states say `up`.
    #[serde(default)]
    pub state: Lifecycle,
    /// The reason given when an operator put the instance into maintenance; `Some` keeps it
    /// from being chosen even if a list contains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
}

fn default_weight() -> u32 {
    100
}

impl Instance {
    /// Whether the instance may be chosen as far as its own state goes: `up` and not in
    /// maintenance. The [`Selector`](crate::selector::Selector) never picks one that is not.
    pub fn serving(&self) -> bool {
        self.state == Lifecycle::Up && self.maintenance.is_none()
    }

    /// `address:port`, with IPv6 addresses in brackets (the one rule:
    /// [`signpost_api::instance::authority`]).
    pub fn authority(&self) -> String {
        signpost_api::instance::authority(&self.address, self.port)
    }

    /// The socket address, when `address` is an IP.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.authority().parse().ok()
    }

    /// `http://address:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.authority())
    }
}

impl From<signpost_api::Instance> for Instance {
    /// The registry-neutral parts of an instance as the Signpost agent renders it.
    fn from(i: signpost_api::Instance) -> Self {
        Instance {
            id: i.id,
            service: i.service,
            address: i.address,
            port: i.port,
            tags: i.tags,
            metadata: i.metadata,
            weight: i.weight,
            state: i.state,
            maintenance: i.maintenance.map(|m| m.reason),
        }
    }
}

/// A change to the set of healthy instances of one service. Every registry's watch speaks this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The full current list; replaces everything known before.
    Reset {
        index: u64,
        instances: Vec<Instance>,
    },
    /// A new healthy instance.
    Add { index: u64, instance: Instance },
    /// A known instance changed (address, tags, weight, ...).
    Update { index: u64, instance: Instance },
    /// An instance left (deregistered or no longer healthy).
    Remove { index: u64, id: String },
}

impl Update {
    /// The registry index this update brings the watcher to.
    pub fn index(&self) -> u64 {
        match self {
            Update::Reset { index, .. }
            | Update::Add { index, .. }
            | Update::Update { index, .. }
            | Update::Remove { index, .. } => *index,
        }
    }
}
