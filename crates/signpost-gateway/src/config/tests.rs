use std::time::Duration;

use super::*;
use crate::route::{BalancerKind, HashOn, Protocol};

fn invalid(toml: &str) -> Vec<String> {
    let config = GatewayConfig::from_toml(toml).expect("parses");
    match config.validate() {
        Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn an_empty_file_is_the_defaults() {
    let config = GatewayConfig::from_toml("").unwrap();
    assert_eq!(config, GatewayConfig::default());
    config.validate().unwrap();
    assert_eq!(config.listen.port(), 8080);
    assert_eq!(config.admin_listen.port(), 9901);
    assert!(config.registry.routes_from_metadata);
}

#[test]
fn the_readme_example_parses_and_resolves() {
    let text = include_str!("../../tests/fixtures/gateway.toml");
    let config = GatewayConfig::from_toml(text).unwrap();
    config.validate().unwrap();
    assert_eq!(config.routes.len(), 3);
    let users = config.route_spec(&config.routes[0]).unwrap();
    assert_eq!(users.prefix, "/api/users");
    assert!(users.strip_prefix);
    assert_eq!(users.balancer, BalancerKind::PeakEwma);
    assert_eq!(users.timeout, Duration::from_secs(5));
    assert_eq!(users.retry.attempts, 3);
    assert_eq!(users.tag.as_deref(), Some("v2"));
    use crate::compress::Encoding;
    assert_eq!(
        users.compress,
        [Encoding::Zstd, Encoding::Br, Encoding::Gzip]
    );
    let grpc = config.route_spec(&config.routes[1]).unwrap();
    assert_eq!(grpc.protocol, Protocol::H2c);
    assert_eq!(grpc.host.as_deref(), Some("grpc.example.com"));
    assert_eq!(
        grpc.balancer,
        BalancerKind::ConsistentHash(HashOn::Header(http::HeaderName::from_static("x-user-id")))
    );
    // Unset keys come from [defaults].
    let web = config.route_spec(&config.routes[2]).unwrap();
    assert_eq!(web.name, "web");
    assert_eq!(web.timeout, Duration::from_secs(10));
    assert_eq!(web.retry.attempts, 2);
    assert_eq!(web.balancer, BalancerKind::RoundRobin);
}

#[test]
fn unknown_keys_are_named() {
    let err =
        GatewayConfig::from_toml("[[route]]\nprefix = \"/\"\nservice = \"a\"\nstrip = true\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("strip"), "{err}");
    let err = GatewayConfig::from_toml("listen = \"nowhere\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn every_problem_is_reported() {
    let problems = invalid(
        r#"
        workers = 5000
        [registry]
        addrs = []
        [[route]]
        prefix = "api"
        service = "Users"
        balancer = "fastest"
        [[route]]
        prefix = "/a"
        service = "a"
        protocol = "h3"
        hash_on = "path"
        [route.retry]
        attempts = 0
        statuses = [404]
        [[route]]
        prefix = "/b"
        host = "x y"
        service = "b"
        timeout = "0s"
        "#,
    );
    let all = problems.join("\n");
    for needle in [
        "registry.addrs",
        "workers",
        "route[0]: prefix must start with '/'",
        "route[0]: service must be",
        "route[0]: unknown balancer",
        "route[1]: protocol must be",
        "route[1]: hash_on applies",
        "route[1]: retry: attempts",
        "route[2]: host must be",
        "route[2]: timeout must be above 0",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn duplicate_routes_are_refused() {
    let problems = invalid(
        r#"
        [[route]]
        prefix = "/a"
        service = "a"
        [[route]]
        prefix = "/a"
        service = "b"
        [[route]]
        prefix = "/a"
        host = "h.example"
        service = "c"
        "#,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("route[1]"), "{problems:?}");
}

#[test]
fn retry_statuses_must_be_5xx_and_prefixes_plain() {
    let problems = invalid(
        r#"
        [defaults.retry]
        statuses = [429]
        [[route]]
        prefix = "/a/../b"
        service = "a"
        "#,
    );
    let all = problems.join("\n");
    assert!(
        all.contains("defaults.retry: statuses must be 5xx"),
        "{all}"
    );
    assert!(all.contains("plain path"), "{all}");
}

#[test]
fn the_whole_message_names_each_problem_on_its_own_line() {
    let config = GatewayConfig::from_toml(
        r#"
        workers = 5000
        [defaults]
        protocol = "h3"
        timeout = "0s"
        [[route]]
        prefix = "/a"
        service = "a"
        tag = ""
        "#,
    )
    .unwrap();
    let err = config.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid gateway configuration:\n  \
         - workers: at most 1024 (0 = one per core), got 5000\n  \
         - defaults.protocol: protocol must be http1, h2c or https, got \"h3\"; defaults.timeout must be above 0\n  \
         - route[0]: protocol must be http1, h2c or https, got \"h3\"\n  \
         - route[0]: timeout must be above 0\n  \
         - route[0]: tag must not be empty"
    );
    match err {
        ConfigError::Invalid(problems) => {
            assert_eq!(problems[0], Problem::Workers(5000));
            assert_eq!(
                problems[4],
                Problem::Route {
                    index: 0,
                    problem: ValueError::EmptyTag
                }
            );
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn registry_guard_keys_parse_and_are_checked() {
    let config = GatewayConfig::from_toml(
        "[registry]\nmetadata_prefixes = [\"/svc/\"]\ndeny_cidrs = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(
        config.registry.metadata_prefixes,
        Some(vec!["/svc/".to_string()])
    );
    assert_eq!(
        config.registry.deny_cidrs,
        vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
    );
    // The default: link-local denied, each service under its own name.
    let config = GatewayConfig::default();
    assert_eq!(config.registry.metadata_prefixes, None);
    assert_eq!(
        config.registry.deny_cidrs,
        signpost_core::cidr::default_deny()
    );
    let problems = invalid("[registry]\nmetadata_prefixes = [\"/ok\", \"svc\"]\n");
    assert_eq!(
        problems,
        ["registry.metadata_prefixes[1]: prefix must start with '/', got \"svc\""]
    );
    let err = GatewayConfig::from_toml("[registry]\ndeny_cidrs = [\"169.254.0.0\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("deny_cidrs"), "{err}");
}

#[test]
fn tls_keys_parse_and_https_is_a_protocol() {
    let config = GatewayConfig::from_toml(
        "[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n\
         [upstream_tls]\nca_file = \"/ca.pem\"\n\
         [[route]]\nprefix = \"/s\"\nservice = \"s\"\nprotocol = \"https\"\n",
    )
    .unwrap();
    config.validate().unwrap();
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, PathBuf::from("/c.pem"));
    assert_eq!(config.upstream_tls.ca_file, Some(PathBuf::from("/ca.pem")));
    let spec = config.route_spec(&config.routes[0]).unwrap();
    assert_eq!(spec.protocol, Protocol::Https);
    // A [tls] table needs both files.
    let err = GatewayConfig::from_toml("[tls]\ncert_file = \"/c.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_file"), "{err}");
    let problems = invalid("[[route]]\nprefix = \"/s\"\nservice = \"s\"\nprotocol = \"tls\"\n");
    assert_eq!(
        problems,
        ["route[0]: protocol must be http1, h2c or https, got \"tls\""]
    );
}

#[test]
fn limits_have_defaults_and_zero_durations_are_refused() {
    let config = GatewayConfig::from_toml("").unwrap();
    assert_eq!(config.limits.header_timeout, Dur::from_secs(10));
    assert_eq!(config.limits.idle_timeout, Dur::from_secs(60));
    assert_eq!(config.limits.max_upgraded, 10_000);
    assert_eq!(config.limits.upgrade_idle_timeout, Dur::from_secs(300));
    let problems = invalid(
        "[limits]\nheader_timeout = \"0s\"\nidle_timeout = \"0s\"\nupgrade_idle_timeout = \"0s\"\n",
    );
    assert_eq!(
        problems,
        [
            "limits.header_timeout must be above 0",
            "limits.idle_timeout must be above 0",
            "limits.upgrade_idle_timeout must be above 0",
        ]
    );
    let config = GatewayConfig::from_toml("[limits]\nmax_upgraded = 0\n").unwrap();
    config.validate().unwrap();
}

#[test]
fn auto_routes_are_off_by_default_and_checked_when_on() {
    let config = GatewayConfig::from_toml("").unwrap();
    assert_eq!(config.auto_routes.prefix, None);
    assert_eq!(config.auto_routes.max_services, 1000);
    let config = GatewayConfig::from_toml("[auto_routes]\nprefix = \"/svc\"\n").unwrap();
    config.validate().unwrap();
    assert_eq!(
        invalid("[auto_routes]\nprefix = \"svc\"\nmax_services = 0\n"),
        [
            "auto_routes.prefix must start with '/', got \"svc\"",
            "auto_routes.max_services must be above 0",
        ]
    );
}
