//! The Consul face's reads (scenario `consul`): what Prometheus, consul-template, Traefik and
//! every Consul client library poll. Signpost only: etcd has no Consul face, so its cells are
//! `–`.
//!
//! For each size of the discover scenario, one service of that many passing instances on a
//! fresh agent, read from the same number of connections for the same time as the native list,
//! first `GET /v1/health/service/NAME?passing`, then `GET /v1/catalog/service/NAME`. Each phase
//! records reads/s, p50, p99 and the server's CPU per request; the report divides the latter by
//! the native list's (`discover.N.cpu_us` of the same run and system) to show what the Consul
//! face costs beyond the native one.

use super::target::{get_ok, Conn, TargetError};

/// A listing of the Consul face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsulRead {
    /// `GET /v1/health/service/NAME?passing`: the passing instances with their checks.
    Health,
    /// `GET /v1/catalog/service/NAME`: the catalog's instances.
    Catalog,
}

impl ConsulRead {
    /// Both, in the order the scenario runs them.
    pub const ALL: [ConsulRead; 2] = [ConsulRead::Health, ConsulRead::Catalog];

    /// The metric key segment: `consul.{key}.{size}.…`.
    pub fn key(self) -> &'static str {
        match self {
            ConsulRead::Health => "health",
            ConsulRead::Catalog => "catalog",
        }
    }

    /// Path and query of the request for `service`.
    pub fn path(self, service: &str) -> String {
        match self {
            ConsulRead::Health => format!("/v1/health/service/{service}?passing"),
            ConsulRead::Catalog => format!("/v1/catalog/service/{service}"),
        }
    }

    /// The request as the report names it (`NAME` for the service).
    pub fn label(self) -> &'static str {
        match self {
            ConsulRead::Health => "`/v1/health/service/NAME?passing`",
            ConsulRead::Catalog => "`/v1/catalog/service/NAME`",
        }
    }
}

impl Conn {
    /// Signpost only: one Consul-face listing of `service`. Answers how many entries the JSON
    /// array held (counted only when `parse`, to keep the generator light; else 0) and the
    /// bytes received.
    pub async fn consul_read(
        &mut self,
        read: ConsulRead,
        service: &str,
        parse: bool,
    ) -> Result<(u64, u64), TargetError> {
        let Conn::Signpost { http, base, .. } = self else {
            return Err(TargetError::NotSignpost);
        };
        let url = format!("{base}{}", read.path(service));
        let body = get_ok(http, &url).await?;
        let n = if parse {
            count_entries(&body).ok_or_else(|| TargetError::NoInstanceList {
                request: format!("GET {url}"),
            })?
        } else {
            0
        };
        Ok((n, body.len() as u64))
    }
}

/// Entries of a Consul listing (a JSON array), or `None` when the body is not one.
pub fn count_entries(body: &[u8]) -> Option<u64> {
    let list: Vec<serde::de::IgnoredAny> = serde_json::from_slice(body).ok()?;
    Some(u64::try_from(list.len()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_counts() {
        assert_eq!(
            ConsulRead::Health.path("web"),
            "/v1/health/service/web?passing"
        );
        assert_eq!(ConsulRead::Catalog.path("web"), "/v1/catalog/service/web");
        assert_eq!(count_entries(br#"[{"a":1},{"b":[2]}]"#), Some(2));
        assert_eq!(count_entries(b"[]"), Some(0));
        assert_eq!(count_entries(br#"{"instances":[]}"#), None);
    }
}
