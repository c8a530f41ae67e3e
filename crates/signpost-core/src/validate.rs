//! Validation of untrusted input. Everything that reaches the state machine has passed through here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{CheckKind, CheckSpec, Dur, Lifecycle, NewInstance, ServiceDefinition, Status};

pub const MAX_TAGS: usize = 64;
pub const MAX_METADATA: usize = 64;
pub const MAX_KEY_BYTES: usize = 128;
pub const MAX_VALUE_BYTES: usize = 512;
pub const MAX_ID_BYTES: usize = 128;
pub const MIN_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 10_000;
pub const DEFAULT_WEIGHT: u32 = 100;
/// The longest gRPC health-check service name (the part of a `grpc` target after `/`).
pub const MAX_GRPC_SERVICE_BYTES: usize = 256;
/// The shortest TTL or check interval accepted; shorter ones would make the agent a busy loop.
pub const MIN_CHECK_PERIOD: Dur = Dur(100);
/// The longest TTL, check interval, timeout or `deregister_after` accepted (a year): longer
/// ones are mistakes, and would overflow the clocks they are added to.
pub const MAX_CHECK_PERIOD: Dur = Dur(365 * 24 * 3_600_000);

/// The longest `check.http` URL accepted (bytes), as browsers and proxies commonly cap URLs.
pub const MAX_CHECK_URL_BYTES: usize = 2048;
/// The longest free-form text of a service definition (version, description, an endpoint's
/// path, method or description, a parameter's name, type or description), in bytes.
pub const MAX_DEFINITION_TEXT_BYTES: usize = 4096;
/// The most endpoints, dependencies or parameters a service definition may list.
pub const MAX_DEFINITION_ITEMS: usize = 1024;
/// The earliest proposal time the state machine accepts: 2000-01-01T00:00:00Z. Tests of the pure
/// core pass small times, so [`Registry::apply`](crate::Registry::apply) checks only the upper
/// bound; the Raft door (`/raft/propose`) compares a proposal's time with the leader's clock.
pub const MIN_TIMESTAMP_MS: u64 = 946_684_800_000;

/// Why an input was refused, and which field was at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error, serde::Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ValidationError>;

/// A registration as clients send it. Every field is optional here so that a missing field gets
/// a precise error instead of a generic deserialisation failure.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub id: Option<String>,
    pub service: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub weight: Option<i64>,
    pub check: Option<CheckSpec>,
    pub status: Option<Status>,
    /// The lifecycle state to register in (`starting` or `up`, the default); text, so a
    /// wrong name is reported against this field.
    pub state: Option<String>,
}

/// Normalises a service name: case-folded, then checked to be a DNS label (`[a-z0-9-]`, 1–63,
/// not starting or ending with `-`).
pub fn service_name(raw: &str) -> Result<String> {
    let name = raw.to_ascii_lowercase();
    let field = "service";
    if name.is_empty() || name.len() > 63 {
        return Err(ValidationError::new(
            field,
            format!(
                "service name must be 1 to 63 characters, got {}",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(ValidationError::new(
            field,
            format!("service name {raw:?} contains {bad:?}: only a-z, 0-9 and '-' are allowed"),
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(ValidationError::new(
            field,
            format!("service name {raw:?} must not start or end with '-'"),
        ));
    }
    Ok(name)
}

/// Checks an instance id: 1–128 printable ASCII characters, none of which needs escaping in a
/// URL path.
pub fn instance_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ValidationError::new(
            "id",
            format!("id must be 1 to {MAX_ID_BYTES} bytes, got {}", id.len()),
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '~')))
    {
        return Err(ValidationError::new(
            "id",
            format!("id {id:?} contains {bad:?}: use letters, digits and - _ . : @ ~"),
        ));
    }
    Ok(())
}

/// Accepts an IP address or an RFC 1123 host name.
pub fn address(addr: &str) -> Result<()> {
    if addr.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        ValidationError::new(
            "address",
            format!("address {addr:?} is neither an IP address nor a valid host name"),
        )
    };
    let host = addr.strip_suffix('.').unwrap_or(addr);
    if host.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
    }
    // A name made only of digits and dots is a malformed IPv4 address, not a host name.
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    Ok(())
}

fn port(port: Option<i64>) -> Result<u16> {
    let p = port.ok_or_else(|| ValidationError::new("port", "port is required"))?;
    match u16::try_from(p) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(ValidationError::new(
            "port",
            format!("port must be 1 to 65535, got {p}"),
        )),
    }
}

fn weight(w: Option<i64>) -> Result<u32> {
    let Some(w) = w else {
        return Ok(DEFAULT_WEIGHT);
    };
    match u32::try_from(w) {
        Ok(w) if (MIN_WEIGHT..=MAX_WEIGHT).contains(&w) => Ok(w),
        _ => Err(ValidationError::new(
            "weight",
            format!("weight must be {MIN_WEIGHT} to {MAX_WEIGHT}, got {w}"),
        )),
    }
}

fn tags(tags: &[String]) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(ValidationError::new(
            "tags",
            format!("at most {MAX_TAGS} tags, got {}", tags.len()),
        ));
    }
    for t in tags {
        if t.is_empty() || t.len() > MAX_VALUE_BYTES {
            return Err(ValidationError::new(
                "tags",
                format!(
                    "each tag must be 1 to {MAX_VALUE_BYTES} bytes, got {}",
                    t.len()
                ),
            ));
        }
    }
    Ok(())
}

fn metadata<'a>(meta: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    if meta.len() > MAX_METADATA {
        return Err(ValidationError::new(
            "metadata",
            format!("at most {MAX_METADATA} metadata keys, got {}", meta.len()),
        ));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > MAX_KEY_BYTES {
            return Err(ValidationError::new(
                "metadata",
                format!("metadata key {k:?} must be 1 to {MAX_KEY_BYTES} bytes"),
            ));
        }
        if v.len() > MAX_VALUE_BYTES {
            return Err(ValidationError::new(
                format!("metadata.{k}"),
                format!(
                    "metadata value must be at most {MAX_VALUE_BYTES} bytes, got {}",
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a health-check spec: exactly one kind, sane periods, well-formed targets.
pub fn check(spec: &CheckSpec) -> Result<()> {
    let kinds = [
        spec.ttl.is_some(),
        spec.http.is_some(),
        spec.tcp.is_some(),
        spec.grpc.is_some(),
    ];
    if let Some(id) = &spec.id {
        if id.is_empty()
            || id.len() > MAX_ID_BYTES
            || id.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(ValidationError::new(
                "check.id",
                format!(
                    "check id must be 1 to {MAX_ID_BYTES} bytes without '/' or control characters"
                ),
            ));
        }
    }
    if spec
        .name
        .as_ref()
        .is_some_and(|n| n.len() > MAX_VALUE_BYTES)
    {
        return Err(ValidationError::new(
            "check.name",
            format!("check name must be at most {MAX_VALUE_BYTES} bytes"),
        ));
    }
    let set = kinds.iter().filter(|k| **k).count();
    if set != 1 {
        return Err(ValidationError::new(
            "check",
            format!("a check needs exactly one of ttl, http, tcp or grpc; got {set}"),
        ));
    }
    match spec.kind() {
        Some(CheckKind::Grpc(target)) => grpc_check_target(target)?,
        Some(CheckKind::Ttl(ttl)) => {
            if ttl < MIN_CHECK_PERIOD {
                return Err(ValidationError::new(
                    "check.ttl",
                    format!("ttl must be at least {MIN_CHECK_PERIOD}, got {ttl}"),
                ));
            }
            if spec.interval.is_some() || spec.timeout.is_some() {
                return Err(ValidationError::new(
                    "check.interval",
                    "interval and timeout apply to http, tcp and grpc checks, not ttl",
                ));
            }
        }
        Some(CheckKind::Http(url)) => {
            if url.len() > MAX_CHECK_URL_BYTES {
                return Err(ValidationError::new(
                    "check.http",
                    format!(
                        "http check URL must be at most {MAX_CHECK_URL_BYTES} bytes, got {}",
                        url.len()
                    ),
                ));
            }
            if url.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    "check.http",
                    "http check URL must not contain control characters",
                ));
            }
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err(ValidationError::new(
                    "check.http",
                    format!("http check needs an http:// or https:// URL, got {url:?}"),
                ));
            }
        }
        Some(CheckKind::Tcp(target)) => {
            host_port("check.tcp", target)?;
        }
        None => unreachable!("exactly one kind is set"),
    }
    for (field, d) in [
        ("check.ttl", spec.ttl),
        ("check.interval", spec.interval),
        ("check.timeout", spec.timeout),
        ("check.deregister_after", spec.deregister_after),
    ] {
        if d.is_some_and(|d| d > MAX_CHECK_PERIOD) {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_CHECK_PERIOD}"),
            ));
        }
    }
    if let Some(interval) = spec.interval {
        if interval < MIN_CHECK_PERIOD {
            return Err(ValidationError::new(
                "check.interval",
                format!("interval must be at least {MIN_CHECK_PERIOD}, got {interval}"),
            ));
        }
    }
    if let Some(timeout) = spec.timeout {
        if timeout.as_millis() == 0 {
            return Err(ValidationError::new(
                "check.timeout",
                "timeout must be positive",
            ));
        }
    }
    if let Some(after) = spec.deregister_after {
        if after.as_millis() == 0 {
            return Err(ValidationError::new(
                "check.deregister_after",
                "deregister_after must be positive",
            ));
        }
    }
    for (field, n) in [
        ("check.success_before_passing", spec.success_before_passing),
        (
            "check.failures_before_critical",
            spec.failures_before_critical,
        ),
    ] {
        if !(1..=100).contains(&n) {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to 100, got {n}"),
            ));
        }
    }
    Ok(())
}

/// Checks a gRPC check target: `host:port`, optionally followed by `/service`, the service whose
/// health is asked for (printable, at most [`MAX_GRPC_SERVICE_BYTES`]; empty or absent means the
/// server's overall health).
fn grpc_check_target(target: &str) -> Result<()> {
    let err = |m: String| ValidationError::new("check.grpc", m);
    let (addr, service) = crate::model::grpc_target(target);
    host_port("check.grpc", addr).map_err(|e| {
        err(format!(
            "grpc check needs host:port or host:port/service: {}",
            e.message
        ))
    })?;
    if service.len() > MAX_GRPC_SERVICE_BYTES {
        return Err(err(format!(
            "grpc service name must be at most {MAX_GRPC_SERVICE_BYTES} bytes, got {}",
            service.len()
        )));
    }
    if service.chars().any(char::is_control) {
        return Err(err(format!(
            "grpc service name {service:?} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks `host:port` (IPv6 hosts in brackets). The error names `field`, the field `target`
/// came in.
pub fn host_port(field: &str, target: &str) -> Result<()> {
    let err = |m: String| ValidationError::new(field, m);
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| err(format!("expected host:port, got {target:?}")))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    address(host).map_err(|e| err(e.message))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(err(format!("port in {target:?} must be 1 to 65535"))),
    }
}

/// Validates a registration for `path_service` and normalises it into a [`NewInstance`].
pub fn registration(path_service: &str, reg: Registration) -> Result<NewInstance> {
    let service = service_name(path_service)?;
    if let Some(body_service) = &reg.service {
        if service_name(body_service)? != service {
            return Err(ValidationError::new(
                "service",
                format!("body names service {body_service:?} but the path names {path_service:?}"),
            ));
        }
    }
    let address_text = reg
        .address
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ValidationError::new("address", "address is required"))?;
    address(&address_text)?;
    let port = port(reg.port)?;
    let id = match reg.id {
        Some(id) => id,
        None => format!("{service}-{address_text}-{port}"),
    };
    instance_id(&id)?;
    tags(&reg.tags)?;
    metadata(reg.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let weight = weight(reg.weight)?;
    if let Some(c) = &reg.check {
        check(c)?;
    }
    let state = match reg.state.as_deref() {
        None => Lifecycle::Up,
        Some(text) => lifecycle(text)?,
    };
    Ok(NewInstance {
        id,
        service,
        address: address_text,
        port,
        tags: reg.tags,
        metadata: reg.metadata.into(),
        weight,
        check: reg.check,
        status: reg.status,
        state,
    })
}

/// Parses a lifecycle state name (`starting`, `up`, `stopping`), an error naming `state`.
pub fn lifecycle(text: &str) -> Result<Lifecycle> {
    text.parse()
        .map_err(|e: crate::model::UnknownLifecycle| ValidationError::new("state", e.to_string()))
}

/// Checks a proposal's time: at most [`crate::model::MAX_TIMESTAMP_MS`] (year 9999), the last
/// time stored state can show.
pub fn proposal_time(now_ms: u64) -> Result<()> {
    if now_ms > crate::model::MAX_TIMESTAMP_MS {
        return Err(ValidationError::new(
            "now_ms",
            format!("time {now_ms} ms is past the year 9999"),
        ));
    }
    Ok(())
}

/// Longest maintenance reason kept with an instance.
pub const MAX_MAINTENANCE_REASON: usize = 1024;

/// Checks a command as the state machine receives it, whichever route it came by (native or
/// Consul HTTP, a forwarded `/raft/propose`): the same rules the faces apply to their input,
/// restated over the normalised command. [`crate::Registry::apply`] refuses what fails here and
/// changes nothing; it is deterministic, so every replica refuses alike.
pub fn command(command: &crate::registry::Command) -> Result<()> {
    use crate::registry::Command;
    match command {
        Command::Register(new) => new_instance(new),
        Command::Deregister(key)
        | Command::SetStatus { key, .. }
        | Command::SetLifecycle { key, .. } => {
            normalised_service(&key.service)?;
            instance_id(&key.id)
        }
        Command::SetMaintenance { key, reason, .. } => {
            normalised_service(&key.service)?;
            instance_id(&key.id)?;
            match reason {
                Some(r) if r.len() > MAX_MAINTENANCE_REASON => Err(ValidationError::new(
                    "reason",
                    format!(
                        "reason must be at most {MAX_MAINTENANCE_REASON} bytes, got {}",
                        r.len()
                    ),
                )),
                _ => Ok(()),
            }
        }
        Command::PutDefinition(def) => stored_definition(def),
        Command::DeleteDefinition { service } => normalised_service(service),
        Command::KvSet { key, value, .. } => {
            crate::kv::validate_key(key)?;
            if value.len() > crate::kv::MAX_VALUE_BYTES {
                return Err(ValidationError::new(
                    "value",
                    format!(
                        "value must be at most {} bytes, got {}",
                        crate::kv::MAX_VALUE_BYTES,
                        value.len()
                    ),
                ));
            }
            Ok(())
        }
        Command::KvDelete { key, .. } => {
            // An empty key with `recurse` deletes the whole tree, as in Consul.
            if key.len() > crate::kv::MAX_KEY_BYTES || key.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    "key",
                    format!(
                        "key must be at most {} bytes without control characters",
                        crate::kv::MAX_KEY_BYTES
                    ),
                ));
            }
            Ok(())
        }
        Command::Batch(commands) => {
            if commands.iter().any(|c| matches!(c, Command::Batch(_))) {
                return Err(ValidationError::new("batch", "batches do not nest"));
            }
            Ok(())
        }
        Command::Acl(_) => Ok(()),
    }
}

/// A service name as stored: already normalised (what [`service_name`] returns).
fn normalised_service(name: &str) -> Result<()> {
    if service_name(name)? != name {
        return Err(ValidationError::new(
            "service",
            format!("service name {name:?} is not in lower case"),
        ));
    }
    Ok(())
}

/// A registration as stored ([`registration`]'s output).
fn new_instance(new: &NewInstance) -> Result<()> {
    normalised_service(&new.service)?;
    instance_id(&new.id)?;
    address(&new.address)?;
    // Port 0 is allowed here: the Consul face registers port-less services with it.
    tags(&new.tags)?;
    metadata(new.metadata.iter())?;
    weight(Some(i64::from(new.weight)))?;
    if let Some(c) = &new.check {
        check(c)?;
    }
    Ok(())
}

/// A definition as stored ([`definition`]'s output), with length caps on its free text.
fn stored_definition(def: &ServiceDefinition) -> Result<()> {
    normalised_service(&def.name)?;
    let text = |field: String, t: &str| {
        if t.len() > MAX_DEFINITION_TEXT_BYTES {
            Err(ValidationError::new(
                field,
                format!("at most {MAX_DEFINITION_TEXT_BYTES} bytes, got {}", t.len()),
            ))
        } else {
            Ok(())
        }
    };
    text("version".into(), &def.version)?;
    text("description".into(), &def.description)?;
    for (field, n) in [
        ("endpoints", def.endpoints.len()),
        ("dependencies", def.dependencies.len()),
    ] {
        if n > MAX_DEFINITION_ITEMS {
            return Err(ValidationError::new(
                field,
                format!("at most {MAX_DEFINITION_ITEMS} items, got {n}"),
            ));
        }
    }
    for (i, dep) in def.dependencies.iter().enumerate() {
        normalised_service(dep)
            .map_err(|e| ValidationError::new(format!("dependencies[{i}]"), e.message))?;
    }
    for (i, ep) in def.endpoints.iter().enumerate() {
        if !ep.path.starts_with('/') {
            return Err(ValidationError::new(
                format!("endpoints[{i}].path"),
                "endpoint path must start with '/'",
            ));
        }
        if ep.method.is_empty() || !ep.method.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ValidationError::new(
                format!("endpoints[{i}].method"),
                "endpoint method must be an upper-case HTTP method",
            ));
        }
        text(format!("endpoints[{i}].path"), &ep.path)?;
        text(format!("endpoints[{i}].method"), &ep.method)?;
    }
    Ok(())
}

/// Validates a service definition for `path_service`; the definition's name is set from the path.
pub fn definition(path_service: &str, mut def: DefinitionInput) -> Result<ServiceDefinition> {
    let service = service_name(path_service)?;
    if let Some(name) = &def.name {
        if service_name(name)? != service {
            return Err(ValidationError::new(
                "name",
                format!("body names service {name:?} but the path names {path_service:?}"),
            ));
        }
    }
    for (i, dep) in def.dependencies.iter_mut().enumerate() {
        *dep = service_name(dep)
            .map_err(|e| ValidationError::new(format!("dependencies[{i}]"), e.message))?;
    }
    for (i, ep) in def.endpoints.iter().enumerate() {
        if !ep.path.starts_with('/') {
            return Err(ValidationError::new(
                format!("endpoints[{i}].path"),
                format!("endpoint path must start with '/', got {:?}", ep.path),
            ));
        }
        if ep.method.is_empty() || !ep.method.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(ValidationError::new(
                format!("endpoints[{i}].method"),
                format!(
                    "endpoint method must be an HTTP method, got {:?}",
                    ep.method
                ),
            ));
        }
    }
    Ok(ServiceDefinition {
        name: service,
        version: def.version,
        description: def.description,
        endpoints: def
            .endpoints
            .into_iter()
            .map(|mut e| {
                e.method = e.method.to_ascii_uppercase();
                e
            })
            .collect(),
        dependencies: def.dependencies,
        config: def.config,
        create_index: 0,
        modify_index: 0,
    })
}

/// A service definition as clients send it (the body of `PUT .../definition`; clients build it
/// as `signpost_api::DefinitionSpec`). Unknown fields are refused, so it carries only what a
/// client may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionInput {
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
    pub endpoints: Vec<crate::model::Endpoint>,
    /// The services it calls.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Free-form configuration.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(json: serde_json::Value) -> Registration {
        serde_json::from_value(json).unwrap()
    }

    fn field_of(r: Result<NewInstance>) -> String {
        r.unwrap_err().field
    }

    #[test]
    fn service_names_are_case_folded_dns_labels() {
        assert_eq!(service_name("User-Service").unwrap(), "user-service");
        assert!(service_name("").is_err());
        assert!(service_name(&"a".repeat(64)).is_err());
        assert!(service_name(&"a".repeat(63)).is_ok());
        assert!(service_name("user_service").is_err());
        assert!(service_name("-users").is_err());
        assert!(service_name("users.v1").is_err());
    }

    #[test]
    fn addresses_are_ips_or_host_names() {
        for ok in [
            "10.0.0.1",
            "::1",
            "fe80::1",
            "db.internal",
            "localhost",
            "a-b.example.com.",
        ] {
            assert!(address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "300.1.1.1",
            "1.2.3",
            "-bad.example",
            "under_score.example",
            "a..b",
            "x y",
        ] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registration_defaults_id_and_weight() {
        let n = registration(
            "Users",
            reg(serde_json::json!({"address": "10.0.0.1", "port": 8080})),
        )
        .unwrap();
        assert_eq!(n.id, "users-10.0.0.1-8080");
        assert_eq!(n.service, "users");
        assert_eq!(n.weight, DEFAULT_WEIGHT);
    }

    #[test]
    fn registration_errors_name_the_field() {
        let base = || serde_json::json!({"address": "10.0.0.1", "port": 8080});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base();
            b[k] = v;
            registration("users", reg(b))
        };
        assert_eq!(field_of(with("port", 0.into())), "port");
        assert_eq!(field_of(with("port", 65536.into())), "port");
        assert_eq!(
            field_of(with("address", "not an address".into())),
            "address"
        );
        assert_eq!(field_of(with("weight", 0.into())), "weight");
        assert_eq!(field_of(with("weight", 10_001.into())), "weight");
        assert_eq!(field_of(with("id", "a/b".into())), "id");
        assert_eq!(field_of(with("service", "orders".into())), "service");
        let tags: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(field_of(with("tags", serde_json::json!(tags))), "tags");
        let meta: BTreeMap<String, String> = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert_eq!(
            field_of(with("metadata", serde_json::json!(meta))),
            "metadata"
        );
        let long_key = serde_json::json!({ "k".repeat(129): "v" });
        assert_eq!(field_of(with("metadata", long_key)), "metadata");
        let long_value = serde_json::json!({ "k": "v".repeat(513) });
        assert_eq!(field_of(with("metadata", long_value)), "metadata.k");
        assert_eq!(
            field_of(registration("users", reg(serde_json::json!({"port": 1})))),
            "address"
        );
        assert_eq!(
            field_of(registration(
                "users",
                reg(serde_json::json!({"address": "h"}))
            )),
            "port"
        );
    }

    #[test]
    fn checks_need_exactly_one_kind_and_sane_periods() {
        let c = |v: serde_json::Value| check(&serde_json::from_value::<CheckSpec>(v).unwrap());
        assert!(c(serde_json::json!({"ttl": "10s"})).is_ok());
        assert!(
            c(serde_json::json!({"http": "http://127.0.0.1:80/health", "interval": "5s"})).is_ok()
        );
        assert!(c(serde_json::json!({"tcp": "db:5432"})).is_ok());
        assert!(c(serde_json::json!({"tcp": "[::1]:5432"})).is_ok());
        assert!(c(serde_json::json!({"grpc": "h:1"})).is_ok());
        assert!(
            c(serde_json::json!({"grpc": "10.0.0.1:50051/pkg.Users", "interval": "5s", "timeout": "1s"}))
                .is_ok()
        );
        assert!(c(serde_json::json!({"grpc": "[::1]:50051/"})).is_ok());
        for bad in [
            "h",
            "h:0",
            "/svc",
            "http://h:1",
            "bad_host:1/svc",
            "h:1/a\nb",
        ] {
            assert_eq!(
                c(serde_json::json!({ "grpc": bad })).unwrap_err().field,
                "check.grpc",
                "{bad}"
            );
        }
        let long = format!("h:1/{}", "s".repeat(MAX_GRPC_SERVICE_BYTES + 1));
        assert_eq!(
            c(serde_json::json!({ "grpc": long })).unwrap_err().field,
            "check.grpc"
        );
        let longest = format!("h:1/{}", "s".repeat(MAX_GRPC_SERVICE_BYTES));
        assert!(c(serde_json::json!({ "grpc": longest })).is_ok());
        assert_eq!(c(serde_json::json!({})).unwrap_err().field, "check");
        assert_eq!(
            c(serde_json::json!({"ttl": "10s", "tcp": "db:1"}))
                .unwrap_err()
                .field,
            "check"
        );
        assert_eq!(
            c(serde_json::json!({"ttl": "1ms"})).unwrap_err().field,
            "check.ttl"
        );
        assert_eq!(
            c(serde_json::json!({"http": "ftp://x"})).unwrap_err().field,
            "check.http"
        );
        assert_eq!(
            c(serde_json::json!({"tcp": "db"})).unwrap_err().field,
            "check.tcp"
        );
        assert_eq!(
            c(serde_json::json!({"tcp": "db:1", "failures_before_critical": 0}))
                .unwrap_err()
                .field,
            "check.failures_before_critical"
        );
    }
}
