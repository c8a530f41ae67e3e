//! `[registry]` token and TLS: the gateway presents its token to the agents on every call, and
//! reaches `https://` agents with its CA and client certificate (mutual TLS).

use std::time::Duration;

use signpost_client::registry::signpost::{SignpostOptions, SignpostRegistry};
use signpost_client::registry::{ClientTls, RegistrationSpec, Registry};
use signpost_client::Instance;
use signpost_gateway::GatewayConfig;
use signpost_tls::testing::TestPki;

use crate::common::{eventually, respond, Backend, TestAgent, TestGateway};

#[tokio::test]
async fn the_gateway_sends_its_registry_token() {
    // A fake agent that refuses everything, recording what it is sent.
    let agent = Backend::start(false, |_req| async {
        respond(
            403,
            r#"{"error":"permission denied: token lacks service:read on \"web\""}"#,
        )
    })
    .await;
    let mut config = GatewayConfig::from_toml(
        r#"
        [registry]
        token = "g4teway"
        [[route]]
        prefix = "/"
        service = "web"
        "#,
    )
    .unwrap();
    config.registry.addrs = vec![format!("http://{}", agent.addr)];
    assert!(
        !format!("{config:?}").contains("g4teway"),
        "the token is never shown"
    );
    let gw = TestGateway::start_with(config).await;
    eventually("the gateway asks the agent", || async {
        !agent.requests().is_empty()
    })
    .await;
    let seen = agent.requests();
    assert!(
        seen.iter()
            .all(|s| s.headers.get("x-consul-token").map(|v| v.as_bytes())
                == Some(b"g4teway".as_slice())),
        "{seen:?}"
    );
    // Refused, the route has no instance.
    assert_eq!(gw.get("/x").await.0, 503);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_gateway_follows_an_agent_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("gateway test CA");
    let (server, _) = pki.write(dir.path(), "agent", &["127.0.0.1"]);
    let (client, _) = pki.write(dir.path(), "gateway", &["gateway"]);
    let files = server.clone();
    let agent = TestAgent::start_with(move |config| {
        config.tls.cert_file = Some(files.cert_file);
        config.tls.key_file = Some(files.key_file);
        config.tls.ca_file = Some(files.ca_file);
        config.tls.verify_incoming = true;
    })
    .await;
    let web = Backend::echo("web").await;
    // The test agent's own client speaks plain HTTP; register through the SDK over mTLS.
    let base = format!("https://127.0.0.1:{}", agent.port());
    let options = SignpostOptions {
        tls: ClientTls {
            ca_file: Some(server.ca_file.clone()),
            cert_file: Some(client.cert_file.clone()),
            key_file: Some(client.key_file.clone()),
            skip_verify: false,
        },
        ..SignpostOptions::default()
    };
    let sdk = SignpostRegistry::with_options([base.clone()], options).unwrap();
    let spec = RegistrationSpec {
        instance: Instance {
            id: "web-1".into(),
            service: "web".into(),
            address: "127.0.0.1".into(),
            port: web.port(),
            tags: vec![],
            metadata: Default::default(),
            weight: 1,
            state: Default::default(),
            maintenance: None,
        },
        ttl: Duration::from_secs(300),
        deregister_after: None,
        check: None,
    };
    sdk.register(&spec).await.unwrap();

    let mut config = GatewayConfig::from_toml(&format!(
        r#"
        [registry]
        ca_file = {:?}
        cert_file = {:?}
        key_file = {:?}
        [[route]]
        prefix = "/"
        service = "web"
        "#,
        server.ca_file, client.cert_file, client.key_file
    ))
    .unwrap();
    config.registry.addrs = vec![base];
    let gw = TestGateway::start_with(config).await;
    gw.wait_upstreams("/", 1).await;
    let (status, body) = gw.get("/hello").await;
    assert_eq!(status, 200);
    assert_eq!(body["backend"], "web");
    gw.shutdown().await;
    agent.shutdown().await;
}

#[test]
fn a_registry_certificate_needs_its_key() {
    let config = GatewayConfig::from_toml(
        r#"
        [registry]
        cert_file = "/etc/gw/cert.pem"
        "#,
    )
    .unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("registry.cert_file and registry.key_file"),
        "{err}"
    );
}
