//! Signpost's native HTTP API on the wire: the JSON bodies the agent answers and accepts under
//! `/api/v1`, and the one Server-Sent Events codec its watch stream speaks.
//!
//! The agent encodes with these types, and the SDK, the CLI and the benchmark decode with them,
//! so a shape is written down once. Types that carry instances are generic over the instance
//! type: the agent serialises its own borrowed instances without a copy
//! (`InstanceList<&signpost_core::Instance>`), clients decode [`InstanceList<Instance>`].
//!
//! # Layout
//! - [`instance`]: [`Instance`] (an instance as the agent renders it), [`Status`], [`Check`],
//!   [`InstanceKey`], and [`instance::authority`] (`address:port`, for every instance type).
//! - [`services`]: listings ([`InstanceList`]), the services summary ([`ServiceSummary`],
//!   [`StatusCounts`]), the registration body ([`Registration`]) and heartbeat answers
//!   ([`Renewed`], [`BatchRenewed`], [`Rejected`]).
//! - [`definition`]: service definitions ([`ServiceDefinition`], and [`DefinitionSpec`] to
//!   store one).
//!
//! Where the agent writes a `signpost-core` type as is ([`Status`], [`InstanceKey`], the
//! definition types), that type is the wire type and is re-exported here rather than declared
//! again; the others (an [`Instance`] with text timestamps, summaries, KV entries) are
//! declared here to decode leniently, and `tests/core_mirror.rs` checks they read what the
//! core writes.
//! - [`watch`]: the watch stream's events ([`WatchEvent`], [`InstanceChange`]) and how they map
//!   to SSE frames.
//! - [`kv`]: a KV entry ([`KvEntry`]).
//! - [`cluster`]: members, join, remove and leave bodies.
//! - [`error`]: the error body every non-2xx answer carries ([`ErrorBody`]).
//! - [`sse`]: the Server-Sent Events encoder ([`sse::frame`]) and incremental parser
//!   ([`sse::Parser`]).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod definition;
pub mod error;
pub mod instance;
pub mod kv;
pub mod services;
pub mod sse;
pub mod watch;

pub use cluster::{JoinRequest, Left, Member, Members, RemoveRequest};
pub use definition::{DefinitionSpec, Endpoint, Parameter, ServiceDefinition};
pub use error::ErrorBody;
pub use instance::{Check, Instance, InstanceKey, Lifecycle, Maintenance, Status};
pub use kv::KvEntry;
pub use services::{
    BatchRenewed, InstanceList, Registration, Rejected, Renewed, ServiceSummary, StatusCounts,
};
pub use watch::{InstanceChange, WatchEvent};

/// The response header carrying the index an answer reflects (blocking queries wait on it).
pub const INDEX_HEADER: &str = "x-signpost-index";
