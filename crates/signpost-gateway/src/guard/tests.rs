use std::time::Duration;

use super::*;
use crate::route::{default_name, BalancerKind, Protocol, RetrySpec, RouteSource};

fn configured(host: Option<&str>, prefix: &str) -> RouteSpec {
    RouteSpec {
        name: default_name(host, prefix),
        host: host.map(str::to_string),
        prefix: prefix.to_string(),
        service: "configured".to_string(),
        strip_prefix: false,
        balancer: BalancerKind::RoundRobin,
        timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry: RetrySpec {
            attempts: 1,
            statuses: vec![],
            timeouts: false,
            backoff: Duration::ZERO,
        },
        tag: None,
        protocol: Protocol::Http1,
        source: RouteSource::Config,
        compress: Vec::new(),
    }
}

fn prefixes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn without_metadata_prefixes_a_service_stays_under_its_own_name() {
    let policy = RoutePolicy::new(None, &[]);
    assert_eq!(policy.check("users", None, "/users"), Ok(()));
    assert_eq!(policy.check("users", None, "/users/v2"), Ok(()));
    assert_eq!(
        policy.check("users", Some("api.example.com"), "/users"),
        Ok(())
    );
    for outside in ["/", "/usersx", "/api/users", "/user", "/orders"] {
        let err = policy.check("users", None, outside).unwrap_err();
        assert_eq!(
            err,
            Refusal::OutsideOwnName {
                prefix: outside.to_string(),
                service: "users".to_string()
            }
        );
        assert!(err.to_string().contains("/users or below"), "{err}");
    }
}

#[test]
fn metadata_prefixes_bound_every_service() {
    let allowed = prefixes(&["/svc/", "/public"]);
    let policy = RoutePolicy::new(Some(&allowed), &[]);
    for ok in ["/svc/users", "/svc/a/b", "/svc/", "/public", "/public/x"] {
        assert_eq!(policy.check("users", None, ok), Ok(()), "{ok}");
    }
    for outside in ["/svc", "/users", "/", "/publicity", "/admin/svc/x"] {
        let err = policy.check("users", None, outside).unwrap_err();
        assert!(matches!(err, Refusal::OutsideAllowed { .. }), "{outside}");
        assert!(err.to_string().contains("/svc/, /public"), "{err}");
    }
    // The service's own name no longer counts once the operator lists prefixes.
    assert!(policy.check("users", None, "/users").is_err());
}

#[test]
fn a_configured_route_owns_its_subtree() {
    let allowed = prefixes(&["/api/"]);
    let policy = RoutePolicy::new(Some(&allowed), &[configured(None, "/api/users")]);
    for inside in ["/api/users", "/api/users/login", "/api/users/a/b"] {
        let err = policy.check("evil", None, inside).unwrap_err();
        assert_eq!(
            err,
            Refusal::Configured {
                host: None,
                prefix: inside.to_string(),
                route: "/api/users".to_string(),
                configured_host: None,
                configured_prefix: "/api/users".to_string(),
            }
        );
    }
    // A host route may not shadow it either.
    let err = policy
        .check("evil", Some("api.example.com"), "/api/users/login")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "host api.example.com prefix \"/api/users/login\" would take traffic of configured \
         route \"/api/users\" (prefix \"/api/users\"), which owns its whole subtree"
    );
    // Beside it and above it is fine (the longer configured prefix still wins there).
    assert_eq!(policy.check("ok", None, "/api/usersx"), Ok(()));
    assert_eq!(policy.check("ok", None, "/api/orders"), Ok(()));
    assert_eq!(policy.check("ok", None, "/api/"), Ok(()));
}

#[test]
fn a_configured_host_route_is_owned_on_the_hosts_it_matches() {
    let allowed = prefixes(&["/"]);
    let policy = RoutePolicy::new(
        Some(&allowed),
        &[configured(Some("*.example.com"), "/admin")],
    );
    for host in [
        None,
        Some("a.example.com"),
        Some("*.example.com"),
        Some("*.b.example.com"),
    ] {
        assert!(
            matches!(
                policy.check("evil", host, "/admin/x"),
                Err(Refusal::Configured { .. })
            ),
            "{host:?}"
        );
    }
    // Hosts the configured route never serves are free.
    assert_eq!(policy.check("ok", Some("example.com"), "/admin/x"), Ok(()));
    assert_eq!(policy.check("ok", Some("other.org"), "/admin"), Ok(()));
}

#[test]
fn a_catch_all_keeps_its_subtree_except_what_the_operator_delegated() {
    let allowed = prefixes(&["/svc/"]);
    let policy = RoutePolicy::new(
        Some(&allowed),
        &[configured(None, "/"), configured(None, "/svc/admin")],
    );
    assert_eq!(policy.check("users", None, "/svc/users"), Ok(()));
    // Delegated below "/", but "/svc/admin" is configured and not delegated below itself.
    assert!(matches!(
        policy.check("evil", None, "/svc/admin/x"),
        Err(Refusal::Configured { route, .. }) if route == "/svc/admin"
    ));
    // With only the service-name default nothing is delegated: "/" owns everything.
    let policy = RoutePolicy::new(None, &[configured(None, "/")]);
    assert!(matches!(
        policy.check("users", None, "/users"),
        Err(Refusal::Configured { .. })
    ));
    // A metadata prefix equal to a configured prefix delegates nothing.
    let allowed = prefixes(&["/svc/"]);
    let policy = RoutePolicy::new(Some(&allowed), &[configured(None, "/svc")]);
    assert!(policy.check("users", None, "/svc/users").is_err());
}

#[test]
fn host_overlap() {
    assert!(hosts_overlap(None, Some("a.com")));
    assert!(hosts_overlap(Some("a.com"), None));
    assert!(hosts_overlap(Some("a.com"), Some("a.com")));
    assert!(!hosts_overlap(Some("a.com"), Some("b.com")));
    assert!(hosts_overlap(Some("*.a.com"), Some("x.a.com")));
    assert!(hosts_overlap(Some("x.a.com"), Some("*.a.com")));
    assert!(!hosts_overlap(Some("*.a.com"), Some("a.com")));
    assert!(hosts_overlap(Some("*.a.com"), Some("*.x.a.com")));
    assert!(!hosts_overlap(Some("*.a.com"), Some("*.b.com")));
}
