//! Consul's JSON shapes, and their mapping from Signpost's model.
//!
//! Signpost keeps one health check per instance; Consul sees it as the service check
//! `service:<id>` (or the check's own id), plus the agent's always-passing `serfHealth` node
//! check, as a Consul agent reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use signpost_core::model::{CheckKind, Dur};
use signpost_core::{CheckSpec, Instance, Status};

use crate::agent::Agent;

/// The node this agent presents itself as.
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    pub address: String,
    pub datacenter: String,
}

impl NodeInfo {
    pub fn of(agent: &Agent) -> Self {
        NodeInfo {
            id: format!("00000000-0000-4000-8000-{:012x}", agent.node_id()),
            name: agent.config().node_name(),
            address: agent.advertise_addr().ip().to_string(),
            datacenter: agent.config().datacenter.clone(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": self.address, "wan": self.address},
            "Meta": {"signpost": "true"},
            "CreateIndex": 1,
            "ModifyIndex": 1,
        })
    }

    /// The `serfHealth` check every Consul node reports.
    pub fn serf_check(&self) -> Value {
        json!({
            "Node": self.name,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "CreateIndex": 1,
            "ModifyIndex": 1,
        })
    }
}

/// Consul's weights: Signpost's weight is `Passing`; `Warning` is 1 as in Consul.
fn weights(i: &Instance) -> Value {
    json!({"Passing": i.weight, "Warning": 1})
}

/// An `AgentService`, as `/v1/agent/services` shows it.
pub fn agent_service(i: &Instance, datacenter: &str) -> Value {
    json!({
        "Kind": "",
        "ID": i.id,
        "Service": i.service,
        "Tags": i.tags,
        "Meta": i.metadata,
        "Port": i.port,
        "Address": i.address,
        "TaggedAddresses": {},
        "Weights": weights(i),
        "EnableTagOverride": false,
        "Datacenter": datacenter,
        "ContentHash": format!("{:016x}", i.modify_index),
    })
}

/// The `Service` of a `/v1/health/service` entry: the agent's view plus its indexes.
pub fn health_service(i: &Instance) -> Value {
    let mut service = agent_service(i, "");
    if let Value::Object(map) = &mut service {
        map.remove("Datacenter");
        map.remove("ContentHash");
        map.insert("CreateIndex".into(), i.create_index.into());
        map.insert("ModifyIndex".into(), i.modify_index.into());
    }
    service
}

/// A flat `/v1/catalog/service` entry.
pub fn catalog_service(i: &Instance, node: &NodeInfo) -> Value {
    json!({
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": {"lan": node.address, "wan": node.address},
        "NodeMeta": {"signpost": "true"},
        "ServiceKind": "",
        "ServiceID": i.id,
        "ServiceName": i.service,
        "ServiceTags": i.tags,
        "ServiceAddress": i.address,
        "ServiceTaggedAddresses": {},
        "ServiceWeights": weights(i),
        "ServiceMeta": i.metadata,
        "ServicePort": i.port,
        "ServiceEnableTagOverride": false,
        "CreateIndex": i.create_index,
        "ModifyIndex": i.modify_index,
    })
}

/// The instance's check as a Consul `HealthCheck`, if it has one.
pub fn service_check(i: &Instance, node: &str) -> Option<Value> {
    let check = i.check.as_ref()?;
    let (interval, timeout) = if check.is_ttl() {
        (String::new(), String::new())
    } else {
        (check.interval().to_string(), check.timeout().to_string())
    };
    Some(json!({
        "Node": node,
        "CheckID": check.id_for(&i.id),
        "Name": check.name.clone().unwrap_or_else(|| format!("Service '{}' check", i.service)),
        "Status": i.status.as_str(),
        "Notes": "",
        "Output": output(check, i.status),
        "ServiceID": i.id,
        "ServiceName": i.service,
        "ServiceTags": i.tags,
        "Type": check.kind_name(),
        "Interval": interval,
        "Timeout": timeout,
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": i.create_index,
        "ModifyIndex": i.modify_index,
    }))
}

/// Consul's maintenance check for an instance in maintenance: critical, named
/// `_service_maintenance:<id>`, with the reason as its notes.
pub fn maintenance_check(i: &Instance, node: &str) -> Option<Value> {
    let mark = i.maintenance.as_ref()?;
    let notes = if mark.reason.is_empty() {
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.".to_string()
    } else {
        mark.reason.clone()
    };
    Some(json!({
        "Node": node,
        "CheckID": format!("_service_maintenance:{}", i.id),
        "Name": "Service Maintenance Mode",
        "Status": Status::Critical.as_str(),
        "Notes": notes,
        "Output": "",
        "ServiceID": i.id,
        "ServiceName": i.service,
        "ServiceTags": i.tags,
        "Type": "maintenance",
        "Interval": "",
        "Timeout": "",
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": i.modify_index,
        "ModifyIndex": i.modify_index,
    }))
}

fn output(check: &CheckSpec, status: Status) -> String {
    match (check.kind(), status) {
        (Some(CheckKind::Ttl(_)), Status::Passing) => "TTL renewed".into(),
        (Some(CheckKind::Ttl(ttl)), _) => format!("TTL expired or set {status} (ttl {ttl})"),
        (Some(CheckKind::Http(url)), _) => format!("HTTP GET {url}: {status}"),
        (Some(CheckKind::Tcp(addr)), _) => format!("TCP connect {addr}: {status}"),
        (Some(CheckKind::Grpc(target)), _) => format!("gRPC health check {target}: {status}"),
        _ => String::new(),
    }
}

/// Consul's field names. Go's JSON decoder matches keys case-insensitively, and Consul's config
/// files use snake_case; [`canonicalize`] maps any such spelling to these.
const CANONICAL: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Weights",
    "Passing",
    "Warning",
    "Check",
    "Checks",
    "Kind",
    "CheckID",
    "ServiceID",
    "TTL",
    "HTTP",
    "TCP",
    "GRPC",
    "Interval",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "Status",
    "Method",
    "Header",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "ScriptArgs",
    "Args",
    "DockerContainerID",
    "H2PING",
    "UDP",
    "AliasService",
    "Output",
    "Notes",
    "EnableTagOverride",
    "TaggedAddresses",
    "Connect",
    "Proxy",
    "TLSSkipVerify",
    "TLSServerName",
    "GRPCUseTLS",
    "Body",
    "Shell",
    "Namespace",
    "Partition",
    "LocallyRegisteredAsSidecar",
    "SocketPath",
];

/// Objects whose keys are the user's own (metadata, headers): left as they are.
const OPAQUE: &[&str] = &["Meta", "Header", "TaggedAddresses", "NodeMeta"];

fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Rewrites the keys of a Consul request body to Consul's canonical spelling, recursively
/// (`serviceid`, `service_id` and `ServiceId` all become `ServiceID`); keys it does not know
/// are left alone, and so is everything inside `Meta` and `Header`.
pub fn canonicalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (key, mut v) in old {
                let folded = fold(&key);
                let name = CANONICAL
                    .iter()
                    .find(|c| fold(c) == folded)
                    .map_or(key, |c| c.to_string());
                if !OPAQUE.contains(&name.as_str()) {
                    canonicalize(&mut v);
                }
                map.insert(name, v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonicalize),
        _ => {}
    }
}

/// A Consul check definition (keys canonicalised first, see [`canonicalize`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CheckDefinition {
    #[serde(rename = "CheckID", alias = "ID")]
    pub check_id: Option<String>,
    #[serde(rename = "Name")]
    pub name: Option<String>,
    #[serde(rename = "ServiceID")]
    pub service_id: Option<String>,
    #[serde(rename = "TTL")]
    pub ttl: Option<String>,
    #[serde(rename = "HTTP")]
    pub http: Option<String>,
    #[serde(rename = "TCP")]
    pub tcp: Option<String>,
    #[serde(rename = "GRPC")]
    pub grpc: Option<String>,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: Option<bool>,
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: Option<bool>,
    #[serde(rename = "Interval")]
    pub interval: Option<String>,
    #[serde(rename = "Timeout")]
    pub timeout: Option<String>,
    #[serde(rename = "DeregisterCriticalServiceAfter")]
    pub deregister_after: Option<String>,
    #[serde(rename = "Status")]
    pub status: Option<String>,
    #[serde(rename = "Method")]
    pub method: Option<String>,
    #[serde(rename = "Header")]
    pub header: Option<BTreeMap<String, Vec<String>>>,
    #[serde(rename = "SuccessBeforePassing")]
    pub success_before_passing: Option<u32>,
    #[serde(rename = "FailuresBeforeCritical")]
    pub failures_before_critical: Option<u32>,
    #[serde(rename = "ScriptArgs", alias = "Args")]
    pub script_args: Option<Vec<String>>,
    #[serde(rename = "DockerContainerID")]
    pub docker: Option<String>,
    #[serde(rename = "H2PING")]
    pub h2ping: Option<String>,
    #[serde(rename = "UDP")]
    pub udp: Option<String>,
    #[serde(rename = "AliasService")]
    pub alias_service: Option<String>,
}

/// Why a check definition cannot be served, with the field at fault.
pub type DefinitionError = (String, String);

impl CheckDefinition {
    /// Converts to Signpost's check, refusing what Signpost does not run.
    pub fn to_spec(&self, field: &str) -> Result<(CheckSpec, Option<Status>), DefinitionError> {
        let err = |f: &str, m: String| Err((format!("{field}.{f}"), m));
        for (name, present) in [
            ("ScriptArgs", self.script_args.is_some()),
            ("DockerContainerID", self.docker.is_some()),
            ("H2PING", self.h2ping.is_some()),
            ("UDP", self.udp.is_some()),
            ("AliasService", self.alias_service.is_some()),
        ] {
            if present {
                return err(
                    name,
                    format!(
                        "{name} checks are not supported by Signpost; use HTTP, TCP, gRPC or TTL"
                    ),
                );
            }
        }
        let grpc = self.grpc.clone().filter(|s| !s.is_empty());
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case("GET") {
                return err(
                    "Method",
                    format!("HTTP checks use GET; method {m:?} is not supported"),
                );
            }
        }
        if self.header.as_ref().is_some_and(|h| !h.is_empty()) {
            return err(
                "Header",
                "HTTP check headers are not supported by Signpost".into(),
            );
        }
        let dur = |f: &str, v: &Option<String>| -> Result<Option<Dur>, DefinitionError> {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<Dur>()
                        .map_err(|m| (format!("{field}.{f}"), m.to_string()))
                })
                .transpose()
        };
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse::<Status>()
                    .map_err(|m| (format!("{field}.Status"), m.to_string()))?,
            ),
            // As in Consul, a TTL check registered without a status starts critical until its
            // first update. (The native API starts TTL instances passing.)
            None if self.ttl.as_deref().is_some_and(|t| !t.is_empty()) => Some(Status::Critical),
            None => None,
        };
        let spec = CheckSpec {
            id: self.check_id.clone().filter(|s| !s.is_empty()),
            name: self.name.clone().filter(|s| !s.is_empty()),
            ttl: dur("TTL", &self.ttl)?,
            http: self.http.clone().filter(|s| !s.is_empty()),
            tcp: self.tcp.clone().filter(|s| !s.is_empty()),
            grpc,
            interval: dur("Interval", &self.interval)?,
            timeout: dur("Timeout", &self.timeout)?,
            deregister_after: dur("DeregisterCriticalServiceAfter", &self.deregister_after)?,
            success_before_passing: self.success_before_passing.unwrap_or(1).max(1),
            failures_before_critical: self.failures_before_critical.unwrap_or(1).max(1),
            tls_skip_verify: self.tls_skip_verify.unwrap_or(false),
            grpc_use_tls: self.grpc_use_tls.unwrap_or(false),
        };
        Ok((spec, status))
    }
}

/// Consul's `Weights`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Weights {
    #[serde(rename = "Passing")]
    pub passing: Option<i64>,
    #[serde(rename = "Warning")]
    pub warning: Option<i64>,
}

/// A Consul service registration (`AgentServiceRegistration`; keys canonicalised first).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServiceRegistration {
    #[serde(rename = "ID")]
    pub id: Option<String>,
    #[serde(rename = "Name")]
    pub name: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Option<Vec<String>>,
    #[serde(rename = "Address")]
    pub address: Option<String>,
    #[serde(rename = "Port")]
    pub port: Option<i64>,
    #[serde(rename = "Meta")]
    pub meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "Weights")]
    pub weights: Option<Weights>,
    #[serde(rename = "Check")]
    pub check: Option<CheckDefinition>,
    #[serde(rename = "Checks")]
    pub checks: Option<Vec<CheckDefinition>>,
    #[serde(rename = "Kind")]
    pub kind: Option<String>,
}

/// Serialises a status for `/v1/health/state/:state` filtering.
pub fn status_matches(state: &str, status: Status) -> bool {
    state == "any" || state == status.as_str()
}

/// A KV entry in Consul's shape.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair<'a> {
    pub key: &'a str,
    #[serde(with = "signpost_core::kv::base64_bytes")]
    pub value: &'a [u8],
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
}
