//! The Signpost agent: the IO around [`signpost_core`].
//!
//! # Layout
//! - [`consul`]: the Consul-compatible HTTP API (including `/v1/kv`), over the same registry.
//! - [`dns`]: the DNS face (Consul's names), a pure resolver plus hickory's adapter.
//! - [`service`]: the typed operations every face calls (register, renew, list, kv, members…)
//!   and [`service::ServiceError`], which each face maps to its statuses in one place.
//! - [`cluster`]: [`cluster::Cluster`], this member's place in the Raft group: joining and
//!   leaving, leader lookup, and the requests followers hand to the leader.
//! - [`config`]: the typed, validated agent configuration (TOML file + flags).
//! - [`agent`]: [`agent::Agent`] wires storage, Raft, the health checker and HTTP together;
//!   [`agent::Agent::propose`] is the one way writes enter Raft, and [`agent::Agent::serve_all`]
//!   owns every listener (HTTP, Raft, DNS) and background task, and waits for them at shutdown.
//! - [`raft`]: openraft types, the redb log store, the state-machine adapter, and
//!   [`raft::transport`], the one way members reach each other (HTTP, or an in-memory network
//!   with delays, losses and partitions for the in-process cluster tests).
//! - [`store`]: the applied state every reader sees, with per-service change notifications.
//! - [`health`]: the leader's health checker (TTL deadlines, HTTP/TCP probes, the guard).
//! - [`listener`]: the accept loop every HTTP listener runs (TLS, per-client limits, the
//!   request-head deadline, graceful drain).
//! - [`http`]: the HTTP API (native registry API, watches and their listing cache, native KV,
//!   agent info, metrics, Raft RPCs).
//! - [`vitals`]: whether the agent can serve (`/health`), and failing loudly when Raft or
//!   storage stops (503s, an empty leader, exit after a grace period).
//! - [`recorder`]: upkeep of the Prometheus recorder (histogram samples drained, scraped or not).
//! - `telemetry`: the API's server spans and the `raft.commit` span of each traced write.
#![forbid(unsafe_code)]

pub mod agent;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod consul;
pub mod dns;
pub mod health;
pub mod http;
pub mod listener;
pub mod raft;
pub mod recorder;
pub mod service;
pub mod store;
mod telemetry;
pub mod vitals;

pub use agent::Agent;
pub use config::AgentConfig;
