use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};

use super::*;

fn spec(host: Option<&str>, prefix: &str, service: &str) -> RouteSpec {
    RouteSpec {
        name: default_name(host, prefix),
        host: host.map(str::to_string),
        prefix: prefix.to_string(),
        service: service.to_string(),
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

fn table() -> RouteTable<RouteSpec> {
    RouteTable::new(vec![
        spec(None, "/", "root"),
        spec(None, "/api", "api"),
        spec(None, "/api/users", "users"),
        spec(Some("admin.example.com"), "/api", "admin-api"),
        spec(Some("*.example.com"), "/api", "any-example"),
        spec(Some("admin.example.com"), "/", "admin-root"),
    ])
}

fn find<'t>(t: &'t RouteTable<RouteSpec>, host: Option<&str>, path: &str) -> Option<&'t str> {
    t.find(host, path).map(|s| s.service.as_str())
}

#[test]
fn prefixes_match_whole_segments() {
    assert!(prefix_matches("/api", "/api"));
    assert!(prefix_matches("/api", "/api/"));
    assert!(prefix_matches("/api", "/api/x/y"));
    assert!(!prefix_matches("/api", "/apix"));
    assert!(!prefix_matches("/api", "/ap"));
    assert!(prefix_matches("/", "/anything"));
    assert!(prefix_matches("/api/", "/api/x"));
    assert!(!prefix_matches("/api/", "/api"));
}

#[test]
fn the_longest_prefix_wins() {
    let t = table();
    assert_eq!(find(&t, None, "/api/users/7"), Some("users"));
    assert_eq!(find(&t, None, "/api/users"), Some("users"));
    assert_eq!(find(&t, None, "/api/usersx"), Some("api"));
    assert_eq!(find(&t, None, "/api/orders"), Some("api"));
    assert_eq!(find(&t, None, "/other"), Some("root"));
}

#[test]
fn host_routes_beat_host_less_routes_of_the_same_prefix() {
    let t = table();
    assert_eq!(
        find(&t, Some("admin.example.com"), "/api/x"),
        Some("admin-api")
    );
    assert_eq!(
        find(&t, Some("ADMIN.example.COM"), "/api/x"),
        Some("admin-api")
    );
    assert_eq!(
        find(&t, Some("www.example.com"), "/api/x"),
        Some("any-example")
    );
    assert_eq!(find(&t, Some("example.com"), "/api/x"), Some("api"));
    assert_eq!(find(&t, Some("other.org"), "/api/x"), Some("api"));
    // A longer host-less prefix still beats a shorter host route.
    assert_eq!(
        find(&t, Some("admin.example.com"), "/api/users/1"),
        Some("users")
    );
    assert_eq!(
        find(&t, Some("admin.example.com"), "/x"),
        Some("admin-root")
    );
    assert_eq!(find(&t, None, "/x"), Some("root"));
}

#[test]
fn no_route_without_a_match() {
    let t = RouteTable::new(vec![spec(None, "/api", "api")]);
    assert_eq!(find(&t, None, "/"), None);
    assert_eq!(find(&t, None, "/apis"), None);
    let t = RouteTable::new(vec![spec(Some("a.example"), "/", "a")]);
    assert_eq!(find(&t, None, "/"), None);
    assert_eq!(find(&t, Some("b.example"), "/"), None);
}

#[test]
fn wildcards_need_a_subdomain() {
    assert!(host_matches("*.example.com", "a.example.com"));
    assert!(host_matches("*.example.com", "a.b.example.com"));
    assert!(!host_matches("*.example.com", "example.com"));
    assert!(!host_matches("*.example.com", "aexample.com"));
}

#[test]
fn stripping_keeps_a_leading_slash() {
    assert_eq!(strip_prefix("/api", "/api/users/1"), "/users/1");
    assert_eq!(strip_prefix("/api", "/api"), "/");
    assert_eq!(strip_prefix("/api", "/api/"), "/");
    assert_eq!(strip_prefix("/", "/x"), "/x");
    assert_eq!(strip_prefix("/api/", "/api/x"), "/x");
}

#[test]
fn the_request_host_comes_from_the_uri_or_the_host_header() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("Example.com:8080"));
    let origin: Uri = "/x".parse().unwrap();
    assert_eq!(request_host(&origin, &headers), Some("Example.com"));
    let absolute: Uri = "http://other.org:81/x".parse().unwrap();
    assert_eq!(request_host(&absolute, &headers), Some("other.org"));
    assert_eq!(request_host(&origin, &HeaderMap::new()), None);
    assert_eq!(strip_port("[::1]:80"), "::1");
    assert_eq!(strip_port("localhost"), "localhost");
}
