//! What a registration may make the gateway do. Pure: unit-tested in `guard/tests.rs`.
//!
//! - [`RoutePolicy`]: where a route declared in instance metadata may go.
//!   - With `[registry] metadata_prefixes`, its prefix must be one of them or below one
//!     (whole segments); without, it must be `/<its own service name>` or below it.
//!   - A configured `[[route]]` owns its whole subtree: a declared route whose prefix equals
//!     the configured prefix or lies below it, on a host that overlaps the configured route's
//!     (no host overlaps every host), is refused, whatever host it names. The one exception is
//!     a subtree the operator delegated explicitly: a `metadata_prefixes` entry strictly below
//!     the configured prefix (a catch-all `prefix = "/"` with `metadata_prefixes = ["/svc/"]`
//!     leaves `/svc/…` to the registry).
//! - Upstream addresses: [`signpost_core::cidr::AddressPolicy`] on `[registry] deny_cidrs`;
//!   the controller leaves denied instances out of selection, and the pool refuses to dial a
//!   host name that resolves into a denied range.

use crate::route::{host_matches, prefix_matches, RouteSpec};

/// Why a route declared in the registry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Outside every `registry.metadata_prefixes` entry.
    #[error("prefix {prefix:?} is not under registry.metadata_prefixes ({})", .allowed.join(", "))]
    OutsideAllowed {
        /// The declared prefix.
        prefix: String,
        /// The allowed prefixes.
        allowed: Vec<String>,
    },
    /// No `metadata_prefixes` configured and the prefix is not the service's own.
    #[error("prefix {prefix:?} is not /{service} or below it (set registry.metadata_prefixes to allow other prefixes)")]
    OutsideOwnName {
        /// The declared prefix.
        prefix: String,
        /// The declaring service.
        service: String,
    },
    /// Inside the subtree of a configured route.
    #[error("{} would take traffic of configured route {route:?} ({}), which owns its whole subtree", show(.host.as_deref(), .prefix), show(.configured_host.as_deref(), .configured_prefix))]
    Configured {
        /// The declared host.
        host: Option<String>,
        /// The declared prefix.
        prefix: String,
        /// The configured route's name.
        route: String,
        /// Its host.
        configured_host: Option<String>,
        /// Its prefix.
        configured_prefix: String,
    },
}

/// `host h prefix "/p"`, or `prefix "/p"`.
fn show(host: Option<&str>, prefix: &str) -> String {
    match host {
        Some(h) => format!("host {h} prefix {prefix:?}"),
        None => format!("prefix {prefix:?}"),
    }
}

/// A configured route as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    /// Its name.
    name: String,
    /// Its host pattern.
    host: Option<String>,
    /// Its prefix.
    prefix: String,
    /// The `metadata_prefixes` entries strictly below `prefix`: subtrees the operator left to
    /// the registry.
    delegated: Vec<String>,
}

/// Where registry routes may go, given the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// `registry.metadata_prefixes` (`None`: each service under `/<name>`).
    allowed: Option<Vec<String>>,
    /// The configured routes.
    configured: Vec<Owned>,
}

impl RoutePolicy {
    /// The policy of `metadata_prefixes` and the configured routes `configured`.
    pub fn new(metadata_prefixes: Option<&[String]>, configured: &[RouteSpec]) -> Self {
        let allowed = metadata_prefixes.map(<[String]>::to_vec);
        let configured = configured
            .iter()
            .map(|c| Owned {
                name: c.name.clone(),
                host: c.host.clone(),
                prefix: c.prefix.clone(),
                delegated: allowed
                    .iter()
                    .flatten()
                    .filter(|a| strictly_below(&c.prefix, a))
                    .cloned()
                    .collect(),
            })
            .collect();
        RoutePolicy {
            allowed,
            configured,
        }
    }

    /// Whether `service` may declare a route on `host` (any host when `None`) and `prefix`.
    pub fn check(&self, service: &str, host: Option<&str>, prefix: &str) -> Result<(), Refusal> {
        match &self.allowed {
            Some(allowed) => {
                if !allowed.iter().any(|a| prefix_matches(a, prefix)) {
                    return Err(Refusal::OutsideAllowed {
                        prefix: prefix.to_string(),
                        allowed: allowed.clone(),
                    });
                }
            }
            None => {
                if !prefix_matches(&format!("/{service}"), prefix) {
                    return Err(Refusal::OutsideOwnName {
                        prefix: prefix.to_string(),
                        service: service.to_string(),
                    });
                }
            }
        }
        for owned in &self.configured {
            let inside = prefix_matches(&owned.prefix, prefix)
                && hosts_overlap(owned.host.as_deref(), host)
                && !owned.delegated.iter().any(|d| prefix_matches(d, prefix));
            if inside {
                return Err(Refusal::Configured {
                    host: host.map(str::to_string),
                    prefix: prefix.to_string(),
                    route: owned.name.clone(),
                    configured_host: owned.host.clone(),
                    configured_prefix: owned.prefix.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether `child` lies strictly below `parent` on whole segments (trailing slashes aside:
/// `/svc/` is not below `/svc`).
fn strictly_below(parent: &str, child: &str) -> bool {
    let p = parent.trim_end_matches('/');
    let c = child.trim_end_matches('/');
    c.len() > p.len() && c.starts_with(p) && c.as_bytes()[p.len()] == b'/'
}

/// Whether some request host matches both patterns (`None`: any host).
pub(crate) fn hosts_overlap(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a == b || covers(a, b) || covers(b, a),
    }
}

/// Whether wildcard `pattern` matches every host `other` matches.
fn covers(pattern: &str, other: &str) -> bool {
    pattern.starts_with("*.") && host_matches(pattern, other.strip_prefix("*.").unwrap_or(other))
}

#[cfg(test)]
mod tests;
