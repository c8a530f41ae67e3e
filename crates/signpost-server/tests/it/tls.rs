//! `[tls]` over real sockets, with certificates made at run time: HTTPS only on the API,
//! mutual TLS with `verify_incoming`, members over mTLS (a forged member call without the
//! cluster CA's certificate gets nowhere), and a certificate replaced on disk served to the
//! next connection while open connections keep working.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use signpost_server::agent::{Listeners, Listening};
use signpost_server::{Agent, AgentConfig};
use signpost_testkit::{bind, eventually, Served};
use signpost_tls::rustls::pki_types::{CertificateDer, ServerName};
use signpost_tls::testing::{Files, TestPki};
use signpost_tls::ClientTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// A reqwest client trusting `ca`, presenting `identity` when given.
fn https_client(ca: &Path, identity: Option<&Files>) -> reqwest::Client {
    let tls = ClientTls {
        ca_file: Some(ca.to_path_buf()),
        cert_file: identity.map(|f| f.cert_file.clone()),
        key_file: identity.map(|f| f.key_file.clone()),
        skip_verify: false,
    }
    .client_config()
    .unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

fn tls_config(files: &Files, verify_incoming: bool) -> AgentConfig {
    let mut config = AgentConfig {
        dev: true,
        ..AgentConfig::default()
    };
    config.tls.cert_file = Some(files.cert_file.clone());
    config.tls.key_file = Some(files.key_file.clone());
    config.tls.ca_file = Some(files.ca_file.clone());
    config.tls.verify_incoming = verify_incoming;
    config
}

/// An agent served on 127.0.0.1 (HTTP, and a Raft listener when `raft`).
struct Served1 {
    agent: Arc<Agent>,
    http: SocketAddr,
    raft: Option<SocketAddr>,
    _served: Served,
}

async fn serve(mut config: AgentConfig, raft: bool) -> Served1 {
    let http_listener = bind(0).await;
    let http = http_listener.local_addr().unwrap();
    let raft_listener = if raft { Some(bind(0).await) } else { None };
    let raft = raft_listener.as_ref().map(|l| l.local_addr().unwrap());
    config.http_addr = http;
    config.raft.addr = raft;
    let agent = Agent::start_with(config, Listening { http, raft })
        .await
        .expect("the agent starts");
    let serving = agent.clone();
    let served = Served::spawn("the agent", |stopped| async move {
        let listeners = Listeners {
            http: http_listener,
            raft: raft_listener,
            dns: None,
        };
        serving.serve_all(listeners, stopped).await.unwrap();
    });
    Served1 {
        agent,
        http,
        raft,
        _served: served,
    }
}

#[tokio::test]
async fn the_api_speaks_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (files, _) = pki.write(dir.path(), "agent", NAMES);
    let mut config = tls_config(&files, false);
    config.tls.ca_file = None;
    let a = serve(config, false).await;
    eventually("the agent leads", || async { a.agent.is_leader() }).await;

    let client = https_client(&files.ca_file, None);
    let resp = client
        .get(format!("https://{}/api/v1/agent/self", a.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // `/raft/*` shares this port (no Raft listener), but with TLS on a member call needs a
    // client certificate, which this listener cannot even ask for (no CA).
    let before = a.agent.raft().metrics().borrow().current_term;
    let resp = client
        .post(format!("https://{}/raft/vote", a.http))
        .json(
            &json!({"vote": {"leader_id": {"term": before + 9, "node_id": 5}, "committed": false},
                      "last_log_id": null}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{body}"
    );
    assert_eq!(a.agent.raft().metrics().borrow().current_term, before);

    // Plain HTTP gets no answer.
    let plain = signpost_testkit::http_client()
        .get(format!("http://{}/api/v1/agent/self", a.http))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must fail: {plain:?}");
    // A client trusting another CA refuses the server.
    let elsewhere = tempfile::tempdir().unwrap();
    let (other, _) = TestPki::new("another CA").write(elsewhere.path(), "other", NAMES);
    let stranger = https_client(&other.ca_file, None)
        .get(format!("https://{}/api/v1/agent/self", a.http))
        .send()
        .await;
    assert!(stranger.is_err(), "{stranger:?}");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (files, _) = pki.write(dir.path(), "agent", NAMES);
    let (client_files, _) = pki.write(dir.path(), "client", &["client"]);
    let foreign = TestPki::new("a CA nobody trusts");
    let (foreign_files, _) = foreign.write(elsewhere.path(), "client", &["client"]);
    let a = serve(tls_config(&files, true), true).await;
    eventually("the agent leads", || async { a.agent.is_leader() }).await;
    let url = format!("https://{}/api/v1/agent/self", a.http);

    let without = https_client(&files.ca_file, None).get(&url).send().await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    let foreign = https_client(&files.ca_file, Some(&foreign_files))
        .get(&url)
        .send()
        .await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA: {foreign:?}"
    );
    let resp = https_client(&files.ca_file, Some(&client_files))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn members_talk_over_mtls_and_a_forged_member_call_gets_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let pki = TestPki::new("cluster CA");
    let (one, _) = pki.write(dir.path(), "one", NAMES);
    let (two, _) = pki.write(dir.path(), "two", NAMES);
    let (foreign, _) = TestPki::new("intruder CA").write(elsewhere.path(), "x", NAMES);

    let mut first_config = tls_config(&one, false);
    first_config.node_id = 1;
    let first = serve(first_config, true).await;
    eventually("the first member leads", || async {
        first.agent.is_leader()
    })
    .await;
    let mut second_config = tls_config(&two, false);
    second_config.node_id = 2;
    second_config.join = vec![first.http.to_string()];
    let second = serve(second_config, true).await;
    let voters = |a: &Agent| {
        a.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect::<Vec<_>>()
    };
    eventually("both are voters", || async {
        voters(&first.agent) == [1, 2] && voters(&second.agent) == [1, 2]
    })
    .await;

    // A write on the follower is forwarded over mTLS and replicated back.
    let client = https_client(&one.ca_file, None);
    let resp = client
        .put(format!("https://{}/api/v1/kv/greeting", second.http))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually("the write is on the leader", || async {
        client
            .get(format!("https://{}/api/v1/kv/greeting", first.http))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;

    // A forged AppendEntries in a later term: without a client certificate, or with one from
    // another CA, the Raft listener does not even finish the handshake.
    let state = |a: &Agent| {
        let m = a.raft().metrics().borrow().clone();
        (m.current_term, m.last_log_index, voters(a))
    };
    let before = state(&first.agent);
    let forged = json!({
        "vote": {"leader_id": {"term": before.0 + 50, "node_id": 66}, "committed": true},
        "prev_log_id": null, "entries": [], "leader_commit": null
    });
    let join = json!({"node_id": 9, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"});
    let raft = first.raft.unwrap();
    for identity in [None, Some(&foreign)] {
        let intruder = https_client(&one.ca_file, identity);
        for (path, body) in [("/raft/append", &forged), ("/raft/join", &join)] {
            let sent = intruder
                .post(format!("https://{raft}{path}"))
                .json(body)
                .send()
                .await;
            assert!(
                sent.is_err(),
                "{path} with {:?}: {sent:?}",
                identity.is_some()
            );
        }
    }
    assert_eq!(state(&first.agent), before, "nothing changed");
}

/// The certificate the server at `addr` presents to a new connection, and that connection.
async fn served_certificate(
    addr: SocketAddr,
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
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (cert, stream)
}

/// Sends a keep-alive `GET path` on `stream` and returns the status line.
async fn get_status<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_new_connections_and_open_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (files, old) = pki.write(dir.path(), "agent", NAMES);
    let mut config = tls_config(&files, false);
    config.tls.ca_file = None;
    let a = serve(config, false).await;
    eventually("the agent leads", || async { a.agent.is_leader() }).await;

    let (served, mut open) = served_certificate(a.http, &files.ca_file).await;
    assert_eq!(served, old.der);
    assert_eq!(
        get_status(&mut open, "/api/v1/services").await,
        "HTTP/1.1 200 OK"
    );

    let (_, new) = pki.write(dir.path(), "agent", NAMES);
    assert_ne!(new.der, old.der);
    eventually("a new connection gets the new certificate", || async {
        served_certificate(a.http, &files.ca_file).await.0 == new.der
    })
    .await;
    // The connection opened before is still served.
    assert_eq!(
        get_status(&mut open, "/api/v1/services").await,
        "HTTP/1.1 200 OK"
    );
}
