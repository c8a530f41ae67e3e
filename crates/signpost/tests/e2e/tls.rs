//! `[tls]` on the real binary, with certificates made at run time: curl with `--cacert` gets
//! an answer, plain HTTP does not, mutual TLS refuses curl without a client certificate, and a
//! certificate replaced on disk is served to the next connection after SIGHUP, without a
//! restart and without dropping an open connection.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use signpost_tls::rustls::pki_types::{CertificateDer, ServerName};
use signpost_tls::testing::{Files, TestPki};
use signpost_tls::ClientTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{poll_until, Agent, READY_TIMEOUT};

const NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// Writes a config turning TLS on with `files` (and mTLS with `verify_incoming`).
fn config(dir: &Path, files: &Files, verify_incoming: bool) -> std::path::PathBuf {
    let path = dir.join("signpost.toml");
    let ca = if verify_incoming {
        format!("ca_file = {:?}\nverify_incoming = true\n", files.ca_file)
    } else {
        String::new()
    };
    std::fs::write(
        &path,
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n{ca}",
            files.cert_file, files.key_file
        ),
    )
    .unwrap();
    path
}

fn https(agent: &Agent, path: &str) -> String {
    agent.url(path).replacen("http://", "https://", 1)
}

/// Starts the agent with `config` and waits until it answers over HTTPS as the leader.
async fn start(dir: &Path, config: &Path, client: &ClientTls) -> Agent {
    let agent = Agent::spawn(
        dir,
        [
            "--dev".as_ref(),
            "--no-dns".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    signpost_tls::install_default_provider();
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(client.client_config().unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = https(&agent, "/api/v1/agent/self");
    poll_until(
        READY_TIMEOUT,
        "the agent to lead, answering over HTTPS",
        || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let body: serde_json::Value =
                    http.get(&url).send().await.ok()?.json().await.ok()?;
                (body["raft"]["role"] == "leader").then_some(())
            }
        },
    )
    .await;
    agent
}

/// Runs curl with `args`; its exit status and stdout.
fn curl(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("curl runs (scripts/test.sh installs it)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn curl_with_the_ca_gets_an_answer_and_plain_http_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("e2e CA");
    let (files, _) = pki.write(dir.path(), "agent", NAMES);
    let cfg = config(dir.path(), &files, false);
    let trust = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        ..ClientTls::default()
    };
    let agent = start(dir.path(), &cfg, &trust).await;

    let url = https(&agent, "/api/v1/agent/self");
    let (code, body) = curl(&["--cacert", path_str(&files.ca_file), &url]);
    assert_eq!(code, Some(0), "curl --cacert: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["raft"]["role"], "leader");

    // Without the CA, curl refuses the certificate; plain HTTP gets no HTTP answer.
    let (code, _) = curl(&[&url]);
    assert_ne!(code, Some(0), "curl without --cacert must fail");
    let (code, body) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &agent.url("/api/v1/agent/self"),
    ]);
    assert_ne!(code, Some(0), "plain HTTP must fail, got {body}");
}

#[tokio::test]
async fn mutual_tls_refuses_curl_without_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("e2e CA");
    let (files, _) = pki.write(dir.path(), "agent", NAMES);
    let (client, _) = pki.write(dir.path(), "client", &["client"]);
    let cfg = config(dir.path(), &files, true);
    let identity = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        cert_file: Some(client.cert_file.clone()),
        key_file: Some(client.key_file.clone()),
        skip_verify: false,
    };
    let agent = start(dir.path(), &cfg, &identity).await;
    let url = https(&agent, "/api/v1/services");

    let (code, _) = curl(&["--cacert", path_str(&files.ca_file), &url]);
    assert_ne!(code, Some(0), "no client certificate must fail");
    let (code, body) = curl(&[
        "--cacert",
        path_str(&files.ca_file),
        "--cert",
        path_str(&client.cert_file),
        "--key",
        path_str(&client.key_file),
        &url,
    ]);
    assert_eq!(code, Some(0), "with the client certificate: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(body.is_array(), "{body}");
}

/// Connects to `addr` trusting `ca`; the certificate it presented, and the connection.
async fn connect(
    addr: &str,
    ca: &Path,
) -> (
    CertificateDer<'static>,
    signpost_tls::tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let mut config = ClientTls {
        ca_file: Some(ca.to_path_buf()),
        ..ClientTls::default()
    }
    .client_config()
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = signpost_tls::tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (cert, stream)
}

/// A keep-alive `GET path` on `stream`; the status line.
async fn status_line<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_replaced_certificate_is_served_after_sighup_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("e2e CA");
    let (files, old) = pki.write(dir.path(), "agent", NAMES);
    let cfg = config(dir.path(), &files, false);
    let trust = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        ..ClientTls::default()
    };
    let mut agent = start(dir.path(), &cfg, &trust).await;
    let pid = agent.pid();
    let addr = agent.base_url().replacen("http://", "", 1);

    let (served, mut open) = connect(&addr, &files.ca_file).await;
    assert_eq!(served, old.der);
    assert_eq!(
        status_line(&mut open, "/api/v1/services").await,
        "HTTP/1.1 200 OK"
    );

    let (_, new) = pki.write(dir.path(), "agent", NAMES);
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    poll_until(
        Duration::from_secs(10),
        "the new certificate to be served",
        || {
            let (addr, ca, new) = (addr.clone(), files.ca_file.clone(), new.der.clone());
            async move { (connect(&addr, &ca).await.0 == new).then_some(()) }
        },
    )
    .await;
    // Same process, and the connection opened before the reload is still served.
    assert!(agent.try_wait().is_none(), "the agent is still running");
    assert_eq!(agent.pid(), pid);
    assert_eq!(
        status_line(&mut open, "/api/v1/services").await,
        "HTTP/1.1 200 OK"
    );
    // The signal itself reloads (the files are also polled, which may have been first).
    poll_until(
        Duration::from_secs(10),
        "the agent to log the SIGHUP reload",
        || {
            let logs = agent.logs();
            async move {
                logs.contains("TLS certificate reloaded (SIGHUP)")
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn without_tls_a_sighup_does_not_stop_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), ["--dev", "--no-dns"]).await;
    let status = Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    poll_until(
        Duration::from_secs(10),
        "the agent to log the SIGHUP",
        || {
            let logs = agent.logs();
            async move { logs.contains("SIGHUP received").then_some(()) }
        },
    )
    .await;
    assert!(agent.try_wait().is_none(), "the agent is still running");
    assert_eq!(agent.agent_self().await["raft"]["role"], "leader");
}
