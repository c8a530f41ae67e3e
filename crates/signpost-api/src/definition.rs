//! Service definitions under `/api/v1/services/{service}/definition`: what a service is,
//! stored beside its instances.

use serde::{Deserialize, Serialize};

/// A parameter of an endpoint.
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

/// The body of `PUT /api/v1/services/{service}/definition` (the agent refuses unknown fields,
/// so this carries only what a client may set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefinitionSpec {
    /// The service's name; the path names it when absent (they must agree when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
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
}

/// A stored service definition, as `GET .../definition` (and a successful `PUT`) answers it.
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
