//! Real handshakes over loopback: what a server presents, what a client accepts, and reload.

use std::sync::Arc;

use signpost_tls::rustls::pki_types::{CertificateDer, ServerName};
use signpost_tls::testing::{Files, TestPki};
use signpost_tls::tokio_rustls::TlsConnector;
use signpost_tls::{ClientTls, ReloadingAcceptor, ServerTls, TlsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn server_spec(files: &Files, verify_incoming: bool) -> ServerTls {
    ServerTls {
        cert_file: files.cert_file.clone(),
        key_file: files.key_file.clone(),
        ca_file: Some(files.ca_file.clone()),
        verify_incoming,
    }
}

/// Serves `connections` TLS connections, each answering one byte with "ok".
async fn serve(acceptor: Arc<ReloadingAcceptor>, connections: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..connections {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.acceptor();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut byte = [0u8; 1];
                    if tls.read_exact(&mut byte).await.is_ok() {
                        let _ = tls.write_all(b"ok").await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });
    addr
}

/// Connects, exchanges a byte, and returns the certificate the server presented.
async fn call(
    addr: std::net::SocketAddr,
    client: &ClientTls,
) -> std::io::Result<CertificateDer<'static>> {
    let connector = TlsConnector::from(Arc::new(client.client_config().unwrap()));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"x").await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    assert_eq!(answer, b"ok");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok(presented.into_owned())
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_and_one_trusting_another_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test CA");
    let (files, leaf) = pki.write(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let acceptor = ReloadingAcceptor::new(server_spec(&files, false), &[]).unwrap();
    let addr = serve(acceptor, 3).await;

    let trusting = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        ..ClientTls::default()
    };
    assert_eq!(call(addr, &trusting).await.unwrap(), leaf.der);

    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = TestPki::new("other CA").write(other_dir.path(), "x", &["localhost"]);
    let distrusting = ClientTls {
        ca_file: Some(other.ca_file),
        ..ClientTls::default()
    };
    assert!(call(addr, &distrusting).await.is_err());

    let skipping = ClientTls {
        skip_verify: true,
        ..ClientTls::default()
    };
    assert_eq!(call(addr, &skipping).await.unwrap(), leaf.der);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test CA");
    let (files, _) = pki.write(dir.path(), "server", &["localhost"]);
    let (client_files, _) = pki.write(dir.path(), "client", &["client"]);
    let acceptor = ReloadingAcceptor::new(server_spec(&files, true), &[]).unwrap();
    let addr = serve(acceptor, 3).await;

    let anonymous = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        ..ClientTls::default()
    };
    assert!(call(addr, &anonymous).await.is_err());

    let other_dir = tempfile::tempdir().unwrap();
    let (stranger, _) = TestPki::new("other CA").write(other_dir.path(), "c", &["client"]);
    let foreign = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        cert_file: Some(stranger.cert_file),
        key_file: Some(stranger.key_file),
        skip_verify: false,
    };
    assert!(call(addr, &foreign).await.is_err());

    let member = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        cert_file: Some(client_files.cert_file),
        key_file: Some(client_files.key_file),
        skip_verify: false,
    };
    call(addr, &member).await.unwrap();
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test CA");
    let (files, first) = pki.write(dir.path(), "server", &["localhost"]);
    let acceptor = ReloadingAcceptor::new(server_spec(&files, false), &[]).unwrap();
    let addr = serve(acceptor.clone(), 2).await;
    let client = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        ..ClientTls::default()
    };
    assert_eq!(call(addr, &client).await.unwrap(), first.der);

    let (_, second) = pki.write(dir.path(), "server", &["localhost"]);
    assert!(acceptor.changed_on_disk());
    acceptor.reload().unwrap();
    assert!(!acceptor.changed_on_disk());
    assert_eq!(call(addr, &client).await.unwrap(), second.der);
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test CA");
    let (files, first) = pki.write(dir.path(), "server", &["localhost"]);
    let acceptor = ReloadingAcceptor::new(server_spec(&files, false), &[]).unwrap();
    let addr = serve(acceptor.clone(), 1).await;

    std::fs::write(&files.cert_file, "not a certificate").unwrap();
    assert!(matches!(
        acceptor.reload(),
        Err(TlsError::NoCertificate { .. })
    ));
    let client = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        ..ClientTls::default()
    };
    assert_eq!(call(addr, &client).await.unwrap(), first.der);
}

#[test]
fn bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = TestPki::new("test CA").write(dir.path(), "server", &["localhost"]);
    let no_ca = ServerTls {
        ca_file: None,
        ..server_spec(&files, true)
    };
    assert!(matches!(
        no_ca.server_config(&[]),
        Err(TlsError::NoClientCa)
    ));
    let half = ClientTls {
        cert_file: Some(files.cert_file.clone()),
        ..ClientTls::default()
    };
    assert!(matches!(half.client_config(), Err(TlsError::HalfIdentity)));
    let missing = ServerTls {
        cert_file: dir.path().join("absent.pem"),
        ..server_spec(&files, false)
    };
    let err = missing.server_config(&[]).unwrap_err();
    assert!(err.to_string().contains("absent.pem"), "{err}");
}

#[tokio::test]
async fn watch_reloads_when_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test CA");
    let (files, first) = pki.write(dir.path(), "server", &["localhost"]);
    let acceptor = ReloadingAcceptor::new(server_spec(&files, false), &[]).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(acceptor.clone().watch(
        std::time::Duration::from_millis(10),
        async move {
            let _ = stopped.await;
        },
    ));
    assert!(!acceptor.changed_on_disk());
    let (_, second) = pki.write(dir.path(), "server", &["localhost"]);
    assert_ne!(first.der, second.der);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while acceptor.changed_on_disk() {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let addr = serve(acceptor.clone(), 1).await;
    let client = ClientTls {
        ca_file: Some(files.ca_file.clone()),
        ..ClientTls::default()
    };
    assert_eq!(call(addr, &client).await.unwrap(), second.der);
    stop.send(()).unwrap();
    watcher.await.unwrap();
}
