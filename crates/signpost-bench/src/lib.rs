//! `signpost-bench`: load generators for Signpost, and the Signpost-vs-etcd suite.
//!
//! The single-agent scenarios speak only the agent's public HTTP API (`/api/v1/services/...`), so what it measures is
//! what a client would see: HTTP/1.1 keep-alive connections on loopback, JSON bodies, one
//! request in flight per connection.
//!
//! # Layout
//! - [`scenario`]: the scenarios as library functions — [`register`], [`discover`] and [`seed`] —
//!   each running N client tasks, every task with its own `reqwest::Client` and so its own
//!   connection, and returning a [`Report`]. The binary and the smoke test both call these.
//! - [`payload`]: what goes on the wire: service names, instance ids and the ~300-byte
//!   registration bodies (address 10.x.y.z, port, 3 tags, 4 metadata entries, optional TTL check).
//!   The addresses are only data: nothing ever connects to them.
//! - [`stats`]: latency histograms (HdrHistogram, microseconds) and the generator's own CPU time
//!   read from `/proc/self/stat`, so a reader can tell whether the generator was the bottleneck.
//! - [`report`]: the figures of one run, printed as an aligned table or as one JSON object.
//!
//! - [`compare`]: Signpost against etcd 3.4, side by side — register, discover, heartbeat,
//!   watch fan-out, memory and restart — on servers it starts itself, with a Markdown report and
//!   an SVG chart. `bench/run.sh` runs it (see the module's own layout section).
//!
//! `src/main.rs` is only argument parsing and printing; `bench/registry.sh` at the repository root
//! builds the agent, runs the scenarios against it and measures a restart.
#![forbid(unsafe_code)]

pub mod compare;
pub mod payload;
pub mod report;
pub mod scenario;
pub mod stats;

pub use report::Report;
pub use scenario::{discover, register, seed, DiscoverOptions, RegisterOptions};
