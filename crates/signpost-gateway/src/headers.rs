//! Header rewriting: hop-by-hop headers out, `X-Forwarded-*` and `X-Request-Id` in. Pure
//! functions over a `HeaderMap`, unit-tested in `headers/tests.rs`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-real-ip`.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard `proxy-connection`. `te` and `upgrade` get special treatment.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What the proxy knows about the client connection, computed once per connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The peer's IP.
    pub ip: IpAddr,
    /// The peer's IP as a header value (appended to `X-Forwarded-For`).
    pub ip_value: HeaderValue,
    /// `http`, or `https` on a TLS listener.
    pub proto: HeaderValue,
}

impl ClientInfo {
    /// The client at `ip`, speaking plain HTTP.
    pub fn new(ip: IpAddr) -> Self {
        ClientInfo {
            ip,
            ip_value: HeaderValue::try_from(ip.to_string()).expect("an IP is a valid header"),
            proto: HeaderValue::from_static("http"),
        }
    }

    /// The client at `ip`, over TLS.
    pub fn new_tls(ip: IpAddr) -> Self {
        ClientInfo {
            proto: HeaderValue::from_static("https"),
            ..ClientInfo::new(ip)
        }
    }
}

/// Whether the request asks to switch protocols (WebSocket and the like): an `Upgrade` header
/// and `upgrade` among the `Connection` tokens.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

/// The comma-separated tokens of a header value.
fn tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers: the fixed list, `upgrade` (unless `upgrade` is true: then
/// `Connection: upgrade` and `Upgrade` are kept), `te` unless it is exactly `trailers` (gRPC
/// needs that one end to end), and every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of these: one pass over the (few) headers to find out, instead
    // of a hash lookup per name.
    let any = headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(name) || name == header::UPGRADE || name == header::TE);
    if !any {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(tokens)
            .filter(|t| !(upgrade && t.eq_ignore_ascii_case("upgrade")))
            .map(str::to_ascii_lowercase)
            .collect();
        for name in named {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    if let Some(te) = headers.get(header::TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            headers.remove(header::TE);
        }
    }
}

/// Which of the headers the gateway rewrites a message carries, found in one pass over its
/// names (cheaper than a hash lookup per name, since most messages carry none of them).
#[derive(Debug, Default, Clone, Copy)]
struct Present {
    /// A hop-by-hop header, `upgrade` or `te`.
    hop_by_hop: bool,
    /// `expect`.
    expect: bool,
    /// `x-forwarded-for`.
    forwarded_for: bool,
    /// `x-forwarded-proto`.
    forwarded_proto: bool,
    /// `x-forwarded-host`.
    forwarded_host: bool,
    /// `forwarded` (RFC 7239).
    forwarded: bool,
    /// `x-real-ip`.
    real_ip: bool,
    /// `x-request-id`.
    request_id: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Self {
        let mut present = Present::default();
        for name in headers.keys() {
            match name.as_str() {
                "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "te" => present.hop_by_hop = true,
                "expect" => present.expect = true,
                "x-forwarded-for" => present.forwarded_for = true,
                "x-forwarded-proto" => present.forwarded_proto = true,
                "x-forwarded-host" => present.forwarded_host = true,
                "forwarded" => present.forwarded = true,
                "x-real-ip" => present.real_ip = true,
                "x-request-id" => present.request_id = true,
                _ => {}
            }
        }
        present
    }
}

/// Rewrites a request's headers for the upstream: hop-by-hop out (see [`remove_hop_by_hop`]),
/// `Expect` out (the gateway answers `100 Continue` itself), the forwarding headers, and an
/// `X-Request-Id` kept or made. Returns the request id.
///
/// The forwarding headers depend on whether the client is trusted (`trust_forwarded`, the
/// config's `trust_forwarded_headers`): a trusted client (a proxy in front of the gateway) has
/// the peer appended to its `X-Forwarded-For`, and keeps its `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, `Forwarded` and `X-Real-IP` (the missing ones among the first two and
/// `X-Real-IP` are set). An untrusted client's values are never passed on: `X-Forwarded-For`
/// and `X-Real-IP` are replaced by the peer's address, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` by what the gateway saw, and `Forwarded` is removed.
pub fn prepare_request(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    host: Option<&HeaderValue>,
    trust_forwarded: bool,
    upgrade: bool,
    ids: &RequestIds,
) -> HeaderValue {
    let present = Present::scan(headers);
    if present.hop_by_hop {
        remove_hop_by_hop(headers, upgrade);
    }
    if present.expect {
        headers.remove(header::EXPECT);
    }
    // Room for the five headers added below, so the map grows at most once.
    headers.reserve(5);

    // Names the scan found absent are appended (no search for a value to replace).
    let forwarded_for = if trust_forwarded && present.forwarded_for {
        let mut joined = Vec::with_capacity(64);
        for v in headers.get_all(&X_FORWARDED_FOR) {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(client.ip_value.as_bytes());
        HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.ip_value.clone())
    } else {
        client.ip_value.clone()
    };
    set(
        headers,
        &X_FORWARDED_FOR,
        forwarded_for,
        present.forwarded_for,
    );

    if present.forwarded && !trust_forwarded {
        headers.remove(header::FORWARDED);
    }
    if !(trust_forwarded && present.real_ip) {
        set(
            headers,
            &X_REAL_IP,
            client.ip_value.clone(),
            present.real_ip,
        );
    }

    if !(trust_forwarded && present.forwarded_proto) {
        set(
            headers,
            &X_FORWARDED_PROTO,
            client.proto.clone(),
            present.forwarded_proto,
        );
    }
    if !(trust_forwarded && present.forwarded_host) {
        match host {
            Some(h) => set(
                headers,
                &X_FORWARDED_HOST,
                h.clone(),
                present.forwarded_host,
            ),
            None if present.forwarded_host => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
    }

    if present.request_id {
        if let Some(id) = headers.get(&X_REQUEST_ID).filter(|id| valid_request_id(id)) {
            // The one id logged is the one sent: further values (found by the fuzz) go.
            let id = id.clone();
            headers.insert(X_REQUEST_ID.clone(), id.clone());
            return id;
        }
    }
    let id = ids.next();
    set(headers, &X_REQUEST_ID, id.clone(), present.request_id);
    id
}

/// Sets `name` to `value`: replaces its values if it is `present`, else appends.
fn set(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue, present: bool) {
    if present {
        headers.insert(name.clone(), value);
    } else {
        headers.append(name.clone(), value);
    }
}

/// A client-supplied request id is kept if it is 1 to 200 visible ASCII characters.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 200 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Rewrites an upstream response's headers for the client: hop-by-hop out, except the
/// `Upgrade` handshake of a `101 Switching Protocols`, and the request id added unless the
/// upstream set one.
pub fn prepare_response(
    headers: &mut HeaderMap,
    switching_protocols: bool,
    request_id: &HeaderValue,
) {
    let present = Present::scan(headers);
    if present.hop_by_hop {
        remove_hop_by_hop(headers, switching_protocols);
    }
    if !present.request_id {
        headers.append(X_REQUEST_ID.clone(), request_id.clone());
    }
}

/// Makes request ids: 32 hex digits, a random per-process half and a counter, unique without
/// coordination and cheap (no formatting machinery, one allocation for the header value).
#[derive(Debug)]
pub struct RequestIds {
    /// Random, per process.
    prefix: u64,
    /// Bumped per id.
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            prefix: rand::random(),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The next id.
    pub fn next(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        for (i, word) in [self.prefix, n].into_iter().enumerate() {
            for j in 0..16 {
                let nibble = (word >> (60 - 4 * j)) & 0xf;
                buf[i * 16 + j] = HEX[nibble as usize];
            }
        }
        HeaderValue::from_bytes(&buf).expect("hex digits are a valid header")
    }
}

#[cfg(test)]
mod tests;
