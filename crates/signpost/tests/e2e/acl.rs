//! ACLs on the real binary: the permission matrix (each endpoint family × each kind of token →
//! the expected status), DNS answering under `dns_token`'s rights, and the audit file (one
//! line per write, no secret).

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{client, free_port, poll_until, Agent};

pub(crate) const ROOT: &str = "e2e-management-secret";
const DNS_SECRET: &str = "e2e-dns-secret";

/// The tokens of the matrix, in its column order.
const TOKENS: [&str; 7] = ["none", "read", "one", "prefix", "deny", "mgmt", "expired"];

/// What a cell expects: `Y` 2xx, `N` 403, or an exact status.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Y,
    N,
    S(u16),
}
use Want::{N, S, Y};

impl Want {
    fn accepts(self, status: u16) -> bool {
        match self {
            Y => (200..300).contains(&status),
            N => status == 403,
            S(s) => status == s,
        }
    }
}

struct Row {
    family: &'static str,
    method: Method,
    path: &'static str,
    body: Option<Value>,
    want: [Want; 7],
}

fn row(
    family: &'static str,
    method: Method,
    path: &'static str,
    body: Option<Value>,
    want: [Want; 7],
) -> Row {
    Row {
        family,
        method,
        path,
        body,
        want,
    }
}

async fn call(
    agent: &Agent,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = client().request(method, agent.url(path));
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates a policy and a token for it (with `extra` fields); returns the secret.
pub(crate) async fn token(agent: &Agent, name: &str, rules: &str, extra: Value) -> String {
    let (code, body) = call(
        agent,
        Method::PUT,
        "/v1/acl/policy",
        Some(ROOT),
        Some(&json!({"Name": name, "Rules": rules})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let mut req = json!({"Description": name, "Policies": [{"Name": name}]});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    let (code, body) = call(agent, Method::PUT, "/v1/acl/token", Some(ROOT), Some(&req)).await;
    assert_eq!(code, 200, "{body}");
    body["SecretID"].as_str().unwrap().to_string()
}

fn dig(port: u16, name: &str) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
        .args([name, "A"])
        .output()
        .expect("dig is not installed: scripts/test.sh installs dnsutils");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {name} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test]
async fn permission_matrix_dns_and_audit_over_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let dns_port = free_port();
    let config = dir.path().join("signpost.toml");
    std::fs::write(
        &config,
        format!(
            "dev = true\n[acl]\nenabled = true\n\
             initial_management_token = \"{ROOT}\"\ndns_token = \"{DNS_SECRET}\"\n\
             [audit]\npath = \"{}\"\n",
            audit.display()
        ),
    )
    .unwrap();
    // Readiness through an endpoint that needs no right (the harness's agent/self needs one).
    let dns_addr = format!("127.0.0.1:{dns_port}");
    let agent = Agent::spawn(
        dir.path(),
        [
            "--config",
            config.to_str().unwrap(),
            "--dns-addr",
            &dns_addr,
        ],
    );
    poll_until(
        Duration::from_secs(30),
        "the management token works",
        || async {
            let resp = client()
                .get(agent.url("/v1/acl/token/self"))
                .header("X-Consul-Token", ROOT)
                .send()
                .await
                .ok()?;
            (resp.status() == 200).then_some(())
        },
    )
    .await;
    // Every write from here on is counted, to check the audit file against.
    let mut audited = 0usize;

    let read = token(
        &agent,
        "read",
        r#"service_prefix "" { policy = "read" }
key_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
operator = "read"
acl = "read""#,
        json!({}),
    )
    .await;
    let one = token(
        &agent,
        "one",
        r#"service "api" { policy = "write" }
key "app/one" { policy = "write" }"#,
        json!({}),
    )
    .await;
    let prefix = token(
        &agent,
        "prefix",
        r#"{"service_prefix": {"api": {"policy": "write"}}, "key_prefix": {"app/": {"policy": "write"}}}"#,
        json!({}),
    )
    .await;
    let deny = token(
        &agent,
        "deny",
        r#"service_prefix "" { policy = "deny" }
key_prefix "" { policy = "deny" }
agent_prefix "" { policy = "deny" }
operator = "deny"
acl = "deny""#,
        json!({}),
    )
    .await;
    let expired = token(
        &agent,
        "short",
        r#"service_prefix "" { policy = "write" }"#,
        json!({"ExpirationTTL": "1s"}),
    )
    .await;
    audited += 10;
    // The data the reads find, written as management.
    for (path, body) in [
        (
            "/api/v1/services/api/instances",
            json!({"id": "api-1", "address": "10.0.0.1", "port": 80}),
        ),
        (
            "/api/v1/services/db/instances",
            json!({"id": "db-1", "address": "10.0.0.2", "port": 5432}),
        ),
    ] {
        let (code, b) = call(&agent, Method::POST, path, Some(ROOT), Some(&body)).await;
        assert_eq!(code, 201, "{b}");
        audited += 1;
    }
    let (code, _) = call(
        &agent,
        Method::PUT,
        "/v1/kv/app/one",
        Some(ROOT),
        Some(&json!(1)),
    )
    .await;
    assert_eq!(code, 200);
    audited += 1;
    poll_until(
        Duration::from_secs(10),
        "the short token expires",
        || async {
            let (code, _) = call(
                &agent,
                Method::GET,
                "/v1/catalog/services",
                Some(&expired),
                None,
            )
            .await;
            (code == 403).then_some(())
        },
    )
    .await;

    let secrets: [Option<&str>; 7] = [
        None,
        Some(&read),
        Some(&one),
        Some(&prefix),
        Some(&deny),
        Some(ROOT),
        Some(&expired),
    ];
    let reg = |id: &str| json!({"id": id, "address": "10.0.0.9", "port": 81});
    let consul_reg = json!({"Name": "api", "ID": "api-consul", "Address": "10.0.0.8", "Port": 82});
    #[rustfmt::skip]
    let matrix = [
        //                                                                                   none read one prefix deny mgmt expired
        row("native services", Method::GET, "/api/v1/services", None,                         [Y, Y, Y, Y, Y, Y, N]),
        row("native services", Method::GET, "/api/v1/services/api/instances", None,           [Y, Y, Y, Y, Y, Y, N]),
        row("native services", Method::GET, "/api/v1/services/api/instances/api-1", None,     [N, Y, Y, Y, N, Y, N]),
        row("native services", Method::POST, "/api/v1/services/api/instances", Some(reg("api-2")), [N, N, Y, Y, N, Y, N]),
        row("native services", Method::POST, "/api/v1/services/api-v2/instances", Some(reg("v2")), [N, N, N, Y, N, Y, N]),
        row("native services", Method::DELETE, "/api/v1/services/db/instances/db-x", None,    [N, N, N, N, N, S(404), N]),
        row("native KV", Method::GET, "/api/v1/kv/app/one", None,                             [N, Y, Y, Y, N, Y, N]),
        row("native KV", Method::PUT, "/api/v1/kv/app/one", Some(json!(2)),                   [N, N, Y, Y, N, Y, N]),
        row("native KV", Method::PUT, "/api/v1/kv/app/two", Some(json!(2)),                   [N, N, N, Y, N, Y, N]),
        row("Consul agent", Method::PUT, "/v1/agent/service/register", Some(consul_reg),     [N, N, Y, Y, N, Y, N]),
        row("Consul agent", Method::GET, "/v1/agent/self", None,                              [N, Y, N, N, N, Y, N]),
        row("Consul catalog", Method::GET, "/v1/catalog/services", None,                      [Y, Y, Y, Y, Y, Y, N]),
        row("Consul catalog", Method::GET, "/v1/catalog/service/api", None,                   [Y, Y, Y, Y, Y, Y, N]),
        row("Consul catalog", Method::GET, "/v1/catalog/nodes", None,                         [Y, Y, Y, Y, Y, Y, N]),
        row("Consul catalog", Method::GET, "/v1/catalog/node/signpost-1", None,               [N, Y, N, N, N, Y, N]),
        row("Consul health", Method::GET, "/v1/health/service/api", None,                     [Y, Y, Y, Y, Y, Y, N]),
        row("Consul KV", Method::GET, "/v1/kv/app/one", None,                                 [N, Y, Y, Y, N, Y, N]),
        row("Consul KV", Method::PUT, "/v1/kv/app/one", Some(json!(3)),                       [N, N, Y, Y, N, Y, N]),
        row("Consul KV", Method::DELETE, "/v1/kv/app/two", None,                              [N, N, N, Y, N, Y, N]),
        row("cluster", Method::GET, "/api/v1/cluster/members", None,                          [N, Y, N, N, N, Y, N]),
        row("cluster", Method::POST, "/api/v1/cluster/remove", Some(json!({"node_id": 99})),  [N, N, N, N, N, S(404), N]),
        row("ACL", Method::GET, "/v1/acl/tokens", None,                                       [N, Y, N, N, N, Y, N]),
        row("ACL", Method::GET, "/v1/acl/policies", None,                                     [N, Y, N, N, N, Y, N]),
        row("ACL", Method::PUT, "/v1/acl/policy", Some(json!({"Name": "new", "Rules": ""})),  [N, N, N, N, N, Y, N]),
        row("metrics", Method::GET, "/metrics", None,                                         [N, Y, N, N, N, Y, N]),
        row("metrics", Method::GET, "/api/v1/agent/self", None,                               [N, Y, N, N, N, Y, N]),
    ];
    let mut wrong = Vec::new();
    for r in &matrix {
        for (col, (secret, want)) in secrets.iter().zip(r.want).enumerate() {
            let mut req = client().request(r.method.clone(), agent.url(r.path));
            if let Some(s) = secret {
                req = req.header("X-Consul-Token", *s);
            }
            if let Some(b) = &r.body {
                req = req.body(b.to_string());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            if r.method != Method::GET && ((200..300).contains(&status) || status == 403) {
                audited += 1;
            }
            if !want.accepts(status) {
                let body = resp.text().await.unwrap_or_default();
                wrong.push(format!(
                    "{} {} {} with {}: want {want:?}, got {status} {body}",
                    r.family, r.method, r.path, TOKENS[col]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "matrix mismatches:\n{}", wrong.join("\n"));

    // A refusal says what is missing, and changed nothing.
    let (code, body) = call(
        &agent,
        Method::POST,
        "/api/v1/services/db/instances",
        Some(&one),
        Some(&reg("db-2")),
    )
    .await;
    audited += 1;
    assert_eq!(code, 403);
    assert_eq!(
        body["error"],
        "permission denied: token lacks service:write on \"db\""
    );
    let (_, list) = call(
        &agent,
        Method::GET,
        "/api/v1/services/db/instances",
        Some(ROOT),
        None,
    )
    .await;
    assert_eq!(list["instances"].as_array().unwrap().len(), 1);
    // A filtered listing says so.
    let resp = client()
        .get(agent.url("/v1/catalog/services"))
        .header("X-Consul-Token", &one)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-consul-results-filtered-by-acls"], "true");
    let names: Value = resp.json().await.unwrap();
    assert_eq!(
        names.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["api"]
    );
    // Nodes need node:read: a token without it sees none, and is told the listing was filtered.
    for (secret, count, filtered) in [(&one, 0, true), (&read, 1, false)] {
        let resp = client()
            .get(agent.url("/v1/catalog/nodes"))
            .header("X-Consul-Token", secret.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()
                .contains_key("x-consul-results-filtered-by-acls"),
            filtered
        );
        let nodes: Value = resp.json().await.unwrap();
        assert_eq!(nodes.as_array().unwrap().len(), count, "{nodes}");
    }

    // DNS answers as the dns_token: nothing until it exists, then what it may read.
    let nx = dig(dns_port, "api.service.consul");
    assert!(nx.contains("NXDOMAIN"), "{nx}");
    let (code, body) = call(
        &agent,
        Method::PUT,
        "/v1/acl/policy",
        Some(ROOT),
        Some(&json!({"Name": "dns", "Rules": "service \"api\" { policy = \"read\" }"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(
        &agent,
        Method::PUT,
        "/v1/acl/token",
        Some(ROOT),
        Some(&json!({"SecretID": DNS_SECRET, "Policies": [{"Name": "dns"}]})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    audited += 2;
    let api = dig(dns_port, "api.service.consul");
    assert!(api.contains("NOERROR") && api.contains("10.0.0.1"), "{api}");
    let db = dig(dns_port, "db.service.consul");
    assert!(db.contains("NXDOMAIN"), "{db}");

    // The audit file: one line per write, no secret.
    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [ROOT, &read, &one, &prefix, &deny, &expired, DNS_SECRET] {
        assert!(!text.contains(secret), "a secret in the audit log");
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), audited, "{text}");
    assert!(lines.iter().all(|l| l["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:"))));
}

/// Spawns the agent with ACLs on and `ROOT` as its initial management token, and waits until
/// that token works.
pub(crate) async fn acl_agent(dir: &std::path::Path) -> Agent {
    let config = dir.join("signpost.toml");
    std::fs::write(
        &config,
        format!("dev = true\n[acl]\nenabled = true\ninitial_management_token = \"{ROOT}\"\n"),
    )
    .unwrap();
    let agent = Agent::spawn(dir, ["--config", config.to_str().unwrap(), "--no-dns"]);
    poll_until(
        Duration::from_secs(30),
        "the management token works",
        || async {
            let resp = client()
                .get(agent.url("/v1/acl/token/self"))
                .header("X-Consul-Token", ROOT)
                .send()
                .await
                .ok()?;
            (resp.status() == 200).then_some(())
        },
    )
    .await;
    agent
}

#[tokio::test]
async fn py_consul_with_a_token_is_allowed_and_refused_as_its_policy_says() {
    let dir = tempfile::tempdir().unwrap();
    let agent = acl_agent(dir.path()).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/consul/py_consul_acl.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script)
        .arg("--addr")
        .arg(agent.base_url().trim_start_matches("http://"))
        .arg("--root")
        .arg(ROOT)
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the py-consul ACL script finishes within 60 s")
        .unwrap_or_else(|e| {
            panic!("cannot run `{python}` ({e}): scripts/test.sh installs py-consul")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}: {text}", script.display());
    assert!(text.contains("checks passed"), "{text}");
}
