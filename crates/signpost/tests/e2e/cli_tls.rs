//! The command-line client over TLS: `https://` addresses, `--ca-file`, and the client
//! certificate an agent with `verify_incoming` requires (`--client-cert`, `--client-key`).

use std::path::Path;
use std::time::Duration;

use signpost_tls::testing::TestPki;

use crate::harness::{poll_until, run_signpost, Agent, Run, READY_TIMEOUT};

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn cli(dir: &Path, args: &[&str]) -> Run {
    run_signpost(dir, args, CLI_TIMEOUT).await
}

#[tokio::test]
async fn cli_speaks_mutual_tls_with_the_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("cli e2e CA");
    let (server, _) = pki.write(dir.path(), "agent", &["127.0.0.1"]);
    let (client, _) = pki.write(dir.path(), "client", &["cli"]);
    let config = dir.path().join("signpost.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nverify_incoming = true\n",
            server.cert_file, server.key_file, server.ca_file
        ),
    )
    .unwrap();
    let agent = Agent::spawn(
        dir.path(),
        [
            "--dev".as_ref(),
            "--no-dns".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    let addr = agent.base_url().replacen("http://", "https://", 1);
    let secure = [
        "--addr",
        addr.as_str(),
        "--ca-file",
        path(&server.ca_file),
        "--client-cert",
        path(&client.cert_file),
        "--client-key",
        path(&client.key_file),
    ];

    // The agent comes up; the CLI with the CA and a client certificate is answered.
    let members = poll_until(READY_TIMEOUT, "the CLI to list members over mTLS", || {
        let dir = dir.path().to_path_buf();
        async move {
            let run = cli(&dir, &[&["members", "--json"][..], &secure[..]].concat()).await;
            let body: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
            (body["leader"].as_u64().is_some()).then_some(body)
        }
    })
    .await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    let run = cli(
        dir.path(),
        &[&["kv", "put", "app/color", "blue"][..], &secure[..]].concat(),
    )
    .await;
    assert!(run.status.success(), "{}", run.stderr);
    let run = cli(
        dir.path(),
        &[&["kv", "get", "app/color"][..], &secure[..]].concat(),
    )
    .await;
    assert_eq!(run.stdout.trim(), "blue", "{}", run.stderr);

    // Without the client certificate the agent refuses the handshake.
    let run = cli(
        dir.path(),
        &[
            "services",
            "--addr",
            &addr,
            "--ca-file",
            path(&server.ca_file),
        ],
    )
    .await;
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains(&format!("cannot reach the agent at {addr}")),
        "{}",
        run.stderr
    );
    // Without the CA the agent's certificate is not trusted.
    let run = cli(
        dir.path(),
        &[
            "services",
            "--addr",
            &addr,
            "--client-cert",
            path(&client.cert_file),
            "--client-key",
            path(&client.key_file),
        ],
    )
    .await;
    assert!(!run.status.success());
    // A key without its certificate is a usage error, said before anything is sent.
    let run = cli(
        dir.path(),
        &[
            "services",
            "--addr",
            &addr,
            "--client-key",
            path(&client.key_file),
        ],
    )
    .await;
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("cert_file and key_file"),
        "{}",
        run.stderr
    );
}
