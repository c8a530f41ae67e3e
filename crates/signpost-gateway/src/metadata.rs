//! Routes declared in the registry: instance metadata under the `gateway.` keys.
//!
//! | Key | Value | Default |
//! | --- | --- | --- |
//! | `gateway.prefix` | path prefix, e.g. `/users` (**required**: declares the route) | — |
//! | `gateway.host` | host the route is limited to (`*.example.com` allowed) | any host |
//! | `gateway.strip_prefix` | `true` or `false` | `[defaults] strip_prefix` |
//! | `gateway.protocol` | `http1` or `h2c` | `[defaults] protocol` |
//! | `gateway.balancer` | a balancer name (not `consistent_hash`) | `[defaults] balancer` |
//! | `gateway.timeout` | e.g. `5s` | `[defaults] timeout` |
//!
//! The instances of a service are read in id order and the first one carrying
//! `gateway.prefix` speaks for the service (all its `gateway.` keys are taken from it). The
//! route must stay where the operator allows ([`crate::guard::RoutePolicy`]: under
//! `[registry] metadata_prefixes` or the service's own name, and out of every configured
//! route's subtree); of two services declaring the same host and prefix, the one whose name
//! sorts first wins. Pure: the controller calls [`spec_from_instances`] on every change of a
//! service's instance list.

use signpost_client::Instance;
use signpost_core::model::{BadDuration, Dur};

use crate::config::{
    check_prefix, normalize_host, parse_balancer, parse_protocol, GatewayConfig, RetryOverride,
    ValueError,
};
use crate::guard::{Refusal, RoutePolicy};
use crate::route::{default_name, RouteSource, RouteSpec};

/// The metadata key that declares a route.
pub const PREFIX: &str = "gateway.prefix";
/// Limits the route to a host.
pub const HOST: &str = "gateway.host";
/// `true` or `false`.
pub const STRIP_PREFIX: &str = "gateway.strip_prefix";
/// `http1` or `h2c`.
pub const PROTOCOL: &str = "gateway.protocol";
/// A balancer name.
pub const BALANCER: &str = "gateway.balancer";
/// A duration.
pub const TIMEOUT: &str = "gateway.timeout";

/// A bad `gateway.*` value in the metadata of the instance that declares a service's route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {instance} metadata {key}: {problem}")]
pub struct MetadataError {
    /// The declaring instance's id.
    pub instance: String,
    /// The metadata key.
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: MetadataProblem,
}

/// What is wrong with one `gateway.*` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataProblem {
    /// A value a configured route would not accept either.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// `gateway.strip_prefix` that is not a boolean.
    #[error("true or false, got {0:?}")]
    NotABool(String),
    /// `gateway.timeout` that is not a duration.
    #[error(transparent)]
    Duration(#[from] BadDuration),
    /// A zero `gateway.timeout`.
    #[error("must be above 0")]
    ZeroTimeout,
    /// A route the operator does not allow the registry to declare.
    #[error("refused: {0}")]
    Refused(Box<Refusal>),
}

/// The route `service`'s instances declare, if any. `Err` names a bad value or a route `policy`
/// refuses (the service is then not routed, and the controller logs why).
pub fn spec_from_instances(
    config: &GatewayConfig,
    policy: &RoutePolicy,
    service: &str,
    instances: &[Instance],
) -> Result<Option<RouteSpec>, MetadataError> {
    let Some(declaring) = instances
        .iter()
        .filter(|i| i.metadata.contains_key(PREFIX))
        .min_by(|a, b| a.id.cmp(&b.id))
    else {
        return Ok(None);
    };
    let meta = &declaring.metadata;
    let get = |k: &str| meta.get(k).map(|v| v.trim());
    let at = |key: &'static str, problem: MetadataProblem| MetadataError {
        instance: declaring.id.clone(),
        key,
        problem,
    };

    let prefix = get(PREFIX).unwrap_or_default().to_string();
    check_prefix(&prefix).map_err(|e| at(PREFIX, e.into()))?;
    let host = get(HOST)
        .map(normalize_host)
        .transpose()
        .map_err(|e| at(HOST, e.into()))?;
    let d = &config.defaults;
    let strip_prefix = match get(STRIP_PREFIX) {
        None => d.strip_prefix,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(at(
                STRIP_PREFIX,
                MetadataProblem::NotABool(other.to_string()),
            ))
        }
    };
    let protocol =
        parse_protocol(get(PROTOCOL).unwrap_or(&d.protocol)).map_err(|e| at(PROTOCOL, e.into()))?;
    let balancer = parse_balancer(get(BALANCER).unwrap_or(&d.balancer), None)
        .map_err(|e| at(BALANCER, e.into()))?;
    let timeout = match get(TIMEOUT) {
        None => d.timeout,
        Some(t) => t
            .parse::<Dur>()
            .map_err(|e| at(TIMEOUT, MetadataProblem::Duration(e)))?,
    };
    if timeout.as_millis() == 0 {
        return Err(at(TIMEOUT, MetadataProblem::ZeroTimeout));
    }
    policy
        .check(service, host.as_deref(), &prefix)
        .map_err(|e| at(PREFIX, MetadataProblem::Refused(Box::new(e))))?;
    Ok(Some(RouteSpec {
        name: default_name(host.as_deref(), &prefix),
        host,
        prefix,
        service: service.to_string(),
        strip_prefix,
        balancer,
        timeout: timeout.to_std(),
        connect_timeout: d.connect_timeout.to_std(),
        retry: config.retry_spec(&RetryOverride::default()),
        tag: None,
        protocol,
        source: RouteSource::Registry,
        compress: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::route::Protocol;

    fn instance(id: &str, meta: &[(&str, &str)]) -> Instance {
        Instance {
            id: id.to_string(),
            service: "users".to_string(),
            address: "127.0.0.1".to_string(),
            port: 9000,
            tags: vec![],
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            weight: 100,
            state: Default::default(),
            maintenance: None,
        }
    }

    /// A policy that lets the test services claim anything.
    fn open() -> RoutePolicy {
        RoutePolicy::new(Some(&["/".to_string()]), &[])
    }

    #[test]
    fn no_prefix_no_route() {
        let config = GatewayConfig::default();
        let list = [instance("a", &[("zone", "x")])];
        assert_eq!(
            spec_from_instances(&config, &open(), "users", &list),
            Ok(None)
        );
        assert_eq!(
            spec_from_instances(&config, &open(), "users", &[]),
            Ok(None)
        );
    }

    #[test]
    fn the_first_declaring_instance_by_id_speaks_for_the_service() {
        let config = GatewayConfig::default();
        let list = [
            instance("c", &[(PREFIX, "/third")]),
            instance("a", &[]),
            instance("b", &[(PREFIX, "/users"), (HOST, "API.example.com")]),
        ];
        let spec = spec_from_instances(&config, &open(), "users", &list)
            .unwrap()
            .unwrap();
        assert_eq!(spec.prefix, "/users");
        assert_eq!(spec.host.as_deref(), Some("api.example.com"));
        assert_eq!(spec.name, "api.example.com/users");
        assert_eq!(spec.source, RouteSource::Registry);
        assert_eq!(spec.service, "users");
    }

    #[test]
    fn keys_override_the_defaults() {
        let config = GatewayConfig::default();
        let list = [instance(
            "a",
            &[
                (PREFIX, "/grpc"),
                (STRIP_PREFIX, "true"),
                (PROTOCOL, "h2c"),
                (BALANCER, "least_outstanding"),
                (TIMEOUT, "250ms"),
            ],
        )];
        let spec = spec_from_instances(&config, &open(), "users", &list)
            .unwrap()
            .unwrap();
        assert!(spec.strip_prefix);
        assert_eq!(spec.protocol, Protocol::H2c);
        assert_eq!(spec.balancer.as_str(), "least_outstanding");
        assert_eq!(spec.timeout, Duration::from_millis(250));
    }

    #[test]
    fn a_route_the_policy_refuses_is_named_with_its_reason() {
        let config = GatewayConfig::default();
        let policy = RoutePolicy::new(None, &[]);
        let list = [instance("a", &[(PREFIX, "/admin")])];
        let err = spec_from_instances(&config, &policy, "users", &list).unwrap_err();
        assert_eq!(err.key, PREFIX);
        assert!(matches!(
            &err.problem,
            MetadataProblem::Refused(r) if matches!(**r, Refusal::OutsideOwnName { .. })
        ));
        assert_eq!(
            err.to_string(),
            "instance a metadata gateway.prefix: refused: prefix \"/admin\" is not /users or \
             below it (set registry.metadata_prefixes to allow other prefixes)"
        );
        let list = [instance("a", &[(PREFIX, "/users/v2")])];
        let spec = spec_from_instances(&config, &policy, "users", &list).unwrap();
        assert_eq!(spec.unwrap().prefix, "/users/v2");
    }

    #[test]
    fn bad_values_are_named() {
        let config = GatewayConfig::default();
        for (meta, key) in [
            (vec![(PREFIX, "users")], PREFIX),
            (vec![(PREFIX, "/u"), (STRIP_PREFIX, "yes")], STRIP_PREFIX),
            (vec![(PREFIX, "/u"), (PROTOCOL, "h3")], PROTOCOL),
            (vec![(PREFIX, "/u"), (BALANCER, "fastest")], BALANCER),
            (vec![(PREFIX, "/u"), (TIMEOUT, "soon")], TIMEOUT),
            (vec![(PREFIX, "/u"), (HOST, "a b")], HOST),
        ] {
            let err = spec_from_instances(&config, &open(), "users", &[instance("a", &meta)])
                .unwrap_err();
            assert_eq!(err.key, key);
            let err = err.to_string();
            assert!(err.contains(key), "{err}");
            assert!(err.contains("instance a"), "{err}");
        }
    }
}
