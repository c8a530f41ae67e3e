//! Routes by service name (`[auto_routes] prefix = "/svc"`): `/svc/<service>/rest` goes to
//! `<service>` as `/rest`, without a `[[route]]` per service.
//!
//! - Only services the registry's catalog lists are routed. The gateway reads the catalog with
//!   its own token, and the agent lists only the services that token may read, so a service the
//!   gateway may not read answers 404 exactly like one that does not exist. Such a request
//!   leaves nothing behind: no discovery, no entry.
//! - A listed service is followed lazily: its first request asks the control plane
//!   ([`Demand`]), which starts its discovery and adds its route (prefix `/svc/<service>`,
//!   prefix stripped, `[defaults]` settings) to the next snapshot; the request waits for that
//!   route's first instance list, at most [`FIRST_LIST_WAIT`]. At most
//!   `[auto_routes] max_services` services are followed this way; a request for one more is
//!   answered 503 `auto_route_limit`. A followed service that leaves the catalog is dropped.
//! - The auto route is an ordinary route in the table, matched by the usual rule (longest
//!   prefix wins): a configured or declared route with a longer prefix wins, and one with the
//!   same prefix (`/svc/<service>`) replaces the auto route altogether.

use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::ProxyError;
use crate::route::{self, RouteSource};
use crate::state::{Shared, Snapshot};

/// How long a request for a service followed for the first time waits for its instance list.
pub(crate) const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// What the request path knows about auto routes, published in each snapshot.
#[derive(Debug, Clone)]
pub(crate) struct AutoView {
    /// The configured prefix without a trailing `/` (`""` for `/`).
    pub(crate) base: String,
    /// The services the registry lists for the gateway's token; `None` until it is known.
    pub(crate) catalog: Option<Arc<BTreeSet<String>>>,
    /// `max_services` services are followed already.
    pub(crate) full: bool,
    /// The cap (for the error).
    pub(crate) max: usize,
}

/// Services requests asked the control plane to follow.
#[derive(Debug, Default)]
pub(crate) struct Demand {
    /// Not yet taken by the control plane.
    pending: Mutex<BTreeSet<String>>,
    /// Wakes the control plane.
    pub(crate) notify: Notify,
}

impl Demand {
    /// Asks for `service` to be followed.
    fn ask(&self, service: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.contains(service) {
            pending.insert(service.to_string());
            self.notify.notify_one();
        }
    }

    /// The services asked for since the last call.
    pub(crate) fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The configured prefix as [`AutoView::base`].
pub(crate) fn base(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_string()
}

/// The service `path` names under `base` and the length of its auto route's prefix
/// (`base/<service>`): `None` when the path is not below `base` or its first segment there
/// is not a service name.
pub(crate) fn split<'p>(base: &str, path: &'p str) -> Option<(&'p str, usize)> {
    let rest = path.strip_prefix(base)?.strip_prefix('/')?;
    let service = rest.split('/').next().unwrap_or("");
    crate::config::check_service(service).ok()?;
    Some((service, base.len() + 1 + service.len()))
}

/// The spec of `service`'s auto route: `[defaults]` settings, the prefix stripped.
pub(crate) fn spec(
    config: &crate::config::GatewayConfig,
    base: &str,
    service: &str,
) -> Option<route::RouteSpec> {
    let route = crate::config::RouteConfig {
        prefix: format!("{base}/{service}"),
        service: service.to_string(),
        strip_prefix: Some(true),
        ..Default::default()
    };
    let mut spec = config.route_spec(&route).ok()?;
    spec.source = RouteSource::Auto;
    Some(spec)
}

/// The service whose auto route `path` needs and does not have ready in `snapshot`, if any:
/// `None` when auto routes are off, the path is not below the prefix, another route with a
/// prefix at least as long matches, or the auto route is there with its first list.
fn wanted<'p>(snapshot: &Snapshot, host: Option<&str>, path: &'p str) -> Option<&'p str> {
    let auto = snapshot.auto.as_ref()?;
    let (service, len) = split(&auto.base, path)?;
    match snapshot.table.find(host, path) {
        Some(entry) if entry.route.spec.prefix.len() > len => None,
        Some(entry) if entry.route.spec.prefix.len() == len => {
            let auto_route = entry.route.spec.source == RouteSource::Auto;
            (auto_route && !entry.resolved && entry.instances.is_empty()).then_some(service)
        }
        _ => Some(service),
    }
}

/// The snapshot a request is routed in: `snapshot` itself, unless the request needs an auto
/// route that is not ready; then, once the control plane has followed the service and its
/// first list is known (at most [`FIRST_LIST_WAIT`]), the snapshot that has it. A service the
/// catalog does not list is a 404 (no route); one more than `max_services` a 503.
pub(crate) async fn settle<B>(
    shared: &Shared,
    snapshot: Arc<Snapshot>,
    req: &http::Request<B>,
) -> Result<Arc<Snapshot>, ProxyError> {
    let host = route::request_host(req.uri(), req.headers());
    let path = req.uri().path();
    if wanted(&snapshot, host, path).is_none() {
        return Ok(snapshot);
    }
    let deadline = tokio::time::Instant::now() + FIRST_LIST_WAIT;
    loop {
        let mut published = pin!(shared.published.notified());
        published.as_mut().enable();
        let snapshot = shared.snapshot();
        let Some(service) = wanted(&snapshot, host, path) else {
            return Ok(snapshot);
        };
        let Some(auto) = snapshot.auto.as_ref() else {
            return Ok(snapshot);
        };
        let followed =
            snapshot.table.entries().iter().any(|e| {
                e.route.spec.source == RouteSource::Auto && e.route.spec.service == service
            });
        match &auto.catalog {
            Some(catalog) if !catalog.contains(service) => {
                return Err(ProxyError::NoRoute {
                    path: path.to_string(),
                })
            }
            Some(_) if !followed && auto.full => {
                return Err(ProxyError::AutoRouteLimit { limit: auto.max })
            }
            Some(_) if !followed => shared.demand.ask(service),
            // Followed, its first list not there yet; or the catalog not yet known.
            _ => {}
        }
        if tokio::time::timeout_at(deadline, published).await.is_err() {
            // Answer with what there is (a route without instances: 503).
            return Ok(shared.snapshot());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_segment_below_the_prefix_names_the_service() {
        assert_eq!(split("/svc", "/svc/users/x/y"), Some(("users", 10)));
        assert_eq!(split("/svc", "/svc/users"), Some(("users", 10)));
        assert_eq!(split("/svc", "/svc/users/"), Some(("users", 10)));
        assert_eq!(split("", "/users/x"), Some(("users", 6)));
        assert_eq!(split(&base("/svc/"), "/svc/a"), Some(("a", 6)));
        for outside in [
            "/svc",
            "/svc/",
            "/svcx/users",
            "/other/users",
            "/svc/Users/x",
            "/svc/a_b",
        ] {
            assert_eq!(split("/svc", outside), None, "{outside}");
        }
    }
}
