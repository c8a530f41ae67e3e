use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::*;

const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Br, Encoding::Gzip];

fn pick(offered: &[Encoding], accept: &str) -> Option<Encoding> {
    negotiate(offered, Some(&HeaderValue::from_str(accept).unwrap()))
}

#[test]
fn negotiation_follows_q_values_then_the_routes_order() {
    assert_eq!(pick(&ALL, "gzip, deflate, br, zstd"), Some(Encoding::Zstd));
    assert_eq!(pick(&ALL, "gzip, br"), Some(Encoding::Br));
    assert_eq!(
        pick(&[Encoding::Gzip, Encoding::Br], "gzip, br"),
        Some(Encoding::Gzip)
    );
    assert_eq!(
        pick(&ALL, "gzip;q=1.0, br;q=0.5, zstd;q=0.1"),
        Some(Encoding::Gzip)
    );
    assert_eq!(pick(&ALL, "GZIP"), Some(Encoding::Gzip));
    assert_eq!(pick(&ALL, "x-gzip"), Some(Encoding::Gzip));
    assert_eq!(pick(&ALL, "br;q=0, gzip"), Some(Encoding::Gzip));
    // `*` stands for every coding not named.
    assert_eq!(pick(&ALL, "*"), Some(Encoding::Zstd));
    assert_eq!(pick(&ALL, "zstd;q=0, *;q=0.5"), Some(Encoding::Br));
    assert_eq!(pick(&ALL, "*;q=0"), None);
    // Nothing the route offers, or identity only.
    assert_eq!(pick(&ALL, "identity"), None);
    assert_eq!(pick(&ALL, "deflate"), None);
    assert_eq!(pick(&ALL, ""), None);
    assert_eq!(pick(&[Encoding::Gzip], "zstd, br"), None);
    assert_eq!(negotiate(&ALL, None), None);
}

fn response(headers: &[(&http::HeaderName, &str)], body: &'static [u8]) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    for (k, v) in headers {
        r.headers_mut()
            .append(*k, HeaderValue::from_str(v).unwrap());
    }
    r
}

fn accepted(accept: &str) -> Accepted {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
    Accepted::read(&ALL, &h)
}

static BIG: [u8; 4096] = [b'a'; 4096];

#[test]
fn compresses_and_fixes_the_headers() {
    let r = response(
        &[
            (&CONTENT_TYPE, "application/json"),
            (&CONTENT_LENGTH, "4096"),
            (&ETAG, "\"v1\""),
        ],
        &BIG,
    );
    let r = apply(&accepted("gzip"), &Method::GET, r);
    assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
    assert_eq!(r.headers()[VARY], "Accept-Encoding");
    assert_eq!(r.headers()[ETAG], "W/\"v1\"");
    assert!(r.headers().get(CONTENT_LENGTH).is_none());
}

#[test]
fn leaves_alone_what_must_not_be_compressed() {
    let gzip = accepted("gzip");
    let untouched = |r: Response<ProxyBody>, method: Method, a: &Accepted| {
        let r = apply(a, &method, r);
        r.headers().get(CONTENT_ENCODING).is_none() || r.headers()[CONTENT_ENCODING] != "gzip"
    };
    // Small bodies (by Content-Length or by the body's exact size).
    assert!(untouched(
        response(&[(&CONTENT_LENGTH, "1023")], &BIG[..1023]),
        Method::GET,
        &gzip
    ));
    assert!(untouched(response(&[], b"{}"), Method::GET, &gzip));
    // Already encoded, already compressed types, streamed events.
    assert!(untouched(
        response(&[(&CONTENT_ENCODING, "br")], &BIG),
        Method::GET,
        &gzip
    ));
    for ty in [
        "image/png",
        "video/mp4",
        "application/zip",
        "application/gzip",
        "font/woff2",
        "text/event-stream; charset=utf-8",
    ] {
        assert!(
            untouched(response(&[(&CONTENT_TYPE, ty)], &BIG), Method::GET, &gzip),
            "{ty}"
        );
    }
    // no-transform, on either side.
    assert!(untouched(
        response(&[(&CACHE_CONTROL, "public, no-transform")], &BIG),
        Method::GET,
        &gzip
    ));
    let mut h = HeaderMap::new();
    h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-transform"));
    assert!(untouched(
        response(&[], &BIG),
        Method::GET,
        &Accepted::read(&ALL, &h)
    ));
    // HEAD, 204, 304.
    assert!(untouched(response(&[], &BIG), Method::HEAD, &gzip));
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        let mut r = response(&[], &BIG);
        *r.status_mut() = status;
        assert!(untouched(r, Method::GET, &gzip));
    }
    // A route without compression does not even add Vary.
    let r = apply(
        &Accepted::read(&[], &HeaderMap::new()),
        &Method::GET,
        response(&[], &BIG),
    );
    assert!(r.headers().get(VARY).is_none());
    // SVG is text.
    assert!(!untouched(
        response(&[(&CONTENT_TYPE, "image/svg+xml")], &BIG),
        Method::GET,
        &gzip
    ));
}

#[test]
fn identity_keeps_the_body_but_varies() {
    let r = apply(
        &accepted("identity"),
        &Method::GET,
        response(&[(&VARY, "Origin")], &BIG),
    );
    assert!(r.headers().get(CONTENT_ENCODING).is_none());
    let vary: Vec<_> = r.headers().get_all(VARY).iter().collect();
    assert_eq!(vary, ["Origin", "Accept-Encoding"]);
}
