//! The pure heart of Signpost: the service registry as a deterministic state machine.
//!
//! Nothing in this crate performs IO, spawns tasks or reads a clock. Callers pass commands and the
//! current time in, and get results and events back; the agent (`signpost-server`) wraps it with
//! Raft replication, storage, HTTP, DNS and the health checker.
//!
//! # Layout
//! - [`cidr`]: which addresses a registration may make the agent or the gateway reach
//!   (deny and allow ranges; pure, the caller resolves names).
//! - [`compact`]: compact forms of what every instance carries (sorted metadata, the
//!   registry's interner of shared strings and check specs).
//! - [`model`]: the data the registry holds (instances, checks, service definitions) and durations.
//! - [`validate`]: turns untrusted registration input into normalised, valid values.
//! - [`registry`]: the replicated state machine: [`registry::Command`]s in, [`registry::Response`]s
//!   and [`registry::Event`]s out, with a per-service modification index.
//! - [`limits`]: bounds on the replicated state (services, instances, keys) and the refusals
//!   [`Registry::apply`] gives when a command would cross one or is malformed.
//! - [`lookup`]: instances by instance id or check id across services (Consul's names for
//!   them), kept beside a [`Registry`] and moved along by its events.
//! - [`kv`]: the replicated key/value store (Consul-compatible semantics: cas, recurse, flags).
//! - [`acl`]: Consul's ACL rule language, policies, tokens and the authorizer (replicated
//!   state changed by [`registry::Command::Acl`]).
//! - [`health`]: the leader-local health monitor: heartbeats and check results in, status
//!   transitions and deregistrations out, with flap damping and the mass-eviction guard.
#![forbid(unsafe_code)]

pub mod acl;
pub mod cidr;
pub mod compact;
pub mod health;
pub mod kv;
pub mod limits;
pub mod lookup;
pub mod model;
pub mod registry;
pub mod validate;

pub use model::{
    CheckSpec, Instance, InstanceKey, Lifecycle, Maintenance, ServiceDefinition, Status,
};
pub use registry::{Command, Event, EventKind, Registry, Request, Response, ServiceEvent};
