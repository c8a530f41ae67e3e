//! `signpost gateway`: the binary serving with worker threads routes to an instance found in
//! the registry, answers through every worker, and stops on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{client, free_port, poll_until, Agent, BIN};

/// Kills the gateway process if the test ends without stopping it.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_gateway_binary_serves_with_worker_threads_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), ["--dev"]).await;
    // The agent itself is the backend: an instance at its own HTTP address.
    let (status, _) = agent
        .register(
            "registry",
            &json!({"id": "r1", "address": "127.0.0.1", "port": agent.base_url()
                .rsplit(':').next().unwrap().parse::<u16>().unwrap()}),
        )
        .await;
    assert_eq!(status, 201);

    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"
workers = 2
[registry]
addrs = ["{}"]
[[route]]
prefix = "/"
service = "registry"
"#,
            agent.base_url()
        ),
    )
    .unwrap();
    // tracing writes to stdout; both streams go to one log file.
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let mut gateway = Gateway(
        Command::new(BIN)
            .args(["gateway", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn signpost gateway"),
    );
    let logs = || std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();

    let url = format!("http://127.0.0.1:{listen}/api/v1/agent/self");
    let http = client();
    poll_until(
        Duration::from_secs(30),
        "the gateway routes to the agent",
        || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let resp = http.get(&url).send().await.ok()?;
                (resp.status() == 200).then_some(())
            }
        },
    )
    .await;

    // Fresh connections, so the kernel spreads them over both workers' listeners.
    signpost_tls::install_default_provider();
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let expected = agent.agent_self().await;
    let attempts_before = upstream_requests(&http, admin).await;
    for i in 0..20 {
        let resp = fresh.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}; gateway log:\n{}", logs());
        assert!(resp.headers().contains_key("x-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["http_addr"], expected["http_addr"]);
    }
    assert_eq!(upstream_requests(&http, admin).await - attempts_before, 20);

    let pid = gateway.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = poll_until(Duration::from_secs(15), "the gateway to exit", || {
        let exited = gateway.0.try_wait().ok().flatten();
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit {status}; gateway log:\n{}", logs());
    assert!(logs().contains("signpost gateway stopped"), "{}", logs());
}

/// The attempts the gateway's admin API counts on its one upstream.
async fn upstream_requests(http: &reqwest::Client, admin: u16) -> u64 {
    let routes: Value = http
        .get(format!("http://127.0.0.1:{admin}/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    routes["routes"][0]["upstreams"][0]["requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no upstream in {routes}"))
}
