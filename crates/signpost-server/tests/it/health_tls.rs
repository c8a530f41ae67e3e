//! HTTPS health checks: the checked service's certificate is verified against `[health]
//! ca_file` (else the system's roots), or not at all with `tls_skip_verify` (Consul's
//! `TLSSkipVerify`). The service and its certificates are made at run time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use signpost_tls::testing::{Files, TestPki};
use signpost_tls::tokio_rustls::TlsAcceptor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::common::{eventually, TestAgent};

/// An HTTPS service answering 200 on every path; counts the TLS handshakes tried on it.
struct HttpsService {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpsService {
    async fn start(files: &Files) -> HttpsService {
        let spec = signpost_tls::ServerTls {
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
            ca_file: None,
            verify_incoming: false,
        };
        let config = spec.server_config(&[b"h2", b"http/1.1"]).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counter = handshakes.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(axum::body::Body::from("ok")))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        HttpsService {
            addr,
            handshakes,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/health", self.addr.port())
    }
}

impl Drop for HttpsService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check(url: &str, skip_verify: bool) -> serde_json::Value {
    json!({"http": url, "interval": "100ms", "timeout": "1s", "tls_skip_verify": skip_verify})
}

#[tokio::test]
async fn an_https_check_passes_with_the_ca_configured() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost health CA");
    let (files, _) = pki.write(dir.path(), "svc", &["127.0.0.1"]);
    let service = HttpsService::start(&files).await;
    let ca = files.ca_file.clone();
    let t = TestAgent::start_with(move |c| c.health.ca_file = Some(ca)).await;
    let (code, err) = t
        .register(
            "svc",
            json!({"id": "a", "address": "127.0.0.1", "port": service.addr.port(),
                   "check": check(&service.url(), false)}),
        )
        .await;
    assert_eq!(code, 201, "{err}");
    eventually("the HTTPS check passes", || async {
        t.status_of("svc", "a").await.as_deref() == Some("passing")
    })
    .await;
}

#[tokio::test]
async fn an_https_check_is_critical_without_the_ca_and_passes_with_tls_skip_verify() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("a CA the agent does not know");
    let (files, _) = pki.write(dir.path(), "svc", &["127.0.0.1"]);
    let service = HttpsService::start(&files).await;
    // No [health] ca_file: the system's roots, which never signed this certificate.
    let t = TestAgent::start().await;
    let (code, err) = t
        .register(
            "svc",
            json!({"id": "verified", "address": "127.0.0.1", "port": service.addr.port(),
                   "check": check(&service.url(), false)}),
        )
        .await;
    assert_eq!(code, 201, "{err}");
    // Consul's spelling of the same thing, on another instance.
    let resp = t
        .client
        .put(t.url("/v1/agent/service/register"))
        .json(&json!({"Name": "svc", "ID": "skipping", "Address": "127.0.0.1",
                      "Port": service.addr.port(),
                      "Check": {"HTTP": service.url(), "Interval": "100ms", "TLSSkipVerify": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventually("the skip-verify check passes", || async {
        t.status_of("svc", "skipping").await.as_deref() == Some("passing")
    })
    .await;
    // The verifying check has probed several times by now (both probe every 100 ms): every
    // handshake failed verification, so it is still critical.
    eventually("several probes ran", || async {
        service.handshakes.load(Ordering::SeqCst) >= 6
    })
    .await;
    assert_eq!(
        t.status_of("svc", "verified").await.as_deref(),
        Some("critical")
    );
    let (_, instance) = t.get("/api/v1/services/svc/instances/skipping").await;
    assert_eq!(instance["check"]["tls_skip_verify"], true, "{instance}");
}

/// A gRPC server's TLS connection, as tonic's `serve_with_incoming` takes it.
struct TlsConn(signpost_tls::tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A gRPC `grpc.health.v1.Health` server over TLS on 127.0.0.1:0, reporting SERVING; the
/// handle stops it.
async fn grpc_tls_server(files: &Files) -> (SocketAddr, JoinHandle<()>) {
    let spec = signpost_tls::ServerTls {
        cert_file: files.cert_file.clone(),
        key_file: files.key_file.clone(),
        ca_file: None,
        verify_incoming: false,
    };
    let acceptor = TlsAcceptor::from(Arc::new(spec.server_config(&[b"h2"]).unwrap()));
    let (_reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Handshakes one after the other; a failed one is skipped.
    let incoming = futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return None;
            };
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(TlsConn(tls)), (listener, acceptor)));
            }
        }
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}

#[tokio::test]
async fn grpc_checks_over_tls_verify_or_skip_verification() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost grpc CA");
    let (files, _) = pki.write(dir.path(), "grpc", &["127.0.0.1"]);
    let (addr, server) = grpc_tls_server(&files).await;
    let grpc = |id: &str, tls: bool, skip: bool| {
        json!({"id": id, "address": "127.0.0.1", "port": addr.port(),
               "check": {"grpc": addr.to_string(), "grpc_use_tls": tls, "tls_skip_verify": skip,
                         "interval": "100ms", "timeout": "1s"}})
    };
    let ca = files.ca_file.clone();
    let t = TestAgent::start_with(move |c| c.health.ca_file = Some(ca)).await;
    for (id, tls, skip) in [("verified", true, false), ("plaintext", false, false)] {
        let (code, err) = t.register("grpc", grpc(id, tls, skip)).await;
        assert_eq!(code, 201, "{err}");
    }
    eventually("the gRPC check over TLS passes", || async {
        t.status_of("grpc", "verified").await.as_deref() == Some("passing")
    })
    .await;
    // Plaintext HTTP/2 to a TLS server never answers SERVING.
    assert_eq!(
        t.status_of("grpc", "plaintext").await.as_deref(),
        Some("critical")
    );

    // An agent that does not know the CA passes it only with tls_skip_verify.
    let t = TestAgent::start().await;
    for (id, tls, skip) in [("skipping", true, true), ("unknown-ca", true, false)] {
        let (code, err) = t.register("grpc", grpc(id, tls, skip)).await;
        assert_eq!(code, 201, "{err}");
    }
    eventually("the skip-verify gRPC check passes", || async {
        t.status_of("grpc", "skipping").await.as_deref() == Some("passing")
    })
    .await;
    assert_eq!(
        t.status_of("grpc", "unknown-ca").await.as_deref(),
        Some("critical")
    );
    server.abort();
}
