//! The agent's Prometheus recorder must not keep histogram samples between scrapes: an agent
//! nobody scrapes kept every request's latency sample for ever (issue 14's soak). Its own test
//! binary, with its one test, because it counts the whole process's heap with a global
//! allocator (the test runs on a current-thread runtime, so nothing else allocates meanwhile).

use std::alloc::System;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes the process holds: allocated minus freed (a realloc's change is in both).
fn held() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

/// Samples recorded between two upkeeps (each kept until drained: 24 bytes and more).
const SAMPLES_PER_PERIOD: usize = 20_000;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn histogram_samples_are_drained_though_nobody_scrapes() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let (closing, closed) = tokio::sync::watch::channel(false);
    let every = signpost_server::recorder::UPKEEP_EVERY;
    let upkeep = tokio::spawn(signpost_server::recorder::run(
        recorder.handle(),
        every,
        closed,
    ));
    let record = || {
        metrics::with_local_recorder(&recorder, || {
            let h = metrics::histogram!("signpost_http_request_duration_seconds", "route" => "/x");
            for n in 0..SAMPLES_PER_PERIOD {
                h.record(n as f64 * 1e-6);
            }
        })
    };
    // A first period: the series, its summary and the upkeep's own state come into being.
    record();
    tokio::time::sleep(every + Duration::from_millis(1)).await;
    let start = held();
    for _ in 0..20 {
        record();
        tokio::time::sleep(every).await;
    }
    let grown = held() - start;
    // Kept, 20 periods' samples would be 20 × 20,000 × 24 bytes ≈ 9.6 MB; drained, only the
    // summary's (bounded) state is left.
    assert!(
        grown < 1_000_000,
        "the recorder holds {grown} more bytes after 400,000 samples"
    );

    closing.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), upkeep)
        .await
        .expect("upkeep stops when the agent closes")
        .unwrap();
}
