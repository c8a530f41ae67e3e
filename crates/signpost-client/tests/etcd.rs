//! The etcd backend against a real etcd 3.4 process on free loopback ports: register, discover
//! and watch; lease expiry removes an instance; a watch behind a compaction re-lists.
//!
//! These tests need the `etcd` binary (Debian `etcd-server`; `scripts/test.sh` installs it). If
//! it is missing they fail, on purpose: a skipped backend test would hide a broken backend.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use signpost_client::discovery::{Discovery, DiscoveryOptions};
use signpost_client::registration::Registration;
use signpost_client::registry::etcd::EtcdRegistry;
use signpost_client::registry::{
    ClientTls, ConfigError, RegistrationSpec, Registry, RegistryError,
};
use signpost_client::{Instance, Update};
use signpost_tls::testing::TestPki;

use common::{eventually, eventually_within, ids_of};

/// A running etcd, killed (by PID) and its data removed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
    /// How a client reaches it: `None` over plain HTTP.
    tls: Option<ClientTls>,
}

impl Etcd {
    async fn start() -> Etcd {
        Etcd::start_with(None).await
    }

    /// With `pki`, etcd serves `https://` only with a certificate from it and requires client
    /// certificates from it (`--client-cert-auth`); the etcd's `tls` is a client's settings.
    async fn start_with(pki: Option<&TestPki>) -> Etcd {
        let binary = which_etcd();
        let dir = tempfile::tempdir().unwrap();
        // Two ports: client and peer. Reserved by binding, released just before etcd binds them.
        let (client_port, peer_port) = {
            let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let scheme = if pki.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let mut tls_args = Vec::new();
        let mut tls = None;
        if let Some(pki) = pki {
            let (server, _) = pki.write(dir.path(), "etcd", &["127.0.0.1"]);
            let (client, _) = pki.write(dir.path(), "client", &["client"]);
            tls_args = vec![
                format!("--cert-file={}", server.cert_file.display()),
                format!("--key-file={}", server.key_file.display()),
                format!("--trusted-ca-file={}", server.ca_file.display()),
                "--client-cert-auth".to_string(),
            ];
            tls = Some(ClientTls {
                ca_file: Some(client.ca_file),
                cert_file: Some(client.cert_file),
                key_file: Some(client.key_file),
                skip_verify: false,
            });
        }
        let child = Command::new(&binary)
            .args(&tls_args)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--initial-cluster-state=new")
            // Fast elections: a leader (and so a usable cluster) within milliseconds, and a
            // minimum lease TTL of 1.5 × election timeout = 150 ms.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut etcd = Etcd {
            child,
            endpoint: client_url,
            dir,
            tls,
        };
        etcd.wait_ready().await;
        etcd
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "etcd exited at start ({status}):\n{}",
                    log_of(self.dir.path())
                );
            }
            let ready = async {
                let registry = self.try_registry().await.ok()?;
                let mut c = registry.client().clone();
                c.get("probe", None).await.ok()
            };
            if tokio::time::timeout(Duration::from_secs(2), ready)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd not ready within 20 s:\n{}",
                log_of(self.dir.path())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn registry(&self) -> EtcdRegistry {
        self.try_registry().await.unwrap()
    }

    /// Lists `service` through a registry connected with `tls`: connecting and listing alike
    /// may fail.
    async fn list_with(
        &self,
        tls: &ClientTls,
        service: &str,
    ) -> Result<Vec<Instance>, RegistryError> {
        let reg = EtcdRegistry::connect_tls([self.endpoint.as_str()], tls).await?;
        Ok(reg.list(service).await?.1)
    }

    async fn try_registry(&self) -> Result<EtcdRegistry, RegistryError> {
        match &self.tls {
            None => EtcdRegistry::connect([self.endpoint.as_str()]).await,
            Some(tls) => EtcdRegistry::connect_tls([self.endpoint.as_str()], tls).await,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
}

/// The etcd binary on PATH; a clear failure if there is none.
fn which_etcd() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("etcd");
        if candidate.is_file() {
            return candidate.display().to_string();
        }
    }
    panic!(
        "the etcd tests need the `etcd` binary (etcd 3.4) on PATH: install Debian's \
         `etcd-server` package (scripts/test.sh does this), e.g. `apt-get install -y etcd-server`"
    );
}

fn spec(service: &str, id: &str, port: u16, ttl: Duration) -> RegistrationSpec {
    RegistrationSpec {
        instance: Instance {
            id: id.into(),
            service: service.into(),
            address: "10.0.0.1".into(),
            port,
            tags: vec!["v1".into()],
            metadata: [("zone".to_string(), "a".to_string())].into(),
            weight: 3,
            state: Default::default(),
            maintenance: None,
        },
        ttl,
        deregister_after: None,
        check: None,
    }
}

async fn next_update(stream: &mut BoxStream<'static, Result<Update, RegistryError>>) -> Update {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an update within 10 s")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn etcd_registers_lists_watches_and_discovers() {
    let etcd = Etcd::start().await;
    let reg = etcd.registry().await;
    assert_eq!(reg.prefix(), "/services/");
    let a = spec("users", "a", 1, Duration::from_secs(30));
    reg.register(&a).await.unwrap();

    // The instance is JSON at /services/<service>/<id>, on a lease.
    let mut kv = reg.client().clone();
    let got = kv.get("/services/users/a", None).await.unwrap();
    let stored = &got.kvs()[0];
    assert_ne!(stored.lease(), 0, "attached to a lease");
    let value: Instance = serde_json::from_slice(stored.value()).unwrap();
    assert_eq!(value, a.instance);

    let (rev, list) = reg.list("users").await.unwrap();
    assert!(rev > 0);
    assert_eq!(list, vec![a.instance.clone()]);
    // A service whose name is a prefix of another's does not see its instances.
    reg.register(&spec("users-admin", "x", 9, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(reg.list("users").await.unwrap().1.len(), 1);

    let mut stream = reg.watch("users");
    match next_update(&mut stream).await {
        Update::Reset { index, instances } => {
            assert!(index >= rev);
            assert_eq!(ids_of(&instances), ["a"]);
        }
        other => panic!("{other:?}"),
    }
    reg.register(&spec("users", "b", 2, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(
        matches!(next_update(&mut stream).await, Update::Add { instance, .. } if instance.id == "b")
    );
    // Re-registering a known instance is an update.
    reg.register(&spec("users", "b", 3, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(
        matches!(next_update(&mut stream).await, Update::Update { instance, .. } if instance.port == 3)
    );
    reg.heartbeat("users", "b").await.unwrap();
    reg.deregister("users", "a").await.unwrap();
    assert!(matches!(next_update(&mut stream).await, Update::Remove { id, .. } if id == "a"));
    // Deregistered means no lease to renew.
    assert!(matches!(
        reg.heartbeat("users", "a").await,
        Err(RegistryError::NotFound { .. })
    ));

    // Discovery over etcd.
    let registry: Arc<dyn Registry> = Arc::new(reg.clone());
    let discovery = Discovery::new(registry.clone(), DiscoveryOptions::default());
    let users = discovery.service("users");
    assert_eq!(ids_of(&users.ready().await.unwrap()), ["b"]);
    let handle = Registration::builder("users", "10.0.0.2", 8080)
        .id("c")
        .ttl(Duration::from_secs(2))
        .register(registry)
        .await
        .unwrap();
    eventually("c is discovered", || async {
        ids_of(&users.instances()) == ["b", "c"]
    })
    .await;
    handle.deregister().await.unwrap();
    eventually("c is gone", || async {
        ids_of(&users.instances()) == ["b"]
    })
    .await;
}

#[tokio::test]
async fn an_expired_lease_removes_the_instance_and_registration_brings_it_back() {
    let etcd = Etcd::start().await;
    let reg = etcd.registry().await;
    let registry: Arc<dyn Registry> = Arc::new(reg.clone());
    let discovery = Discovery::new(registry.clone(), DiscoveryOptions::default());
    let users = discovery.service("users");
    users.ready().await.unwrap();

    // Registered with a 1 s lease and never heartbeated: etcd drops it.
    reg.register(&spec("users", "quiet", 1, Duration::from_secs(1)))
        .await
        .unwrap();
    // A heartbeated one with the same TTL stays.
    let kept = Registration::builder("users", "10.0.0.2", 2)
        .id("kept")
        .ttl(Duration::from_secs(1))
        .register(registry.clone())
        .await
        .unwrap();
    eventually("both are discovered", || async {
        ids_of(&users.instances()) == ["kept", "quiet"]
    })
    .await;
    eventually_within("the lease expires", Duration::from_secs(10), || async {
        ids_of(&users.instances()) == ["kept"]
    })
    .await;
    assert_eq!(ids_of(&reg.list("users").await.unwrap().1), ["kept"]);
    // The lease is gone: a heartbeat says so, so the owner would register again.
    assert!(matches!(
        reg.heartbeat("users", "quiet").await,
        Err(RegistryError::NotFound { .. })
    ));

    // Revoke the kept instance's lease behind its back: its handle notices and re-registers.
    let mut client = reg.client().clone();
    let lease = client
        .get("/services/users/kept", None)
        .await
        .unwrap()
        .kvs()[0]
        .lease();
    client.lease_revoke(lease).await.unwrap();
    eventually("kept comes back on a new lease", || {
        let mut client = client.clone();
        async move {
            let got = client.get("/services/users/kept", None).await.unwrap();
            got.kvs().first().is_some_and(|kv| kv.lease() != lease)
        }
    })
    .await;
    eventually("discovery has it again", || async {
        ids_of(&users.instances()) == ["kept"]
    })
    .await;
    kept.deregister().await.unwrap();
}

#[tokio::test]
async fn a_watch_behind_a_compaction_lists_again_and_converges() {
    let etcd = Etcd::start().await;
    let reg = etcd.registry().await;
    reg.register(&spec("users", "a", 1, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut stream = reg.watch("users");
    let first = match next_update(&mut stream).await {
        Update::Reset { index, instances } => {
            assert_eq!(ids_of(&instances), ["a"]);
            index
        }
        other => panic!("{other:?}"),
    };
    // While the stream is not polled, history moves on and is compacted past the revision the
    // watch will start from.
    reg.register(&spec("users", "b", 2, Duration::from_secs(30)))
        .await
        .unwrap();
    reg.deregister("users", "a").await.unwrap();
    reg.register(&spec("users", "c", 3, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut client = reg.client().clone();
    let head = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(head, None).await.unwrap();

    match next_update(&mut stream).await {
        Update::Reset { index, instances } => {
            assert!(index >= u64::try_from(head).unwrap() && index > first);
            assert_eq!(ids_of(&instances), ["b", "c"], "converged");
        }
        other => panic!("expected a reset after compaction, got {other:?}"),
    }
    // And it keeps watching from there.
    reg.deregister("users", "b").await.unwrap();
    assert!(matches!(next_update(&mut stream).await, Update::Remove { id, .. } if id == "b"));
}

#[tokio::test]
async fn a_custom_prefix_keeps_services_apart() {
    let etcd = Etcd::start().await;
    let staging = etcd.registry().await.with_prefix("/staging");
    let prod = etcd.registry().await;
    staging
        .register(&spec("users", "s1", 1, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut client = prod.client().clone();
    assert_eq!(
        client
            .get("/staging/users/s1", None)
            .await
            .unwrap()
            .kvs()
            .len(),
        1
    );
    assert!(prod.list("users").await.unwrap().1.is_empty());
    assert_eq!(ids_of(&staging.list("users").await.unwrap().1), ["s1"]);
}

#[tokio::test]
async fn etcd_watch_services_follows_the_services_under_the_prefix() {
    let etcd = Etcd::start().await;
    let reg = etcd.registry().await;
    reg.register(&spec("users", "a", 1, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut sets = reg.watch_services();
    let mut next = async || -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(10), sets.next())
            .await
            .expect("a set within 10 s")
            .expect("stream open")
            .expect("no error")
            .services
            .into_iter()
            .collect()
    };
    assert_eq!(next().await, ["users"]);
    reg.register(&spec("orders", "o", 2, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(next().await, ["orders", "users"]);
    // A second instance of a known service changes nothing; its last one leaving does.
    reg.register(&spec("users", "b", 3, Duration::from_secs(30)))
        .await
        .unwrap();
    reg.deregister("users", "a").await.unwrap();
    reg.deregister("users", "b").await.unwrap();
    assert_eq!(next().await, ["orders"]);
}

/// Over TLS with client certificates (`--client-cert-auth`): a registry with the CA and a client
/// certificate registers and lists; one without a client certificate, or trusting another CA,
/// gets nothing through; `skip_verify` is refused as a configuration error.
#[tokio::test]
async fn etcd_over_mtls_works_with_the_ca_and_a_client_certificate_only() {
    let pki = TestPki::new("etcd-test-ca");
    let etcd = Etcd::start_with(Some(&pki)).await;
    assert!(etcd.endpoint.starts_with("https://"));
    let reg = etcd.registry().await;
    let a = spec("users", "a", 1, Duration::from_secs(30));
    reg.register(&a).await.unwrap();
    assert_eq!(reg.list("users").await.unwrap().1, vec![a.instance.clone()]);

    let full = etcd.tls.clone().unwrap();
    // No client certificate: the handshake (or the first call) fails.
    let anonymous = ClientTls {
        cert_file: None,
        key_file: None,
        ..full.clone()
    };
    assert!(
        etcd.list_with(&anonymous, "users").await.is_err(),
        "etcd served a client without a certificate"
    );
    // Another CA: the server's certificate is not trusted.
    let other = tempfile::tempdir().unwrap();
    let (files, _) = TestPki::new("other-ca").write(other.path(), "x", &["127.0.0.1"]);
    let untrusting = ClientTls {
        ca_file: Some(files.ca_file),
        ..full.clone()
    };
    assert!(
        etcd.list_with(&untrusting, "users").await.is_err(),
        "a server from another CA was trusted"
    );
    // skip_verify cannot be honoured by etcd's transport: a clear configuration error.
    let skip = ClientTls {
        skip_verify: true,
        ..full
    };
    match EtcdRegistry::connect_tls([etcd.endpoint.as_str()], &skip).await {
        Err(RegistryError::Config(ConfigError::Unsupported { system: "etcd", .. })) => {}
        other => panic!("skip_verify: {:?}", other.map(|_| ())),
    }
}
