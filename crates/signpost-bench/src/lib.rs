//! `signpost-bench`: load generators for Signpost, and the Signpost-vs-etcd suite.
//!
//! The single-agent scenarios speak only the agent's public HTTP API (`/api/v1/services/...`), so what it measures is
//! what a client would see: HTTP/1.1 keep-alive connections on loopback, JSON bodies, one
//! request in flight per connection.
//!
//! # Layout
//! - [`scenario`]: the scenarios as library functions — [`register`], [`discover`] and [`seed`] —
//!   each running N client tasks, every task with its own `reqwest::Client` and so its own
//!   connection, and returning a [`Report`], or a [`ScenarioError`] when the scenario cannot
//!   run. The binary and the smoke test both call these.
//! - [`payload`]: what goes on the wire: service names, instance ids and the ~300-byte
//!   registration bodies (address 10.x.y.z, port, 3 tags, 4 metadata entries, optional TTL check).
//!   The addresses are only data: nothing ever connects to them.
//! - [`stats`]: latency histograms (HdrHistogram, microseconds) and the generator's own CPU time
//!   read from `/proc/self/stat`, so a reader can tell whether the generator was the bottleneck.
//! - [`report`]: the figures of one run, printed as an aligned table or as one JSON object.
//!
//! - [`soak`]: a long run of many heartbeating instances under churn of random names, for
//!   false expiries, errors and flat memory (`bench/soak.sh`).
//! - [`compare`]: Signpost against etcd 3.4, side by side — register, discover, heartbeat,
//!   watch fan-out, memory and restart — on servers it starts itself, with a Markdown report and
//!   an SVG chart. `bench/run.sh` runs it (see the module's own layout section).
//!
//! Errors are `thiserror` enums ([`ScenarioError`], [`compare::CompareError`],
//! [`compare::target::TargetError`]) that carry their cause; `anyhow` is used only by the binary
//! (to print every cause) and the tests.
//!
//! `src/main.rs` is only argument parsing and printing; `bench/registry.sh` at the repository root
//! builds the agent, runs the scenarios against it and measures a restart.
#![forbid(unsafe_code)]

pub mod compare;
pub mod payload;
pub mod report;
pub mod scenario;
pub mod soak;
pub mod stats;

pub use report::Report;
pub use scenario::{discover, register, seed, DiscoverOptions, RegisterOptions, ScenarioError};

#[cfg(test)]
mod tests {
    /// The library returns typed errors: `anyhow` belongs to the binary (`src/main.rs`) only.
    #[test]
    fn the_library_does_not_use_anyhow() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    visit(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/main.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Its paths, macro calls and imports, spelt so that this test does not
                    // find itself.
                    let name = concat!("any", "how");
                    let uses = [
                        format!("{name}::"),
                        format!("{name}!"),
                        format!("use {name}"),
                    ];
                    if uses.iter().any(|u| text.contains(u.as_str())) {
                        found.push(path.display().to_string());
                    }
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        visit(&src, &mut found);
        assert!(
            found.is_empty(),
            "library files using the binary's error crate: {found:?}"
        );
    }
}
