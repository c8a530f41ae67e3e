//! TLS: the Signpost and Consul registries reach `https://` agents, checking them against a CA
//! file, and present a client certificate to agents that require one (mutual TLS). Against an
//! in-process agent serving HTTPS with certificates made at run time.

mod common;

use std::time::Duration;

use futures::StreamExt;
use signpost_client::registry::consul::{ConsulOptions, ConsulRegistry};
use signpost_client::registry::signpost::{SignpostOptions, SignpostRegistry};
use signpost_client::registry::{
    Cause, ClientTls, ConfigError, RegistrationSpec, Registry, RegistryError,
};
use signpost_client::{Instance, Update};
use signpost_tls::testing::{Files, TestPki};

use common::TestAgent;

/// An agent serving HTTPS with `server`'s certificate for 127.0.0.1; with
/// `verify_incoming`, only to clients presenting a certificate the same CA signed.
async fn https_agent(server: &Files, verify_incoming: bool) -> (TestAgent, String) {
    let files = server.clone();
    let agent = TestAgent::start_with(move |config| {
        config.tls.cert_file = Some(files.cert_file);
        config.tls.key_file = Some(files.key_file);
        config.tls.ca_file = Some(files.ca_file);
        config.tls.verify_incoming = verify_incoming;
        if !verify_incoming {
            // Members then need a listener of their own; a single test agent never uses it.
            config.raft.addr = Some(([127, 0, 0, 1], common::closed_port()).into());
        }
    })
    .await;
    let base = format!("https://127.0.0.1:{}", agent.port());
    (agent, base)
}

fn tls(ca: &Files, identity: Option<&Files>) -> ClientTls {
    ClientTls {
        ca_file: Some(ca.ca_file.clone()),
        cert_file: identity.map(|f| f.cert_file.clone()),
        key_file: identity.map(|f| f.key_file.clone()),
        skip_verify: false,
    }
}

fn signpost(base: &str, tls: ClientTls) -> SignpostRegistry {
    let options = SignpostOptions {
        tls,
        ..SignpostOptions::default()
    };
    SignpostRegistry::with_options([base], options).unwrap()
}

fn spec(id: &str) -> RegistrationSpec {
    RegistrationSpec {
        instance: Instance {
            id: id.into(),
            service: "web".into(),
            address: "10.0.0.9".into(),
            port: 80,
            tags: vec![],
            metadata: Default::default(),
            weight: 1,
            state: Default::default(),
            maintenance: None,
        },
        ttl: Duration::from_secs(30),
        deregister_after: None,
        check: None,
    }
}

/// Asserts the call never reached the agent: a failed handshake is an unreachable agent.
#[track_caller]
fn assert_handshake_failed<T: std::fmt::Debug>(result: Result<T, RegistryError>) {
    match result {
        Err(RegistryError::Unavailable {
            cause: Cause::Transport { .. },
            ..
        }) => {}
        other => panic!("expected a failed handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn signpost_registry_over_https_checks_the_agent_against_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (server, _) = pki.write(dir.path(), "server", &["127.0.0.1"]);
    let (agent, base) = https_agent(&server, false).await;

    let registry = signpost(&base, tls(&server, None));
    registry.register(&spec("web-1")).await.unwrap();
    let (_, list) = registry.list("web").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "web-1");
    // The SSE watch runs over TLS too.
    let mut watch = registry.watch("web");
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(Update::Reset { instances, .. }))) => assert_eq!(instances.len(), 1),
        other => panic!("expected a reset, got {other:?}"),
    }

    // Another CA's client does not trust the agent.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = TestPki::new("another CA").write(other_dir.path(), "x", &["127.0.0.1"]);
    assert_handshake_failed(signpost(&base, tls(&other, None)).list("web").await);
    // Plain HTTP to the HTTPS listener gets no answer.
    let plain = base.replace("https://", "http://");
    assert!(SignpostRegistry::new([plain])
        .unwrap()
        .list("web")
        .await
        .is_err());
    agent.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("signpost test CA");
    let (server, _) = pki.write(dir.path(), "server", &["127.0.0.1"]);
    let (client, _) = pki.write(dir.path(), "client", &["client"]);
    let (agent, base) = https_agent(&server, true).await;

    // Without a client certificate the agent refuses the connection.
    assert_handshake_failed(signpost(&base, tls(&server, None)).list("web").await);

    let registry = signpost(&base, tls(&server, Some(&client)));
    registry.register(&spec("web-1")).await.unwrap();
    assert_eq!(registry.list("web").await.unwrap().1.len(), 1);

    // The Consul registry, on the agent's Consul face, the same way.
    let options = ConsulOptions {
        tls: tls(&server, Some(&client)),
        ..ConsulOptions::default()
    };
    let consul = ConsulRegistry::with_options([base.clone()], options).unwrap();
    let (_, list) = consul.list("web").await.unwrap();
    assert_eq!(list[0].id, "web-1");
    let options = ConsulOptions {
        tls: tls(&server, None),
        ..ConsulOptions::default()
    };
    let refused = ConsulRegistry::with_options([base], options).unwrap();
    assert_handshake_failed(refused.list("web").await);
    agent.shutdown().await;
}

#[test]
fn unusable_tls_files_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = TestPki::new("ca").write(dir.path(), "c", &["127.0.0.1"]);
    let bad = [
        // A CA file that is not there.
        ClientTls {
            ca_file: Some(dir.path().join("missing.pem")),
            ..ClientTls::default()
        },
        // A certificate without its key.
        ClientTls {
            ca_file: Some(files.ca_file.clone()),
            cert_file: Some(files.cert_file.clone()),
            ..ClientTls::default()
        },
    ];
    for tls in bad {
        let options = SignpostOptions {
            tls: tls.clone(),
            ..SignpostOptions::default()
        };
        match SignpostRegistry::with_options(["https://127.0.0.1:1"], options) {
            Err(RegistryError::Config(ConfigError::Tls { system, .. })) => {
                assert_eq!(system, "Signpost")
            }
            other => panic!("{tls:?}: expected a TLS config error, got {other:?}"),
        }
        let options = ConsulOptions {
            tls,
            ..ConsulOptions::default()
        };
        assert!(matches!(
            ConsulRegistry::with_options(["https://127.0.0.1:1"], options),
            Err(RegistryError::Config(ConfigError::Tls {
                system: "Consul",
                ..
            }))
        ));
    }
}
