//! Where a health check may point: not an open scanner. `[health] check_deny_cidrs` (default
//! the link-local ranges, where cloud metadata services live) and `check_allow_cidrs` (default
//! everything) bound the addresses an HTTP, TCP or gRPC check reaches.
//!
//! The decision is pure ([`signpost_core::cidr::AddressPolicy`] on the addresses, [`target`]
//! for what a check names); resolving a host name is the IO around it, done twice: when the
//! check is registered ([`screen`], called by `service::register`: a refused target is a 400
//! and nothing changes) and before every probe (the prober: DNS may have changed since, so a
//! name that now resolves into a denied range makes the check critical).

use std::net::IpAddr;

use signpost_core::cidr::{literal_ip, AddressPolicy, AddressRefusal};
use signpost_core::model::{self, CheckKind};
use signpost_core::CheckSpec;

use crate::agent::Agent;

/// A check's target refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("check target {target} {}: {refusal} (health.check_deny_cidrs / health.check_allow_cidrs)", via(.host))]
pub struct TargetRefused {
    /// The check's target as registered (URL or `host:port`).
    pub target: String,
    /// The host name it resolved from, when it named one.
    pub host: Option<String>,
    /// Why.
    pub refusal: AddressRefusal,
}

fn via(host: &Option<String>) -> String {
    match host {
        Some(h) => format!("resolves ({h})"),
        None => "is refused".to_string(),
    }
}

/// The host an active check reaches, as an address or a name to resolve, and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A literal address.
    Ip(IpAddr),
    /// A host name and port.
    Name(String, u16),
}

/// What `spec` connects to (`None` for a TTL check, or a target too malformed to name a host:
/// validation refuses those before this runs).
pub fn target(spec: &CheckSpec) -> Option<Target> {
    let host_port = |s: &str| -> Option<Target> {
        let (host, port) = s.rsplit_once(':')?;
        let port = port.parse().ok()?;
        Some(match literal_ip(host) {
            Some(ip) => Target::Ip(ip),
            None => Target::Name(host.to_string(), port),
        })
    };
    match spec.kind()? {
        CheckKind::Ttl(_) => None,
        CheckKind::Http(url) => {
            let url = reqwest::Url::parse(url).ok()?;
            let port = url.port_or_known_default()?;
            // IPv6 hosts come bracketed, which `literal_ip` accepts.
            let host = url.host_str()?;
            Some(match literal_ip(host) {
                Some(ip) => Target::Ip(ip),
                None => Target::Name(host.to_string(), port),
            })
        }
        CheckKind::Tcp(addr) => host_port(addr),
        CheckKind::Grpc(target) => host_port(model::grpc_target(target).0),
    }
}

/// The check's target as text, for messages.
fn shown(spec: &CheckSpec) -> String {
    spec.http
        .clone()
        .or_else(|| spec.tcp.clone())
        .or_else(|| spec.grpc.clone())
        .unwrap_or_default()
}

/// What `service::register` asks before anything changes: whether `check`'s target is one
/// the agent's `[health]` settings let it probe.
pub async fn admit(agent: &Agent, check: Option<&CheckSpec>) -> Result<(), TargetRefused> {
    match check {
        Some(check) => screen(&agent.config().health.check_policy(), check).await,
        None => Ok(()),
    }
}

/// Judges `spec`'s target against `policy`, resolving a host name first. A name that does not
/// resolve passes (the service may not be in DNS yet; the prober checks again each time).
pub async fn screen(policy: &AddressPolicy, spec: &CheckSpec) -> Result<(), TargetRefused> {
    screen_addrs(policy, spec).await.map(drop)
}

/// [`screen`], returning the addresses judged (empty for a TTL check or a name that does not
/// resolve), so a probe can connect to exactly those.
pub async fn screen_addrs(
    policy: &AddressPolicy,
    spec: &CheckSpec,
) -> Result<Vec<IpAddr>, TargetRefused> {
    let refused = |host: Option<String>, refusal| TargetRefused {
        target: shown(spec),
        host,
        refusal,
    };
    match target(spec) {
        None => Ok(Vec::new()),
        Some(Target::Ip(ip)) => policy
            .check(ip)
            .map(|()| vec![ip])
            .map_err(|r| refused(None, r)),
        Some(Target::Name(name, port)) => {
            let resolved = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>());
            match resolved {
                Ok(addrs) => match policy.check_all(addrs.iter().copied()) {
                    Ok(()) => Ok(addrs),
                    Err(r) => Err(refused(Some(name), r)),
                },
                Err(e) => {
                    tracing::debug!(host = %name, "check target does not resolve (yet): {e}");
                    Ok(Vec::new())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> CheckSpec {
        serde_json::from_value(json).unwrap()
    }

    fn ip(s: &str) -> Target {
        Target::Ip(s.parse().unwrap())
    }

    #[test]
    fn targets_of_each_kind() {
        let t = |j| target(&spec(j));
        assert_eq!(t(serde_json::json!({"ttl": "10s"})), None);
        assert_eq!(
            t(serde_json::json!({"http": "http://169.254.169.254/latest/meta-data"})),
            Some(ip("169.254.169.254"))
        );
        assert_eq!(
            t(serde_json::json!({"http": "https://[fe80::1]:8443/h"})),
            Some(ip("fe80::1"))
        );
        assert_eq!(
            t(serde_json::json!({"http": "https://metadata.internal/x"})),
            Some(Target::Name("metadata.internal".into(), 443))
        );
        assert_eq!(
            t(serde_json::json!({"tcp": "10.0.0.1:5432"})),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(t(serde_json::json!({"tcp": "[::1]:5432"})), Some(ip("::1")));
        assert_eq!(
            t(serde_json::json!({"tcp": "db:5432"})),
            Some(Target::Name("db".into(), 5432))
        );
        assert_eq!(
            t(serde_json::json!({"grpc": "169.254.1.1:50051/pkg.Svc"})),
            Some(ip("169.254.1.1"))
        );
    }

    #[tokio::test]
    async fn screening_refuses_denied_literals_and_names_that_resolve_there() {
        let policy = AddressPolicy::default();
        let err = screen(
            &policy,
            &spec(serde_json::json!({"http": "http://169.254.169.254/latest"})),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "check target http://169.254.169.254/latest is refused: 169.254.169.254 is in the \
             denied range 169.254.0.0/16 (health.check_deny_cidrs / health.check_allow_cidrs)"
        );
        assert_eq!(
            screen(&policy, &spec(serde_json::json!({"tcp": "127.0.0.1:1"}))).await,
            Ok(())
        );
        // localhost resolves to loopback: denied when loopback is.
        let loopback = AddressPolicy::deny_only(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let err = screen(&loopback, &spec(serde_json::json!({"tcp": "localhost:80"})))
            .await
            .unwrap_err();
        assert_eq!(err.host.as_deref(), Some("localhost"));
        assert!(err.to_string().contains("resolves (localhost)"), "{err}");
        // Outside an allow list.
        let allow = AddressPolicy {
            deny: vec![],
            allow: Some(vec!["10.0.0.0/8".parse().unwrap()]),
        };
        let err = screen(
            &allow,
            &spec(serde_json::json!({"grpc": "127.0.0.1:50051"})),
        )
        .await
        .unwrap_err();
        assert!(matches!(err.refusal, AddressRefusal::NotAllowed { .. }));
        // A name that does not resolve is left to the prober.
        assert_eq!(
            screen(
                &policy,
                &spec(serde_json::json!({"tcp": "no-such-host.invalid:80"}))
            )
            .await,
            Ok(())
        );
    }
}
