//! Upkeep of the agent's Prometheus recorder.
//!
//! The agent builds its recorder rather than installing it (`PrometheusBuilder::build_recorder`,
//! one per agent, so that agents in one test process keep their own figures). A recorder keeps
//! every histogram sample it is given (24 bytes each) until they are drained into the
//! histogram's summary, which happens when `/metrics` is rendered or upkeep runs, and only an
//! installed recorder gets an upkeep task of its own. An agent nobody scraped thus kept every
//! request's latency sample for ever: at a thousand requests a second, 85 MB an hour. [`run`]
//! drains them every [`UPKEEP_EVERY`] instead, whether anyone scrapes or not.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// How often the recorder's pending histogram samples are drained into their summaries.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every `every` until `closing` turns true.
pub async fn run(
    handle: PrometheusHandle,
    every: Duration,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}
