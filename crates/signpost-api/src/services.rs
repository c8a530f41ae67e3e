//! The native registry API under `/api/v1/services` and `/api/v1/heartbeats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::{Check, Instance, InstanceKey, Status};

/// `GET /api/v1/services/{service}/instances`, and the data of a watch's `reset` event: the
/// instances that match the query and the service index they reflect.
///
/// Generic so the agent serialises borrowed instances (`InstanceList<&Instance>` of its own
/// type) and clients decode owned ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceList<I = Instance> {
    /// The service's index (at least 1): what a blocking query or a watch resumes from.
    pub index: u64,
    /// The matching instances.
    pub instances: Vec<I>,
}

/// Instance counts by status, in a [`ServiceSummary`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Instances passing their checks.
    #[serde(default)]
    pub passing: u64,
    /// Instances in warning.
    #[serde(default)]
    pub warning: u64,
    /// Instances failing their checks.
    #[serde(default)]
    pub critical: u64,
}

/// One row of `GET /api/v1/services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    /// The service's name.
    pub name: String,
    /// Index of the service's last change.
    #[serde(default)]
    pub index: u64,
    /// How many instances it has in each status.
    #[serde(default)]
    pub instances: StatusCounts,
    /// Whether a service definition is stored for it.
    #[serde(default)]
    pub has_definition: bool,
}

/// The body of `POST /api/v1/services/{service}/instances`. Only what is given is sent, so the
/// agent's defaults (generated id, weight) apply to the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Instance id; the agent derives one from address and port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Address other services use to reach the instance.
    pub address: String,
    /// Port the instance listens on.
    pub port: u16,
    /// Labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Free-form key/values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Relative weight for load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// How the agent checks the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Initial status (instances without a check only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Lifecycle state to register in: `starting` keeps the instance out of discovery until
    /// it announces `up` (the agent's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::instance::Lifecycle>,
}

/// The answer to `PUT /api/v1/services/{service}/instances/{id}/heartbeat`: the instance's
/// status and modify index after the renewal, not the whole instance.
///
/// Generic so the agent answers with its borrowed id and its own status type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewed<Id = String, St = Status> {
    /// The instance renewed.
    pub id: Id,
    /// Its status after the renewal.
    pub status: St,
    /// Its modify index after the renewal.
    pub index: u64,
}

/// The answer to `PUT /api/v1/heartbeats` (whose body is a JSON array of [`InstanceKey`]s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRenewed<K = InstanceKey> {
    /// How many instances were renewed.
    pub renewed: usize,
    /// Instances the agent does not know: the client registers them again.
    #[serde(default = "Vec::new")]
    pub not_found: Vec<K>,
    /// Instances that cannot be renewed (no TTL check, malformed name), and why.
    #[serde(default = "Vec::new")]
    pub rejected: Vec<Rejected<K>>,
    /// Instances not renewed this time because the cluster could not be reached (no leader,
    /// leader unreachable) while others were: the client retries these.
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<K>,
}

impl<K> Default for BatchRenewed<K> {
    fn default() -> Self {
        BatchRenewed {
            renewed: 0,
            not_found: Vec::new(),
            rejected: Vec::new(),
            unavailable: Vec::new(),
        }
    }
}

/// An instance of a heartbeat batch that was not renewed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected<K = InstanceKey> {
    /// The instance (its fields flattened beside `error`).
    #[serde(flatten)]
    pub key: K,
    /// Why it was not renewed.
    pub error: String,
}
