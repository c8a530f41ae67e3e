//! Starting and stopping: bad configurations are refused up front, and SIGTERM stops the agent
//! promptly even with long-lived requests open.

use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::harness::{poll_until, run_signpost, streaming_client, Agent};

/// Number of watch subscriptions (watch streams plus waiting blocking queries) the agent
/// reports in `/metrics`.
async fn watchers(agent: &Agent) -> Option<f64> {
    let text = crate::harness::client()
        .get(agent.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("signpost_watchers "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), ["--dev"]).await;
    let client = streaming_client();

    // A watch stream, held open after its first (reset) event.
    let watch = client
        .get(agent.url("/api/v1/services/x/watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let mut events = watch.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the watch stream sent nothing")
        .expect("the watch stream ended")
        .expect("the watch stream failed");
    assert!(
        String::from_utf8_lossy(&first).contains("reset"),
        "first watch event: {first:?}"
    );
    let watch_task = tokio::spawn(async move {
        // Drain until the agent closes the stream.
        while let Some(chunk) = events.next().await {
            if chunk.is_err() {
                break;
            }
        }
    });

    // A blocking query that would wait five minutes.
    let index = agent.get_json("/api/v1/services/x/instances").await["index"]
        .as_u64()
        .unwrap();
    let url = agent.url(&format!(
        "/api/v1/services/x/instances?index={index}&wait=5m"
    ));
    let blocking = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });

    // Both are being held by the agent before it is told to stop.
    poll_until(
        Duration::from_secs(10),
        "2 watchers in /metrics",
        || async { watchers(&agent).await.filter(|n| *n >= 2.0) },
    )
    .await;
    assert!(!blocking.is_finished(), "the blocking query returned early");

    let asked = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(5)).await;
    let took = asked.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "the agent did not exit within 5s of SIGTERM with a watch and a blocking query open\n{}",
            agent.logs()
        )
    });
    eprintln!("SIGTERM -> exit {status} in {took:?}");
    assert!(
        status.success(),
        "SIGTERM exit status {status}\n{}",
        agent.logs()
    );

    // The long-lived requests were ended, not left hanging.
    tokio::time::timeout(Duration::from_secs(5), watch_task)
        .await
        .expect("the watch stream stayed open after the agent exited")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), blocking)
        .await
        .expect("the blocking query stayed open after the agent exited")
        .unwrap()
        .ok();
    let logs = agent.logs();
    assert!(
        logs.contains("SIGTERM received") && logs.contains("signpost agent stopped"),
        "the agent did not go through its shutdown path:\n{logs}"
    );
}

/// Runs `signpost ARGS`, expecting it to refuse to start; returns its stderr.
async fn refused(cwd: &std::path::Path, args: &[&str]) -> String {
    let run = run_signpost(cwd, args, Duration::from_secs(15)).await;
    assert!(
        !run.status.success(),
        "`signpost {}` started (exit {}) but should have been refused\nstderr: {}",
        args.join(" "),
        run.status,
        run.stderr
    );
    run.stderr
}

#[tokio::test]
async fn bad_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::harness::free_port().to_string();
    let addr = format!("127.0.0.1:{port}");

    // A misspelt key is an error, not silently ignored.
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "data_dri = \"/x\"\n").unwrap();
    let stderr = refused(
        dir.path(),
        &[
            "agent",
            "--config",
            config.to_str().unwrap(),
            "--http-addr",
            &addr,
        ],
    )
    .await;
    assert!(
        stderr.contains("unknown field") && stderr.contains("data_dri"),
        "stderr does not name the unknown key: {stderr}"
    );

    // --dev and --data-dir contradict each other.
    let data = dir.path().join("data");
    let stderr = refused(
        dir.path(),
        &[
            "agent",
            "--dev",
            "--data-dir",
            data.to_str().unwrap(),
            "--http-addr",
            &addr,
        ],
    )
    .await;
    assert!(
        stderr.contains("dev") && stderr.contains(data.to_str().unwrap()),
        "stderr does not explain the --dev/--data-dir conflict: {stderr}"
    );
    assert!(!data.exists(), "a refused --dev agent created its data dir");

    // Neither: the agent must be told where its data lives. (No flags at all: validation comes
    // before the agent binds its default address.)
    let stderr = refused(dir.path(), &["agent"]).await;
    assert!(
        stderr.contains("--data-dir") || stderr.contains("--dev"),
        "stderr does not say how to choose a data dir: {stderr}"
    );
}
