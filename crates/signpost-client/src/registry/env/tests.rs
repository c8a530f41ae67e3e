use std::time::Duration;

use futures::StreamExt;

use super::*;

/// What Kubernetes injects for `user-service` (ClusterIP 10.0.0.3, ports 8080 and 9090) and
/// for `orders`, plus noise.
fn kubernetes() -> EnvRegistry {
    EnvRegistry::from_vars([
        ("USER_SERVICE_SERVICE_HOST", "10.0.0.3"),
        ("USER_SERVICE_SERVICE_PORT", "8080"),
        ("USER_SERVICE_SERVICE_PORT_HTTP", "8080"),
        ("USER_SERVICE_PORT", "tcp://10.0.0.3:8080"),
        ("USER_SERVICE_PORT_8080_TCP", "tcp://10.0.0.3:8080"),
        ("USER_SERVICE_PORT_8080_TCP_ADDR", "10.0.0.3"),
        ("USER_SERVICE_PORT_8080_TCP_PORT", "8080"),
        ("USER_SERVICE_PORT_9090_TCP", "tcp://10.0.0.3:9090"),
        ("ORDERS_SERVICE_HOST", "fd00::7"),
        ("ORDERS_SERVICE_PORT", "443"),
        ("PATH", "/usr/bin"),
    ])
}

fn authorities(instances: &[Instance]) -> Vec<String> {
    instances.iter().map(Instance::authority).collect()
}

#[test]
fn service_host_and_port_make_one_instance() {
    let env = kubernetes();
    let users = env.instances("user-service");
    assert_eq!(authorities(&users), ["10.0.0.3:8080"]);
    assert_eq!(users[0].service, "user-service");
    assert_eq!(users[0].id, "10.0.0.3:8080");
    assert_eq!(users[0].metadata["source"], "environment");
    assert_eq!(authorities(&env.instances("orders")), ["[fd00::7]:443"]);
}

#[test]
fn tcp_url_forms_are_used_without_service_host() {
    let env = EnvRegistry::from_vars([
        ("LEGACY_PORT", "tcp://172.17.0.5:6379"),
        ("LEGACY_PORT_6379_TCP", "tcp://172.17.0.5:6379"),
        ("LEGACY_PORT_6380_TCP", "tcp://172.17.0.6:6380"),
        ("LEGACY_PORT_53_UDP", "udp://172.17.0.5:53"),
        ("LEGACY_PORT_6379_TCP_ADDR", "172.17.0.5"),
        ("LEGACY_PORT_X_TCP", "tcp://172.17.0.9:1"),
        ("LEGACY_PORT_7000_TCP", "tcp://[fd00::9]:7000"),
        ("LEGACY_PORT_7001_TCP", "not a url"),
    ]);
    assert_eq!(
        authorities(&env.instances("legacy")),
        ["172.17.0.5:6379", "172.17.0.6:6380", "[fd00::9]:7000"]
    );
}

#[test]
fn unknown_or_broken_services_have_no_instances() {
    let env = EnvRegistry::from_vars([
        ("BROKEN_SERVICE_HOST", "10.0.0.1"),
        ("BROKEN_SERVICE_PORT", "http"),
        ("ZERO_SERVICE_HOST", "10.0.0.1"),
        ("ZERO_SERVICE_PORT", "0"),
    ]);
    assert!(env.instances("missing").is_empty());
    assert!(env.instances("broken").is_empty());
    assert!(env.instances("zero").is_empty());
    // A prefix of another service's name is another service.
    let env = kubernetes();
    assert!(env.instances("user").is_empty());
}

#[test]
fn services_are_listed_by_their_service_host() {
    assert_eq!(
        kubernetes().services().into_iter().collect::<Vec<_>>(),
        ["orders", "user-service"]
    );
}

#[tokio::test]
async fn watch_resets_once_then_stays_pending() {
    let env = kubernetes();
    let mut watch = env.watch("user-service");
    match watch.next().await.unwrap().unwrap() {
        Update::Reset { index, instances } => {
            assert_eq!(index, 1);
            assert_eq!(authorities(&instances), ["10.0.0.3:8080"]);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    let next = tokio::time::timeout(Duration::from_millis(50), watch.next()).await;
    assert!(next.is_err(), "the watch stays pending, got {next:?}");
    assert_eq!(
        env.list("user-service").await.unwrap(),
        (1, env.instances("user-service"))
    );
    let mut services = env.watch_services();
    let set = services.next().await.unwrap().unwrap();
    assert!(set.services.contains("orders"));
}

#[tokio::test]
async fn writes_are_unsupported() {
    let env = kubernetes();
    let spec = RegistrationSpec {
        instance: env.instances("user-service").remove(0),
        ttl: Duration::from_secs(10),
        deregister_after: None,
        check: None,
    };
    let err = env.register(&spec).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Unsupported {
                operation: "register",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does not support register"),
        "{err}"
    );
    for err in [
        env.deregister("user-service", "x").await.unwrap_err(),
        env.heartbeat("user-service", "x").await.unwrap_err(),
    ] {
        assert!(matches!(err, RegistryError::Unsupported { .. }), "{err:?}");
    }
}
