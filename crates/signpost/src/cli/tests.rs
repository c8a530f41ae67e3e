//! Tests of the CLI as a whole: argument parsing, and commands against a canned agent (one
//! HTTP answer on a local port). Each module's own tests sit beside it.

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// The client's part of the binary's command line.
#[derive(Parser, Debug)]
pub(super) struct TestCli {
    #[command(flatten)]
    pub(super) opts: ClientOpts,
    #[command(subcommand)]
    pub(super) cmd: ClientCommand,
}

/// Parses a command line (without the program name).
pub(super) fn parse(args: &[&str]) -> Result<TestCli, clap::Error> {
    TestCli::try_parse_from(std::iter::once("signpost").chain(args.iter().copied()))
}

/// An instance as the agent renders it.
pub(super) const INSTANCE: &str = r#"{"id":"users-10.0.0.1-8080","service":"users","address":"10.0.0.1",
    "port":8080,"tags":["a"],"metadata":{},"weight":1,"status":"passing",
    "created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z",
    "create_index":14,"modify_index":14}"#;

/// The agent's answer to a registration: the instance as stored.
const REGISTERED: &str = r#"{"id":"u1","service":"users","address":"h","port":1,"tags":["x"],
    "metadata":{},"weight":100,"status":"passing","created_at":"2024-01-01T00:00:00.000Z",
    "updated_at":"2024-01-01T00:00:00.000Z","create_index":5,"modify_index":5}"#;

#[test]
fn meta_pairs_split_on_the_first_equals_sign() {
    assert_eq!(
        parse_meta_pair("version=1.2"),
        Ok(("version".into(), "1.2".into()))
    );
    assert_eq!(parse_meta_pair("q=a=b"), Ok(("q".into(), "a=b".into())));
    assert_eq!(parse_meta_pair("empty="), Ok(("empty".into(), "".into())));
    let err = parse_meta_pair("novalue").unwrap_err();
    assert!(
        err.contains("KEY=VALUE") && err.contains("novalue"),
        "{err}"
    );
    assert!(parse_meta_pair("=v").unwrap_err().contains("empty key"));
}

#[test]
fn meta_without_equals_is_rejected_by_the_parser() {
    let err = parse(&[
        "register",
        "users",
        "--address",
        "a",
        "--port",
        "1",
        "--meta",
        "zone",
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--meta") && text.contains("KEY=VALUE"),
        "{text}"
    );
}

#[test]
fn register_argument_rules() {
    let base = ["register", "users", "--address", "h", "--port", "1"];
    let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
    assert!(with(&["--ttl", "10s", "--http", "http://x"]).is_err());
    assert!(with(&["--tcp", "h:1", "--http", "http://x"]).is_err());
    assert!(with(&["--ttl", "ten seconds"]).is_err());
    assert!(
        with(&["--interval", "5s"]).is_err(),
        "--interval needs --http/--tcp"
    );
    assert!(with(&["--ttl", "10s", "--interval", "5s"]).is_err());
    assert!(
        with(&["--deregister-after", "1m"]).is_err(),
        "needs a check"
    );
    assert!(with(&["--ttl", "10s", "--deregister-after", "1m"]).is_ok());
    assert!(with(&["--tcp", "h:1", "--interval", "5s", "--timeout", "1s"]).is_ok());
    assert!(
        parse(&["register", "users", "--address", "h"]).is_err(),
        "--port required"
    );
    assert!(parse(&["instances", ""]).is_err());
}

#[test]
fn global_options_work_after_the_subcommand() {
    let cli = parse(&[
        "instances",
        "users",
        "--all",
        "--json",
        "--addr",
        "http://x:1",
    ])
    .unwrap();
    assert!(cli.opts.json);
    assert_eq!(cli.opts.addr, "http://x:1");
    assert!(matches!(
        cli.cmd,
        ClientCommand::Instances { all: true, .. }
    ));
}

/// Serves one canned HTTP response on a local port and returns the address and the
/// request it received.
async fn one_shot_server(
    status: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<String>) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head and (if any) the body announced by Content-Length.
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(head_end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= head_end + 4 + len {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        sock.write_all(response.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
        String::from_utf8_lossy(&request).to_string()
    });
    (addr, handle)
}

#[tokio::test]
async fn unreachable_agent_is_reported_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let opts = ClientOpts {
        addr: addr.clone(),
        json: false,
        token: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
    };
    let err = run(&opts, ClientCommand::Services).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!("cannot reach the agent at {addr}: connection refused")
    );
}

#[tokio::test]
async fn agent_errors_are_shown_with_status_and_field() {
    let (addr, server) = one_shot_server(
        "404 Not Found",
        r#"{"error":"no such instance","field":"id"}"#,
    )
    .await;
    let opts = ClientOpts {
        addr,
        json: false,
        token: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
    };
    let cmd = ClientCommand::Deregister {
        service: "users".into(),
        id: "u 1".into(),
    };
    let err = run(&opts, cmd).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "the agent answered 404 Not Found: no such instance (field: id)"
    );
    let request = server.await.unwrap();
    assert!(
        request.starts_with("DELETE /api/v1/services/users/instances/u%201 HTTP/1.1"),
        "{request}"
    );
}

#[tokio::test]
async fn register_posts_json() {
    let (addr, server) = one_shot_server("201 Created", REGISTERED).await;
    let cli = parse(&[
        "register",
        "users",
        "--address",
        "h",
        "--port",
        "1",
        "--tag",
        "x",
        "--addr",
        &addr,
    ])
    .unwrap();
    run(&cli.opts, cli.cmd).await.unwrap();
    let request = server.await.unwrap();
    assert!(
        request.starts_with("POST /api/v1/services/users/instances HTTP/1.1"),
        "{request}"
    );
    assert!(
        request.ends_with(r#"{"address":"h","port":1,"tags":["x"]}"#),
        "{request}"
    );
}

#[tokio::test]
async fn watch_fails_fast_when_the_agent_refuses_the_stream() {
    let (addr, _server) = one_shot_server("400 Bad Request", r#"{"error":"bad service"}"#).await;
    let opts = ClientOpts {
        addr,
        json: false,
        token: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
    };
    let cmd = ClientCommand::Watch {
        service: "users".into(),
        all: true,
    };
    let err = run(&opts, cmd).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "the agent answered 400 Bad Request: bad service"
    );
}

#[tokio::test]
async fn instances_with_all_ask_for_every_status() {
    let (addr, server) = one_shot_server(
        "200 OK",
        r#"{"index":3,"instances":[{"id":"b","service":"a b","address":"::1","port":80,"status":"critical"}]}"#,
    )
    .await;
    let opts = ClientOpts {
        addr,
        json: false,
        token: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
    };
    let cmd = ClientCommand::Instances {
        service: "a b".into(),
        all: true,
    };
    run(&opts, cmd).await.unwrap();
    let request = server.await.unwrap();
    assert!(
        request.starts_with("GET /api/v1/services/a%20b/instances?status=any HTTP/1.1"),
        "{request}"
    );
}

#[tokio::test]
async fn unreadable_answers_are_reported() {
    let (addr, _server) = one_shot_server("200 OK", "[not json").await;
    let opts = ClientOpts {
        addr: addr.clone(),
        json: false,
        token: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
    };
    let err = run(&opts, ClientCommand::Services).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with(&format!("unexpected response from the agent at {addr}: ")),
        "{text}"
    );
}

#[test]
fn the_token_comes_from_the_flag_then_consuls_variable() {
    let consul_env = |name: &str| (name == "CONSUL_HTTP_TOKEN").then(|| "from-consul".to_string());
    let no_env = |_: &str| None;
    let cli = parse(&["services", "--token", "from-flag"]).unwrap();
    assert_eq!(
        cli.opts.token_from(&consul_env).as_deref(),
        Some("from-flag")
    );
    let mut cli = parse(&["services"]).unwrap();
    cli.opts.token = None; // whatever SIGNPOST_TOKEN this test runs under
    assert_eq!(
        cli.opts.token_from(&consul_env).as_deref(),
        Some("from-consul")
    );
    assert_eq!(cli.opts.token_from(&no_env), None);
    cli.opts.token = Some(String::new());
    assert_eq!(cli.opts.token_from(&no_env), None, "an empty token is none");
}

#[tokio::test]
async fn every_command_sends_the_token() {
    let (addr, server) = one_shot_server("200 OK", r#"{"index":1,"instances":[]}"#).await;
    let cli = parse(&["instances", "users", "--addr", &addr, "--token", "t0k3n"]).unwrap();
    run(&cli.opts, cli.cmd).await.unwrap();
    let request = server.await.unwrap().to_ascii_lowercase();
    assert!(
        request.contains("\r\nx-consul-token: t0k3n\r\n"),
        "{request}"
    );
}

#[tokio::test]
async fn a_refusal_prints_the_agents_message() {
    let (addr, server) = one_shot_server(
        "403 Forbidden",
        r#"{"error":"permission denied: token lacks service:write on \"users\""}"#,
    )
    .await;
    let cli = parse(&[
        "deregister",
        "users",
        "u1",
        "--addr",
        &addr,
        "--token",
        "ro",
    ])
    .unwrap();
    let err = run(&cli.opts, cli.cmd).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "the agent answered 403 Forbidden: permission denied: token lacks service:write on \"users\""
    );
    server.await.unwrap();
}

const TOKEN: &str = r#"{"AccessorID":"a-1","SecretID":"s-1","Description":"ci",
    "Policies":[{"ID":"p-1","Name":"web"}],"CreateIndex":7,"ModifyIndex":7}"#;

#[tokio::test]
async fn acl_policy_create_sends_the_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("web.hcl");
    std::fs::write(&rules, "service \"web\" {\n  policy = \"write\"\n}\n").unwrap();
    let (addr, server) = one_shot_server(
        "200 OK",
        r#"{"ID":"p-1","Name":"web","Description":"","Rules":"","CreateIndex":3,"ModifyIndex":3}"#,
    )
    .await;
    let rules_arg = format!("@{}", rules.display());
    let cli = parse(&[
        "acl", "policy", "create", "--name", "web", "--rules", &rules_arg, "--addr", &addr,
        "--token", "mgmt",
    ])
    .unwrap();
    run(&cli.opts, cli.cmd).await.unwrap();
    let request = server.await.unwrap();
    assert!(
        request.starts_with("PUT /v1/acl/policy HTTP/1.1"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("x-consul-token: mgmt"),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"Name": "web", "Description": "",
                           "Rules": "service \"web\" {\n  policy = \"write\"\n}\n"})
    );
}

#[tokio::test]
async fn acl_token_create_links_policies_by_name() {
    let (addr, server) = one_shot_server("200 OK", TOKEN).await;
    let cli = parse(&[
        "acl",
        "token",
        "create",
        "--policy-name",
        "web",
        "--policy-name",
        "kv-read",
        "--ttl",
        "24h",
        "--description",
        "ci",
        "--addr",
        &addr,
        "--json",
    ])
    .unwrap();
    run(&cli.opts, cli.cmd).await.unwrap();
    let request = server.await.unwrap();
    assert!(
        request.starts_with("PUT /v1/acl/token HTTP/1.1"),
        "{request}"
    );
    let body: serde_json::Value =
        serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"Description": "ci", "ExpirationTTL": "24h",
                           "Policies": [{"Name": "web"}, {"Name": "kv-read"}]})
    );
    assert!(
        parse(&["acl", "token", "create"]).is_err(),
        "--policy-name is required"
    );
    assert!(parse(&[
        "acl",
        "token",
        "create",
        "--policy-name",
        "w",
        "--ttl",
        "soon"
    ])
    .is_err());
}

#[tokio::test]
async fn acl_calls_go_to_consuls_paths() {
    for (args, answer, head) in [
        (&["acl", "bootstrap"][..], TOKEN, "PUT /v1/acl/bootstrap "),
        (
            &["acl", "token", "self"][..],
            TOKEN,
            "GET /v1/acl/token/self ",
        ),
        (&["acl", "token", "list"][..], "[]", "GET /v1/acl/tokens "),
        (
            &["acl", "token", "delete", "a-1"][..],
            "true",
            "DELETE /v1/acl/token/a-1 ",
        ),
        (
            &["acl", "policy", "list"][..],
            "[]",
            "GET /v1/acl/policies ",
        ),
    ] {
        let (addr, server) = one_shot_server("200 OK", answer).await;
        let cli = parse(&[args, &["--addr", &addr][..]].concat()).unwrap();
        run(&cli.opts, cli.cmd).await.unwrap();
        let request = server.await.unwrap();
        assert!(request.starts_with(head), "{args:?}: {request}");
    }
}

#[tokio::test]
async fn a_second_bootstrap_is_refused_with_the_agents_message() {
    let (addr, _server) = one_shot_server(
        "403 Forbidden",
        r#"{"error":"ACL bootstrap no longer allowed"}"#,
    )
    .await;
    let cli = parse(&["acl", "bootstrap", "--addr", &addr]).unwrap();
    let err = run(&cli.opts, cli.cmd).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "the agent answered 403 Forbidden: ACL bootstrap no longer allowed"
    );
}

#[test]
fn tls_files_come_from_the_flags_then_consuls_variables() {
    let consul_env = |name: &str| match name {
        "CONSUL_CACERT" => Some("/consul/ca.pem".to_string()),
        "CONSUL_CLIENT_CERT" => Some("/consul/cert.pem".to_string()),
        "CONSUL_CLIENT_KEY" => Some("/consul/key.pem".to_string()),
        _ => None,
    };
    let mut cli = parse(&["services", "--ca-file", "/flag/ca.pem"]).unwrap();
    // Whatever SIGNPOST_* variables this test runs under.
    cli.opts.client_cert = None;
    cli.opts.client_key = None;
    let tls = cli.opts.tls_from(&consul_env);
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(std::path::Path::new("/flag/ca.pem"))
    );
    assert_eq!(
        tls.cert_file.as_deref(),
        Some(std::path::Path::new("/consul/cert.pem"))
    );
    assert_eq!(
        tls.key_file.as_deref(),
        Some(std::path::Path::new("/consul/key.pem"))
    );
    cli.opts.ca_file = None;
    assert!(cli.opts.tls_from(&|_: &str| None).is_default());
}
