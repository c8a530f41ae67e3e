//! Signpost's client SDK: client-side service discovery done the way production Rust services
//! need it.
//!
//! # Layout
//! - [`instance`]: [`Instance`], the SDK's registry-neutral view of one service instance, and
//!   [`Update`], the change stream every registry speaks (`Reset / Add / Update / Remove`).
//! - [`endpoints`]: [`endpoints::Endpoints`], one published instance list with the version that
//!   names it (consumers notice a new list by its version).
//! - [`registry`]: the [`registry::Registry`] trait and its implementations (Signpost's native
//!   API, etcd, and any Consul-compatible agent).
//! - [`discovery`]: [`discovery::Discovery`], the cached, watch-driven instance list per service
//!   (stale-on-error, reconnect with backoff, optional persistence, push-empty protection), its
//!   change stream, and the followed set of services ([`discovery::Discovery::catalog`]).
//! - [`config`]: [`config::Config`], configuration from the KV store (native or Consul API):
//!   typed reads of a key or a prefix and watches that keep the last good value.
//! - [`registration`]: self-registration with a background heartbeat and graceful deregistration.
//! - [`balance`]: load balancers (random, round robin, weighted, smooth weighted round robin,
//!   least outstanding requests, P2C over peak EWMA, consistent hashing) over candidates that
//!   carry their endpoint's statistics, and instance filters.
//! - [`breaker`]: per-instance (and per-service) circuit breakers and outlier ejection.
//! - [`selector`]: [`selector::Selector`], per-request selection over one
//!   [`selector::EndpointState`] per instance (breaker, outlier state, balancer statistics),
//!   returning the chosen position.
//! - [`backoff`]: the one exponential backoff with cap and jitter ([`backoff::Backoff`]) and a
//!   connection's failure count ([`backoff::Reconnect`]); retries, reconnection and heartbeat
//!   retries all wait with it.
//! - [`retry`]: retry policy (over [`backoff::Backoff`]) and a retry budget.
//! - [`client`]: [`client::ServiceClient`], typed JSON calls over all of the above.
//! - [`metrics`]: the SDK's metrics through the `metrics` facade (discovery updates and cache
//!   age, calls by outcome, attempts, latency, breaker transitions).
//! - [`tower_discover`]: a `tower::discover::Discover` adapter over discovery's change stream.
//! - `otel`: OpenTelemetry spans for calls, registry calls and watches, and context propagation.
#![forbid(unsafe_code)]

pub mod endpoints;
pub mod instance;
pub mod registry;

pub mod config;
pub mod discovery;
pub mod registration;

pub mod backoff;
pub mod balance;
pub mod breaker;
pub mod client;
pub mod metrics;
pub mod retry;
pub mod selector;
pub mod tower_discover;

mod otel;

pub use endpoints::Endpoints;
pub use instance::{Instance, Update};

pub use discovery::{Discovery, DiscoveryOptions, ServiceWatch};
pub use registration::{Registration, RegistrationHandle};

pub use client::{CallError, ServiceClient};
