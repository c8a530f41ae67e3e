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
