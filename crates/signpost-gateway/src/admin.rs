//! The admin API on its own port: `GET /` lists the routes with the health of their upstreams,
//! and the services the gateway follows, as JSON; `GET /metrics` is Prometheus text.

use std::sync::atomic::Ordering;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Serialize;
use signpost_client::breaker::BreakerState;
use signpost_core::model::Dur;

use crate::body::ProxyBody;
use crate::error::json_response;
pub use crate::state::RefusedInstance;
use crate::state::{Shared, Snapshot};

/// One route as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    /// The route's name.
    pub name: String,
    /// The host it is limited to, if any.
    pub host: Option<String>,
    /// Its path prefix.
    pub prefix: String,
    /// The service it leads to.
    pub service: String,
    /// `config` or `registry`.
    pub source: &'static str,
    /// Whether the prefix is stripped.
    pub strip_prefix: bool,
    /// The balancer's name.
    pub balancer: &'static str,
    /// `http1` or `h2c`.
    pub protocol: &'static str,
    /// Time until response headers.
    pub timeout: String,
    /// Attempts in all.
    pub attempts: u32,
    /// The tag instances must carry.
    pub tag: Option<String>,
    /// The service's discovery watch.
    pub discovery: DiscoveryStatus,
    /// The instances.
    pub upstreams: Vec<UpstreamStatus>,
}

/// The state of a route's discovery watch.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryStatus {
    /// A list is known.
    pub ready: bool,
    /// The watch is connected (else the last known list is served).
    pub connected: bool,
    /// The registry index of the list.
    pub index: u64,
}

/// One instance of a route's service.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    /// Instance id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Balancing weight.
    pub weight: u32,
    /// Healthy in the registry (every listed instance is: discovery serves passing ones).
    pub healthy: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Ejected by outlier detection.
    pub ejected: bool,
    /// Takes traffic now: healthy, breaker not open, not ejected.
    pub available: bool,
    /// Attempts sent on this route.
    pub requests: u64,
    /// Failed attempts on this route.
    pub failures: u64,
    /// Idle pooled connections to the address.
    pub idle_connections: usize,
}

/// A service the gateway follows, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The service.
    pub name: String,
    /// A configured route names it.
    pub configured: bool,
    /// The registry's catalog lists it.
    pub in_catalog: bool,
    /// Its discovery watch.
    pub discovery: DiscoveryStatus,
    /// Healthy instances.
    pub instances: usize,
    /// The prefix its instances declare in `gateway.prefix`, if any.
    pub declared_prefix: Option<String>,
    /// The host its instances declare in `gateway.host`, if any.
    pub declared_host: Option<String>,
    /// Why its `gateway.*` metadata was refused, if it was (a bad value, or a route the
    /// operator does not allow: see [`crate::guard`]).
    pub problem: Option<String>,
    /// Its instances at addresses in `registry.deny_cidrs`: never forwarded to.
    pub refused_instances: Vec<RefusedInstance>,
}

/// The followed services of a snapshot, by name.
pub(crate) fn services(snapshot: &Snapshot) -> Vec<ServiceStatus> {
    snapshot
        .services
        .iter()
        .map(|s| {
            let status = s.watch.status();
            ServiceStatus {
                name: s.name.clone(),
                configured: s.configured,
                in_catalog: s.in_catalog,
                discovery: DiscoveryStatus {
                    ready: status.ready,
                    connected: status.connected,
                    index: status.index,
                },
                instances: s.watch.instances().len(),
                declared_prefix: s.declared.as_ref().map(|d| d.prefix.clone()),
                declared_host: s.declared.as_ref().and_then(|d| d.host.clone()),
                problem: s.problem.clone(),
                refused_instances: s.refused_instances.clone(),
            }
        })
        .collect()
}

/// The routes of a snapshot, in matching order.
pub(crate) fn routes(snapshot: &Snapshot) -> Vec<RouteStatus> {
    snapshot
        .table
        .entries()
        .iter()
        .map(|e| {
            let spec = &e.route.spec;
            let status = e.watch.status();
            let selector = &e.route.selector;
            let states = selector.endpoint_states(&e.instances);
            let upstreams = e
                .instances
                .iter()
                .zip(e.upstreams.iter())
                .zip(states.iter())
                .map(|((instance, upstream), state)| {
                    let breaker = state.breaker_state();
                    let ejected = selector.ejected(state);
                    UpstreamStatus {
                        id: instance.id.clone(),
                        address: upstream.pool.authority().to_string(),
                        weight: instance.weight,
                        healthy: true,
                        breaker: match breaker {
                            BreakerState::Closed => "closed",
                            BreakerState::Open => "open",
                            BreakerState::HalfOpen => "half_open",
                        },
                        ejected,
                        available: breaker != BreakerState::Open && !ejected,
                        requests: upstream.stats.attempts.load(Ordering::Relaxed),
                        failures: upstream.stats.failures(),
                        idle_connections: upstream.pool.idle_count(),
                    }
                })
                .collect();
            RouteStatus {
                name: spec.name.clone(),
                host: spec.host.clone(),
                prefix: spec.prefix.clone(),
                service: spec.service.clone(),
                source: spec.source.as_str(),
                strip_prefix: spec.strip_prefix,
                balancer: spec.balancer.as_str(),
                protocol: spec.protocol.as_str(),
                timeout: Dur(u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX))
                    .to_string(),
                attempts: spec.retry.attempts,
                tag: spec.tag.clone(),
                discovery: DiscoveryStatus {
                    ready: status.ready,
                    connected: status.connected,
                    index: status.index,
                },
                upstreams,
            }
        })
        .collect()
}

/// Answers an admin request.
pub(crate) fn handle<B>(shared: &Shared, req: &Request<B>) -> Response<ProxyBody> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            br#"{"error":"the admin API only answers GET"}"#.to_vec(),
            None,
        );
    }
    match req.uri().path() {
        "/" => {
            #[derive(Serialize)]
            struct Body {
                routes: Vec<RouteStatus>,
                services: Vec<ServiceStatus>,
            }
            let snapshot = shared.snapshot();
            let body = Body {
                routes: routes(&snapshot),
                services: services(&snapshot),
            };
            let json = serde_json::to_vec_pretty(&body).unwrap_or_else(|_| b"{}".to_vec());
            json_response(StatusCode::OK, json, None)
        }
        "/metrics" => {
            let text = crate::metrics::render(shared, &shared.snapshot());
            let mut response = Response::new(ProxyBody::full(text));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        path => json_response(
            StatusCode::NOT_FOUND,
            serde_json::to_vec(&serde_json::json!({
                "error": format!("no admin endpoint {path}; try / or /metrics")
            }))
            .unwrap_or_default(),
            None,
        ),
    }
}
