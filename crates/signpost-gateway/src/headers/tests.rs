use std::net::{IpAddr, Ipv4Addr};

use http::header::{HeaderMap, HeaderValue};

use super::*;

fn client() -> ClientInfo {
    ClientInfo::new(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))
}

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
    let mut h = map(&[
        ("connection", "keep-alive, X-Secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic x"),
        ("transfer-encoding", "chunked"),
        ("trailer", "x-checksum"),
        ("upgrade", "h2c"),
        ("te", "gzip"),
        ("accept", "*/*"),
    ]);
    remove_hop_by_hop(&mut h, false);
    let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["accept"]);
}

#[test]
fn te_trailers_survives_for_grpc() {
    let mut h = map(&[("te", "trailers")]);
    remove_hop_by_hop(&mut h, false);
    assert_eq!(h["te"], "trailers");
}

#[test]
fn an_upgrade_keeps_its_handshake() {
    let mut h = map(&[
        ("connection", "Upgrade, keep-alive"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "abc"),
    ]);
    assert!(is_upgrade(&h));
    remove_hop_by_hop(&mut h, true);
    assert_eq!(h["connection"], "upgrade");
    assert_eq!(h["upgrade"], "websocket");
    assert_eq!(h["sec-websocket-key"], "abc");
    assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    assert!(!is_upgrade(&map(&[("connection", "upgrade")])));
}

#[test]
fn forwarded_headers_are_added() {
    let ids = RequestIds::default();
    let mut h = map(&[("host", "api.example.com"), ("expect", "100-continue")]);
    let host = h.get("host").cloned();
    let id = prepare_request(&mut h, &client(), host.as_ref(), false, false, &ids);
    assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(h["x-request-id"], id);
    assert_eq!(id.len(), 32);
    assert!(!h.contains_key("expect"));
    assert_eq!(h["host"], "api.example.com");
}

#[test]
fn x_forwarded_for_is_appended_to_only_for_a_trusted_client() {
    let ids = RequestIds::default();
    let sent = [
        ("x-forwarded-for", "192.0.2.1"),
        ("x-forwarded-for", "198.51.100.2, 203.0.113.3"),
    ];
    let mut h = map(&sent);
    prepare_request(&mut h, &client(), None, true, false, &ids);
    assert_eq!(
        h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
        ["192.0.2.1, 198.51.100.2, 203.0.113.3, 10.1.2.3"]
    );
    // Untrusted: the client's claims are dropped, only the peer is named.
    let mut h = map(&sent);
    prepare_request(&mut h, &client(), None, false, false, &ids);
    assert_eq!(
        h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
        ["10.1.2.3"]
    );
}

#[test]
fn forwarded_and_x_real_ip_are_replaced_unless_trusted() {
    let ids = RequestIds::default();
    let sent = [
        ("forwarded", "for=192.0.2.60;proto=https"),
        ("x-real-ip", "192.0.2.61"),
        ("x-real-ip", "192.0.2.62"),
    ];
    let mut h = map(&sent);
    prepare_request(&mut h, &client(), None, false, false, &ids);
    assert!(!h.contains_key("forwarded"), "{h:?}");
    assert_eq!(
        h.get_all("x-real-ip").iter().collect::<Vec<_>>(),
        ["10.1.2.3"]
    );
    let mut h = map(&sent);
    prepare_request(&mut h, &client(), None, true, false, &ids);
    assert_eq!(h["forwarded"], "for=192.0.2.60;proto=https");
    assert_eq!(h.get_all("x-real-ip").iter().count(), 2);
    // Absent: the gateway sets X-Real-IP, never invents Forwarded.
    let mut h = map(&[]);
    prepare_request(&mut h, &client(), None, false, false, &ids);
    assert_eq!(h["x-real-ip"], "10.1.2.3");
    assert!(!h.contains_key("forwarded"));
}

#[test]
fn client_forwarded_proto_and_host_are_overwritten_unless_trusted() {
    let ids = RequestIds::default();
    let host = HeaderValue::from_static("gw.local");
    let sent = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example.com"),
    ];
    let mut h = map(&sent);
    prepare_request(&mut h, &client(), Some(&host), false, false, &ids);
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "gw.local");
    let mut h = map(&sent);
    prepare_request(&mut h, &client(), Some(&host), true, false, &ids);
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "public.example.com");
}

#[test]
fn a_client_request_id_is_kept_and_a_bad_one_replaced() {
    let ids = RequestIds::default();
    let mut h = map(&[("x-request-id", "abc-123")]);
    assert_eq!(
        prepare_request(&mut h, &client(), None, false, false, &ids),
        "abc-123"
    );
    assert_eq!(h["x-request-id"], "abc-123");
    let mut h = map(&[("x-request-id", "has space")]);
    let id = prepare_request(&mut h, &client(), None, false, false, &ids);
    assert_ne!(id, "has space");
    assert_eq!(h["x-request-id"], id);
}

#[test]
fn request_ids_are_unique() {
    let ids = RequestIds::default();
    let a = ids.next();
    let b = ids.next();
    assert_ne!(a, b);
    assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
    assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
}

#[test]
fn a_response_gets_the_request_id_unless_the_upstream_set_one() {
    let id = HeaderValue::from_static("abc");
    let mut h = map(&[("content-type", "text/plain"), ("connection", "close")]);
    prepare_response(&mut h, false, &id);
    assert_eq!(h["x-request-id"], "abc");
    assert!(!h.contains_key("connection"));

    let mut h = map(&[("x-request-id", "upstream-1")]);
    prepare_response(&mut h, false, &id);
    assert_eq!(h.get_all("x-request-id").iter().count(), 1);
    assert_eq!(h["x-request-id"], "upstream-1");
}

#[test]
fn expect_is_removed_and_nothing_else_is_touched_without_hop_by_hop_headers() {
    let ids = RequestIds::default();
    let mut h = map(&[("expect", "100-continue"), ("accept", "*/*")]);
    prepare_request(&mut h, &client(), None, false, false, &ids);
    assert!(!h.contains_key("expect"));
    assert_eq!(h["accept"], "*/*");
    assert!(!h.contains_key("x-forwarded-host"));
}

/// Found by `fuzz::request_heads_are_refused_with_400_or_forwarded_clean`: a second
/// `X-Request-Id` went upstream next to the one the gateway logged.
#[test]
fn only_the_request_id_kept_goes_upstream() {
    let ids = RequestIds::default();
    let mut h = map(&[("x-request-id", "req-1"), ("x-request-id", "req-2")]);
    let id = prepare_request(&mut h, &client(), None, false, false, &ids);
    assert_eq!(id, "req-1");
    assert_eq!(
        h.get_all("x-request-id").iter().collect::<Vec<_>>(),
        ["req-1"]
    );
}

mod fuzz {
    //! The request-side pipeline the proxy runs before forwarding (canonical path and host,
    //! then header rewriting) on random absolute-form URIs and random `Host`, `X-Forwarded-*`,
    //! `Forwarded`, `X-Real-IP`, `Upgrade`, `Connection` and hop-by-hop headers. CI runs the
    //! default case count; a long run: `PROPTEST_CASES=1000000 cargo test --release -p
    //! signpost-gateway --lib headers::tests::fuzz` (see the README).

    use proptest::prelude::*;

    use super::*;
    use crate::error::ProxyError;
    use crate::route::{self, path};

    /// A header value: printable text, the tokens the rewriting reads, or any bytes a header
    /// value may hold (tab, space, visible ASCII, obs-text).
    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "", "upgrade", "Upgrade, keep-alive", "close, x-secret", "websocket", "trailers",
                "gzip", "192.0.2.1", "192.0.2.1, 198.51.100.2", "for=192.0.2.60;proto=https",
                "https", "api.example.com", "api.example.com:8080", "[::1]:80", "x-forwarded-for",
                "te, transfer-encoding", "h2c", "chunked", "req-42",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            2 => "[ -~]{0,24}".prop_map(String::into_bytes),
            1 => prop::collection::vec(
                prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff],
                0..24
            ),
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::sample::select(vec![
                "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
                "x-real-ip", "upgrade", "connection", "keep-alive", "proxy-connection",
                "proxy-authorization", "proxy-authenticate", "te", "trailer",
                "transfer-encoding", "expect", "x-request-id", "x-secret",
            ])
            .prop_map(String::from),
            1 => "[a-z][a-z0-9-]{0,10}",
        ]
    }

    /// A request target: origin-form paths and absolute-form URIs with odd authorities.
    fn target() -> impl Strategy<Value = String> {
        let path = prop_oneof![
            prop::sample::select(vec![
                "/",
                "/a/../b",
                "/%2e%2e/x",
                "//x",
                "/a%2Fb",
                "/a\\b",
                "/..",
                "/%zz",
                "/a?b=c",
                "",
                "*",
            ])
            .prop_map(String::from),
            "/[a-zA-Z0-9%./_~-]{0,20}",
        ];
        let authority = prop::sample::select(vec![
            "",
            "a.example",
            "a.example:8080",
            "user:pw@a.example",
            "[::1]:80",
            "10.0.0.1",
            "a.example:99999",
            "@",
            ":80",
        ]);
        (
            prop::option::of((prop::sample::select(vec!["http", "https", "ws"]), authority)),
            path,
        )
            .prop_map(|(absolute, path)| match absolute {
                Some((scheme, authority)) => format!("{scheme}://{authority}{path}"),
                None => path,
            })
    }

    fn config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(64);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn request_heads_are_refused_with_400_or_forwarded_clean(
            target in target(),
            sent in prop::collection::vec((name(), value()), 0..8),
            trust in any::<bool>(),
            tls in any::<bool>(),
        ) {
            // What hyper would refuse to parse never reaches the proxy.
            let Ok(uri) = target.parse::<http::Uri>() else { return Ok(()) };
            let mut req = http::Request::get(uri).body(()).unwrap();
            for (name, value) in &sent {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    req.headers_mut().append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
                }
            }
            let upgrade = is_upgrade(req.headers());
            let named: Vec<String> = req
                .headers()
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(tokens)
                .map(str::to_ascii_lowercase)
                .collect();
            if let Err(reason) = path::canonicalize(&mut req) {
                // Refused before any route: a 400 with a JSON body.
                let response = ProxyError::BadPath { reason }.to_response(None);
                prop_assert_eq!(response.status(), 400);
                return Ok(());
            }
            // Routed on the host it will be forwarded with.
            let routed = route::request_host(req.uri(), req.headers()).map(str::to_string);
            if req.uri().authority().is_some() {
                let forwarded = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
                prop_assert_eq!(forwarded.map(route::strip_port), routed.as_deref(), "{}", req.uri());
            }
            prop_assert!(req.uri().path().starts_with('/'), "{}", req.uri());
            let (mut parts, ()) = req.into_parts();
            let host = parts.headers.get(header::HOST).cloned();
            let client = if tls { ClientInfo::new_tls(client().ip) } else { client() };
            let ids = RequestIds::default();
            let id = prepare_request(&mut parts.headers, &client, host.as_ref(), trust, upgrade, &ids);
            let h = &parts.headers;
            let all = |n: &str| h.get_all(n).iter().map(|v| v.as_bytes().to_vec()).collect::<Vec<_>>();
            // Hop-by-hop headers, and the ones Connection named, are gone.
            for gone in ["keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "trailer", "transfer-encoding", "expect"] {
                prop_assert!(!h.contains_key(gone), "{gone} kept: {h:?}");
            }
            for gone in &named {
                let kept_for_upgrade = upgrade && (gone == "upgrade" || gone == "connection");
                let set_by_us = ["x-forwarded-for", "x-real-ip", "x-forwarded-proto", "x-forwarded-host", "x-request-id"].contains(&gone.as_str());
                let trailers = gone == "te";
                if !kept_for_upgrade && !set_by_us && !trailers {
                    prop_assert!(!h.contains_key(gone.as_str()), "{gone} named by Connection, kept: {h:?}");
                }
            }
            if upgrade {
                prop_assert_eq!(all("connection"), vec![b"upgrade".to_vec()]);
                prop_assert!(h.contains_key(header::UPGRADE));
            } else {
                prop_assert!(!h.contains_key(header::CONNECTION) && !h.contains_key(header::UPGRADE), "{h:?}");
            }
            if let Some(te) = h.get(header::TE) {
                prop_assert!(te.as_bytes().eq_ignore_ascii_case(b"trailers"));
            }
            // What the client claims counts only when it is trusted.
            let ip = client.ip_value.as_bytes().to_vec();
            let xff = all("x-forwarded-for");
            prop_assert_eq!(xff.len(), 1);
            if trust {
                prop_assert!(xff[0].ends_with(&ip), "{xff:?}");
            } else {
                prop_assert_eq!(&xff[0], &ip);
                prop_assert!(!h.contains_key(header::FORWARDED));
                prop_assert_eq!(all("x-real-ip"), vec![ip.clone()]);
                prop_assert_eq!(all("x-forwarded-proto"), vec![client.proto.as_bytes().to_vec()]);
                match &host {
                    Some(host) => prop_assert_eq!(all("x-forwarded-host"), vec![host.as_bytes().to_vec()]),
                    None => prop_assert!(!h.contains_key("x-forwarded-host")),
                }
            }
            // One request id, sent upstream and logged.
            prop_assert_eq!(all("x-request-id"), vec![id.as_bytes().to_vec()]);
            prop_assert!(valid_request_id(&id));
        }
    }
}
