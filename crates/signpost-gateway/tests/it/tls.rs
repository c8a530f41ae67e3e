//! TLS at both ends: clients reach the gateway over TLS (`[tls]`), and `protocol = "https"`
//! routes speak TLS to their instances, verified against `[upstream_tls] ca_file`.
//! Certificates are made at run time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use signpost_tls::rustls::pki_types::{CertificateDer, ServerName};
use signpost_tls::testing::{Files, TestPki};
use signpost_tls::tokio_rustls::{TlsAcceptor, TlsConnector};
use signpost_tls::ClientTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::{eventually, respond, AgentExt, TestAgent, TestGateway};

/// An HTTPS upstream on 127.0.0.1:0 answering a JSON echo (its name and the request's
/// headers), counting the requests that reached it.
struct HttpsBackend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpsBackend {
    async fn start(name: &'static str, files: &Files) -> HttpsBackend {
        let spec = signpost_tls::ServerTls {
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
            ca_file: None,
            verify_incoming: false,
        };
        let acceptor = TlsAcceptor::from(Arc::new(spec.server_config(&[b"http/1.1"]).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                conns.spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                            .collect();
                        let body = json!({ "backend": name, "uri": req.uri().to_string(), "headers": headers });
                        async move {
                            Ok::<_, std::convert::Infallible>(respond(
                                200,
                                serde_json::to_vec(&body).unwrap(),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpsBackend {
            addr,
            requests,
            task,
        }
    }
}

impl Drop for HttpsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS connection to `addr` trusting `ca_file`, and the certificate the server presented.
async fn connect_tls(
    addr: SocketAddr,
    ca_file: &Path,
) -> (
    signpost_tls::tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let config = ClientTls {
        ca_file: Some(ca_file.to_path_buf()),
        ..ClientTls::default()
    }
    .client_config()
    .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (stream, cert)
}

/// `GET path` over a new TLS connection to `addr`.
async fn get_tls(addr: SocketAddr, ca_file: &Path, path: &str) -> (u16, Value) {
    let (stream, _) = connect_tls(addr, ca_file).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn tls_config(gateway: &Files, ca_file: &Path, extra: &str) -> String {
    format!(
        r#"
        [tls]
        cert_file = {:?}
        key_file = {:?}
        [upstream_tls]
        ca_file = {:?}
        {extra}
        "#,
        gateway.cert_file, gateway.key_file, ca_file
    )
}

#[tokio::test]
async fn a_client_over_tls_reaches_an_https_upstream_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (gateway_files, _) = pki.write(dir.path(), "gateway", &["127.0.0.1", "localhost"]);
    let (upstream_files, _) = pki.write(dir.path(), "upstream", &["127.0.0.1"]);
    let backend = HttpsBackend::start("secure", &upstream_files).await;
    let agent = TestAgent::start().await;
    agent
        .add_instance("secure", "secure-1", backend.addr.port(), json!({}))
        .await;
    let config = tls_config(
        &gateway_files,
        &gateway_files.ca_file,
        "[[route]]\nprefix = \"/secure\"\nservice = \"secure\"\nprotocol = \"https\"\nstrip_prefix = true",
    );
    let gw = TestGateway::start(&agent, &config).await;
    gw.wait_upstreams("/secure", 1).await;

    let (status, body) = get_tls(gw.addr, &gateway_files.ca_file, "/secure/orders?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backend"], "secure");
    assert_eq!(body["uri"], "/orders?x=1");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(backend.requests.load(Ordering::SeqCst), 1);
    // The pooled TLS connection carries the next request too.
    assert_eq!(
        get_tls(gw.addr, &gateway_files.ca_file, "/secure/2")
            .await
            .0,
        200
    );
    assert_eq!(gw.route("/secure").unwrap().protocol, "https");

    // Plain HTTP to the TLS listener gets no answer.
    assert!(gw.client.get(gw.url("/secure/x")).send().await.is_err());
}

#[tokio::test]
async fn an_upstream_certificate_the_ca_did_not_sign_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (gateway_files, _) = pki.write(dir.path(), "gateway", &["127.0.0.1"]);
    let other = tempfile::tempdir().unwrap();
    let (rogue_files, _) =
        TestPki::new("someone else").write(other.path(), "rogue", &["127.0.0.1"]);
    let rogue = HttpsBackend::start("rogue", &rogue_files).await;
    let agent = TestAgent::start().await;
    agent
        .add_instance("secure", "secure-1", rogue.addr.port(), json!({}))
        .await;
    let config = tls_config(
        &gateway_files,
        &gateway_files.ca_file,
        "[[route]]\nprefix = \"/secure\"\nservice = \"secure\"\nprotocol = \"https\"\n[route.retry]\nattempts = 1",
    );
    let gw = TestGateway::start(&agent, &config).await;
    gw.wait_upstreams("/secure", 1).await;
    let (status, body) = get_tls(gw.addr, &gateway_files.ca_file, "/secure/x").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["kind"], "upstream_failed");
    assert!(
        body["error"].as_str().unwrap().contains("TLS handshake"),
        "{body}"
    );
    assert_eq!(rogue.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (files, first) = pki.write(dir.path(), "gateway", &["127.0.0.1"]);
    let agent = TestAgent::start().await;
    let gw = TestGateway::start(&agent, &tls_config(&files, &files.ca_file, "")).await;
    let (open, served) = connect_tls(gw.addr, &files.ca_file).await;
    assert_eq!(served, first.der);

    let (_, second) = pki.write(dir.path(), "gateway", &["127.0.0.1"]);
    assert_ne!(first.der, second.der);
    eventually("the new certificate is served", || async {
        connect_tls(gw.addr, &files.ca_file).await.1 == second.der
    })
    .await;
    // The connection opened before keeps working on the old certificate.
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/nothing")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 404);
}
