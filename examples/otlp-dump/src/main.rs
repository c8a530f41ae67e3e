//! `otlp-dump`: receives OTLP/HTTP traces (`POST /v1/traces`, protobuf: what the gateway, the
//! agent and the example services export) with the test kit's receiver, and prints one trace
//! as a tree once spans of every expected service have arrived, then exits. The demo
//! (`examples/demo.sh`) points everything at it and prints the trace of one request through
//! gateway → consumer → user-service.
//!
//! ```sh
//! otlp-dump --trace 4bf92f3577b34da6a3ce929d0e0e4736 --services gateway,consumer,user-service
//! # prints "otlp-dump listening on http://127.0.0.1:PORT", then the tree
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use clap::Parser;
use signpost_testkit::otlp::OtlpReceiver;

#[derive(Parser, Debug)]
#[command(about = "Receives OTLP/HTTP traces and prints one trace as a tree")]
struct Args {
    /// The trace to print (32 hex digits).
    #[arg(long)]
    trace: String,
    /// The services (`service.name`) whose spans the trace must hold before it is printed.
    #[arg(long, value_delimiter = ',')]
    services: Vec<String>,
    /// How long to wait for them.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receiver = OtlpReceiver::start().await;
    // One line the demo script waits for.
    println!("otlp-dump listening on {}", receiver.endpoint());
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let spans = receiver.spans();
        let complete = args.services.iter().all(|service| {
            spans
                .iter()
                .any(|s| s.trace_id == args.trace && &s.service == service)
        });
        if complete {
            // Spans a process ended together may come in the next export: a moment more.
            tokio::time::sleep(Duration::from_millis(500)).await;
            print!("{}", receiver.tree(&args.trace));
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            print!("{}", receiver.tree(&args.trace));
            anyhow::bail!(
                "trace {} incomplete after {:?}: expected spans from {}",
                args.trace,
                args.timeout,
                args.services.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
