//! The SDK's metrics in a Prometheus render: a recorder installed as an application would,
//! discovery against an in-process agent, calls that succeed, fail and fail fast.
//!
//! One test only: the recorder is global to the process, and breaker transitions carry no
//! service label.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{json, Value};
use signpost_client::breaker::BreakerConfig;
use signpost_client::client::{CallError, ServiceClient};
use signpost_client::discovery::{Discovery, DiscoveryOptions};
use signpost_client::retry::{Backoff, Jitter, RetryPolicy};

use common::{eventually, instance, AgentExt, TestAgent};

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(render: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    render
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn sdk_metrics_appear_in_a_prometheus_render_with_the_right_counts() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");

    // One backend behind two registered instances; it fails on demand.
    let failing = Arc::new(AtomicBool::new(false));
    let flag = failing.clone();
    let app = Router::new().route(
        "/who",
        get(move || {
            let failing = flag.load(Ordering::SeqCst);
            async move {
                if failing {
                    Err(StatusCode::SERVICE_UNAVAILABLE)
                } else {
                    Ok(Json(json!({"ok": true})))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let t = TestAgent::start().await;
    for id in ["m-a", "m-b"] {
        let mut body = instance(id, port);
        body["address"] = json!("127.0.0.1");
        assert_eq!(t.register("metered", body).await.0, 201);
    }
    let discovery = Discovery::new(t.registry(), DiscoveryOptions::default());
    let watch = discovery.service("metered");
    eventually("both instances are discovered", || {
        let n = watch.instances().len();
        async move { n == 2 }
    })
    .await;
    let client = ServiceClient::builder(watch.clone())
        .breaker(BreakerConfig {
            consecutive_failures: 2,
            cool_down: Duration::from_secs(600),
            ..BreakerConfig::default()
        })
        .no_outlier_detection()
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .without_budget()
                .backoff(Backoff {
                    base: Duration::from_millis(1),
                    max: Duration::from_millis(2),
                    jitter: Jitter::None,
                }),
        )
        .build();

    // Three successes, one attempt each.
    for _ in 0..3 {
        let _: Value = client.get("/who").await.unwrap();
    }
    // Failing: each call tries both instances (two attempts); after two calls both breakers
    // have seen two failures in a row and open; the third call fails fast, with no attempt.
    failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let err = client.get::<Value>("/who").await.unwrap_err();
        assert_eq!(err.status(), Some(503), "{err}");
    }
    let err = client.get::<Value>("/who").await.unwrap_err();
    assert!(matches!(err, CallError::CircuitOpen { .. }), "{err}");

    let render = handle.render();
    let svc = ("service", "metered");
    let calls = |outcome| {
        sample(
            &render,
            "signpost_client_calls_total",
            &[svc, ("outcome", outcome)],
        )
    };
    assert_eq!(calls("success"), Some(3.0), "{render}");
    assert_eq!(calls("status"), Some(2.0), "{render}");
    assert_eq!(calls("circuit_open"), Some(1.0), "{render}");
    assert_eq!(
        sample(&render, "signpost_client_attempts_total", &[svc]),
        Some(7.0),
        "{render}"
    );
    assert_eq!(
        sample(
            &render,
            "signpost_client_call_duration_seconds_count",
            &[svc]
        ),
        Some(6.0),
        "{render}"
    );
    assert_eq!(
        sample(
            &render,
            "signpost_client_breaker_transitions_total",
            &[("to", "open")]
        ),
        Some(2.0),
        "{render}"
    );
    let updates = sample(&render, "signpost_client_discovery_updates_total", &[svc]);
    assert!(updates.is_some_and(|n| n >= 1.0), "{render}");
    assert_eq!(
        sample(
            &render,
            "signpost_client_discovery_cache_age_seconds",
            &[svc]
        ),
        Some(0.0),
        "a live watch: {render}"
    );

    // The agent goes away: the served list ages.
    t.shutdown().await;
    eventually("the cache age grows while the watch is lost", || {
        let age = sample(
            &handle.render(),
            "signpost_client_discovery_cache_age_seconds",
            &[svc],
        );
        async move { age.is_some_and(|a| a > 0.0) }
    })
    .await;
    server.abort();
}
