//! Real Consul clients against the real binary, unchanged and pointed at Signpost's port:
//!
//! - py-consul (PyPI) registers services with HTTP and TTL checks, renews TTLs, lists passing
//!   instances, reads the catalog, uses the KV store and blocking health queries
//!   (`tests/consul/py_consul_check.py`).
//! - VictoriaMetrics' Prometheus-compatible scraper discovers scrape targets with
//!   `consul_sd_configs`, labels them `__meta_consul_*`, scrapes them, and drops one that is
//!   deregistered. (Debian's `prometheus` is built without Consul service discovery; the
//!   `victoria-metrics` single-node binary takes the same configuration and answers the same
//!   `/api/v1/targets`.)
//!
//! `scripts/test.sh` installs both; a missing one fails its test with a message saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{client, free_port, Agent, POLL};

/// The workspace root, where `tests/consul/` lives.
fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `127.0.0.1:PORT` of the agent.
fn host_port(agent: &Agent) -> String {
    agent.base_url().trim_start_matches("http://").to_string()
}

/// Last `max` bytes of a log file, for failure messages.
fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

// ----- py-consul --------------------------------------------------------------------------------

#[tokio::test]
async fn py_consul_drives_agent_catalog_health_and_kv() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), ["--dev"]).await;

    let script = workspace_root().join("tests/consul/py_consul_check.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out_path = dir.path().join("py_consul.out");
    let out = File::create(&out_path).unwrap();
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script)
        .arg("--addr")
        .arg(host_port(&agent))
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true);
    // Nothing from the environment may point the client elsewhere.
    for var in [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run `{python}` ({e}): the py-consul test needs Python 3 with py-consul \
             (scripts/test.sh installs py-consul)"
        )
    });
    let limit = Duration::from_secs(60);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.expect("wait for the py-consul script"),
        Err(_) => {
            let _ = child.kill().await;
            panic!(
                "{} did not finish within {limit:?}; its output:\n{}",
                script.display(),
                tail(&out_path, 20_000)
            );
        }
    };
    let output = tail(&out_path, 20_000);
    assert!(
        status.success(),
        "{} --addr {} exited with {status}; its output:\n{output}",
        script.display(),
        host_port(&agent)
    );
    eprintln!("{output}");
    assert!(
        output.contains("checks passed"),
        "the script exited 0 without its summary line:\n{output}"
    );
}

// ----- Prometheus-compatible Consul service discovery -------------------------------------------

/// The scraper binary: `$SIGNPOST_E2E_VICTORIA_METRICS`, or `victoria-metrics` on `PATH`.
fn victoria_metrics_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SIGNPOST_E2E_VICTORIA_METRICS") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/local/bin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("victoria-metrics"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "victoria-metrics is not installed: scripts/test.sh installs it (the binary of \
                 Debian's `victoria-metrics` package, a scraper that takes Prometheus's \
                 consul_sd_configs; Debian's own `prometheus` is built without Consul service \
                 discovery). Or set SIGNPOST_E2E_VICTORIA_METRICS to its path."
            )
        })
}

/// A running scraper, killed (by PID) when dropped; prints its log if dropped during a panic.
struct Scraper {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Scraper {
    /// Starts the scraper with `config` on a free loopback port and waits for `/health`.
    async fn start(dir: &Path, config: &Path) -> Scraper {
        let bin = victoria_metrics_bin();
        for attempt in 0..2 {
            let port = free_port();
            let log = dir.join(format!("victoria-metrics-{attempt}.log"));
            let out = File::create(&log).unwrap();
            let child = Command::new(&bin)
                .arg(format!("-promscrape.config={}", config.display()))
                .arg(format!(
                    "-storageDataPath={}",
                    dir.join(format!("vmdata-{attempt}")).display()
                ))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                // Ask Signpost for changes every second (blocking queries in between).
                .arg("-promscrape.consulSDCheckInterval=1s")
                .arg("-promscrape.suppressScrapeErrors")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut scraper = Scraper { child, port, log };
            match scraper.wait_ready(Duration::from_secs(20)).await {
                Ok(()) => return scraper,
                Err(e)
                    if attempt == 0
                        && tail(&scraper.log, 4000).contains("address already in use") =>
                {
                    eprintln!("victoria-metrics lost the race for its port ({e}); retrying");
                }
                Err(e) => panic!("{e}\n{}", scraper.logs()),
            }
        }
        unreachable!("the second attempt returns or panics")
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let http = client();
        let url = format!("http://127.0.0.1:{}/health", self.port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "victoria-metrics exited with {status} before it was ready"
                ));
            }
            if let Ok(resp) = http.get(&url).timeout(Duration::from_secs(2)).send().await {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("victoria-metrics was not ready within {timeout:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn logs(&self) -> String {
        format!(
            "----- victoria-metrics log ({}) -----\n{}\n-----",
            self.log.display(),
            tail(&self.log, 8000)
        )
    }

    /// `GET /api/v1/targets`: active targets by (scrape pool, Consul service id).
    async fn targets(&self) -> BTreeMap<(String, String), Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/targets", self.port);
        let body: Value = client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: bad JSON: {e}"));
        body["data"]["activeTargets"]
            .as_array()
            .unwrap_or_else(|| panic!("no data.activeTargets in {body}"))
            .iter()
            .map(|t| {
                let pool = t["scrapePool"].as_str().unwrap_or_default().to_string();
                let id = t["discoveredLabels"]["__meta_consul_service_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                ((pool, id), t.clone())
            })
            .collect()
    }
}

impl Scraper {
    /// Polls the targets until `check` accepts them; panics with its last complaint (and the
    /// targets) after `timeout`.
    async fn poll_targets<F>(
        &self,
        timeout: Duration,
        what: &str,
        check: F,
    ) -> BTreeMap<(String, String), Value>
    where
        F: Fn(&BTreeMap<(String, String), Value>) -> Result<(), String>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let targets = self.targets().await;
            match check(&targets) {
                Ok(()) => return targets,
                Err(why) if Instant::now() >= deadline => panic!(
                    "timed out after {timeout:?} waiting for {what}:\n{why}\nactive targets: {}",
                    serde_json::to_string_pretty(&targets.values().collect::<Vec<_>>())
                        .unwrap_or_default()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Scraper {
    /// Polls until the active targets are exactly `want` (`(job, instance id)` pairs).
    async fn poll_exactly(&self, timeout: Duration, what: &str, want: &BTreeSet<(String, String)>) {
        self.poll_targets(timeout, what, |targets| {
            let have: BTreeSet<_> = targets.keys().cloned().collect();
            if &have == want {
                Ok(())
            } else {
                Err(format!("targets {have:?}, want {want:?}"))
            }
        })
        .await;
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A loopback HTTP server answering every request with one metric; returns its port. It lives
/// as long as the test's runtime.
async fn metrics_endpoint(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 2048];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("signpost_e2e_instance_up{{name=\"{name}\"}} 1\n");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

/// `PUT /v1/agent/service/register` with `body`; asserts 200.
async fn consul_register(agent: &Agent, body: Value) {
    let resp = client()
        .put(agent.url("/v1/agent/service/register"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("register {body}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 200, "PUT /v1/agent/service/register {body}: {text}");
}

/// What one discovered target must carry.
struct Expected {
    id: &'static str,
    port: u16,
    tags: &'static str,
    version: &'static str,
    health: &'static str,
}

/// Compares a target's discovered labels with `e`; returns what differs.
fn label_mismatches(target: &Value, e: &Expected, dc: &str, node: &str) -> Vec<String> {
    let labels = &target["discoveredLabels"];
    let port = e.port.to_string();
    let address = format!("127.0.0.1:{}", e.port);
    let want = [
        ("__address__", address.as_str()),
        ("__meta_consul_service", "web"),
        ("__meta_consul_service_id", e.id),
        ("__meta_consul_service_address", "127.0.0.1"),
        ("__meta_consul_service_port", port.as_str()),
        ("__meta_consul_tags", e.tags),
        ("__meta_consul_service_metadata_version", e.version),
        ("__meta_consul_service_metadata_team", "edge"),
        ("__meta_consul_health", e.health),
        ("__meta_consul_dc", dc),
        ("__meta_consul_node", node),
    ];
    let mut wrong: Vec<String> = want
        .iter()
        .filter(|(k, v)| labels[*k].as_str() != Some(*v))
        .map(|(k, v)| format!("{k}: want {v:?}, got {}", labels[*k]))
        .collect();
    if target["health"] != "up" {
        wrong.push(format!(
            "health: want \"up\" (scraped), got {} ({})",
            target["health"], target["lastError"]
        ));
    }
    wrong
}

#[tokio::test]
async fn consul_sd_scraper_discovers_labels_and_drops_deregistered() {
    let dir = tempfile::tempdir().unwrap();
    // A datacenter and node name of its own, so the labels prove they come from the agent.
    let (dc, node) = ("dc-e2e", "sp-e2e");
    let config = dir.path().join("signpost.toml");
    std::fs::write(
        &config,
        format!("dev = true\ndatacenter = \"{dc}\"\nnode_name = \"{node}\"\n"),
    )
    .unwrap();
    let agent = Agent::start(dir.path(), ["--config", config.to_str().unwrap()]).await;

    // Three instances of `web`, each with a /metrics endpoint, registered through both faces.
    let ports = [
        metrics_endpoint("web-1").await,
        metrics_endpoint("web-2").await,
        metrics_endpoint("web-3").await,
    ];
    consul_register(
        &agent,
        json!({"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": ports[0],
               "Tags": ["prod", "v1"], "Meta": {"version": "1.0.0", "team": "edge"}}),
    )
    .await;
    consul_register(
        &agent,
        json!({"ID": "web-2", "Name": "web", "Address": "127.0.0.1", "Port": ports[1],
               "Tags": ["prod", "v2"], "Meta": {"version": "2.0.0", "team": "edge"},
               "Check": {"TTL": "60s", "Status": "critical"}}),
    )
    .await;
    let (status, body) = agent
        .register(
            "web",
            &json!({"id": "web-3", "address": "127.0.0.1", "port": ports[2],
                    "tags": ["prod", "native"], "metadata": {"version": "3.0.0", "team": "edge"}}),
        )
        .await;
    assert_eq!(status, 201, "native registration of web-3: {body}");
    // Another service, outside both jobs' selection (not `web`, not tagged `prod`).
    consul_register(
        &agent,
        json!({"ID": "db-1", "Name": "db", "Address": "127.0.0.1", "Port": free_port(),
               "Tags": ["staging"], "Meta": {"version": "9.9.9", "team": "data"}}),
    )
    .await;

    // One job names the service; the other selects by tag, so it watches the catalog too.
    let server = host_port(&agent);
    let scrape_config = dir.path().join("scrape.yml");
    std::fs::write(
        &scrape_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: consul-web\n\
             \x20   consul_sd_configs:\n\
             \x20     - server: '{server}'\n\
             \x20       services: ['web']\n\
             \x20 - job_name: consul-prod\n\
             \x20   consul_sd_configs:\n\
             \x20     - server: '{server}'\n\
             \x20       tags: ['prod']\n"
        ),
    )
    .unwrap();
    let scraper = Scraper::start(dir.path(), &scrape_config).await;

    let expected = [
        Expected {
            id: "web-1",
            port: ports[0],
            tags: ",prod,v1,",
            version: "1.0.0",
            health: "passing",
        },
        Expected {
            id: "web-2",
            port: ports[1],
            tags: ",prod,v2,",
            version: "2.0.0",
            health: "critical",
        },
        Expected {
            id: "web-3",
            port: ports[2],
            tags: ",prod,native,",
            version: "3.0.0",
            health: "passing",
        },
    ];
    let pools = ["consul-web", "consul-prod"];
    let keys = |ids: &[&str]| -> BTreeSet<(String, String)> {
        pools
            .iter()
            .flat_map(|p| ids.iter().map(move |id| (p.to_string(), id.to_string())))
            .collect()
    };

    let started = Instant::now();
    let want = keys(&["web-1", "web-2", "web-3"]);
    let found = scraper
        .poll_targets(
            Duration::from_secs(25),
            "every web instance discovered in both jobs with its __meta_consul_* labels, and scraped",
            |targets| {
                let have: BTreeSet<_> = targets.keys().cloned().collect();
                let mut wrong = Vec::new();
                if have != want {
                    wrong.push(format!("targets {have:?}, want {want:?}"));
                }
                for ((pool, id), target) in targets {
                    if let Some(e) = expected.iter().find(|e| e.id == id) {
                        for m in label_mismatches(target, e, dc, node) {
                            wrong.push(format!("{pool}/{id}: {m}"));
                        }
                    }
                }
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(wrong.join("\n"))
                }
            },
        )
        .await;
    eprintln!(
        "{} targets discovered, labelled and scraped {:?} after the scraper started",
        found.len(),
        started.elapsed()
    );

    // Deregister web-2 through the Consul API: both jobs drop it, and keep the others.
    let resp = client()
        .put(agent.url("/v1/agent/service/deregister/web-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "deregister web-2");
    let removed = Instant::now();
    let want = keys(&["web-1", "web-3"]);
    scraper
        .poll_exactly(
            Duration::from_secs(20),
            "the scraper to drop the deregistered web-2 from both jobs and keep the others",
            &want,
        )
        .await;
    eprintln!(
        "web-2 dropped {:?} after its deregistration",
        removed.elapsed()
    );
}

/// A `consul_sd_configs` job that presents a token (`token:` in the scrape config, sent as
/// `X-Consul-Token`) discovers only the services that token may read: the catalog listing is
/// filtered, so the scraper never learns of the others.
#[tokio::test]
async fn consul_sd_scraper_with_a_token_sees_only_what_the_token_may_read() {
    use crate::acl::{acl_agent, token, ROOT};
    let dir = tempfile::tempdir().unwrap();
    let agent = acl_agent(dir.path()).await;
    let web = metrics_endpoint("web-1").await;
    let db = metrics_endpoint("db-1").await;
    for body in [
        json!({"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": web}),
        json!({"ID": "db-1", "Name": "db", "Address": "127.0.0.1", "Port": db}),
    ] {
        let resp = client()
            .put(agent.url("/v1/agent/service/register"))
            .header("X-Consul-Token", ROOT)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "register {body}");
    }
    // What a Prometheus scraper needs: read on the one service, on nodes and on the agent.
    let secret = token(
        &agent,
        "scraper",
        r#"service "web" { policy = "read" }
node_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }"#,
        json!({}),
    )
    .await;

    let server = host_port(&agent);
    let scrape_config = dir.path().join("scrape.yml");
    std::fs::write(
        &scrape_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: consul-token\n\
             \x20   consul_sd_configs:\n\
             \x20     - server: '{server}'\n\
             \x20       token: '{secret}'\n"
        ),
    )
    .unwrap();
    let scraper = Scraper::start(dir.path(), &scrape_config).await;
    let want: BTreeSet<(String, String)> = [("consul-token".to_string(), "web-1".to_string())]
        .into_iter()
        .collect();
    scraper
        .poll_exactly(
            Duration::from_secs(25),
            "the token's job to discover web-1 and nothing else",
            &want,
        )
        .await;
}
