//! `signpost gateway` with `[registry] kind = "env"`: the binary finds its upstream in the
//! variables Kubernetes would inject, with no registry to ask; and a `kind = "dns"` without a
//! resolver is refused at start with a message naming the key.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{client, free_port, poll_until, run_signpost, Agent, BIN};

/// Kills the gateway process if the test ends without stopping it.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_gateway_binary_routes_to_a_service_named_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    // The agent is only the backend here: the gateway never asks it for instances.
    let agent = Agent::start(dir.path(), ["--dev"]).await;
    let agent_port = agent.base_url().rsplit(':').next().unwrap().to_string();

    let (listen, admin) = (free_port(), free_port());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"
workers = 1
[registry]
kind = "env"
addrs = []
[[route]]
prefix = "/"
service = "backend-api"
"#
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
    let _gateway = Gateway(
        Command::new(BIN)
            .args(["gateway", "--config"])
            .arg(&config)
            .env("BACKEND_API_SERVICE_HOST", "127.0.0.1")
            .env("BACKEND_API_SERVICE_PORT", &agent_port)
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
    let body: Value = poll_until(
        Duration::from_secs(30),
        "the gateway routes to the service in its environment",
        || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let resp = http.get(&url).send().await.ok()?;
                if resp.status() != 200 {
                    return None;
                }
                resp.json().await.ok()
            }
        },
    )
    .await;
    let expected = agent.agent_self().await;
    assert_eq!(body["http_addr"], expected["http_addr"], "{}", logs());
}

#[tokio::test]
async fn a_dns_registry_without_a_resolver_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[registry]\nkind = \"dns\"\n[[route]]\nprefix = \"/\"\nservice = \"web\"\n",
    )
    .unwrap();
    let run = run_signpost(
        dir.path(),
        &["gateway", "--config", config.to_str().unwrap()],
        Duration::from_secs(30),
    )
    .await;
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("registry.resolver")
            && run
                .stderr
                .contains("kind = \"dns\" needs the DNS server's address"),
        "stderr: {}",
        run.stderr
    );
}
