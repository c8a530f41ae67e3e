use proptest::prelude::*;

use super::*;
use crate::route::prefix_matches;

fn ok(path: &str) -> String {
    normalize(path).unwrap().into_owned()
}

#[test]
fn canonical_paths_are_borrowed() {
    for path in ["/", "/a", "/a/", "/a/b.c/d", "/x..y/.z", "/é"] {
        assert!(
            matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
            "{path}"
        );
    }
}

#[test]
fn dot_segments_are_resolved() {
    assert_eq!(ok("/public/../admin"), "/admin");
    assert_eq!(ok("/public/./a"), "/public/a");
    assert_eq!(ok("/a/b/.."), "/a/");
    assert_eq!(ok("/a/b/."), "/a/b/");
    assert_eq!(ok("/a/.."), "/");
}

#[test]
fn encoded_dots_are_dots() {
    assert_eq!(ok("/public/%2e%2e/admin"), "/admin");
    assert_eq!(ok("/public/%2E%2e/admin"), "/admin");
    assert_eq!(ok("/public/.%2E/admin"), "/admin");
    assert_eq!(ok("/public/%2e/a"), "/public/a");
    assert_eq!(ok("/a/%2e%2e%2e"), "/a/...");
}

#[test]
fn unreserved_escapes_are_decoded_and_others_kept_in_upper_case() {
    assert_eq!(ok("/%41%7a%2D%5f%7E%30"), "/Az-_~0");
    assert_eq!(ok("/a%20b/%c3%a9"), "/a%20b/%C3%A9");
    assert_eq!(ok("/100%25"), "/100%25");
}

#[test]
fn duplicate_slashes_are_collapsed() {
    assert_eq!(ok("//admin"), "/admin");
    assert_eq!(ok("/public//a///b//"), "/public/a/b/");
}

#[test]
fn separators_in_disguise_and_bad_escapes_are_refused() {
    for (path, error) in [
        ("/public/..%2fadmin", PathError::EncodedSeparator),
        ("/public%2F..%2Fadmin", PathError::EncodedSeparator),
        ("/a%5cb", PathError::EncodedSeparator),
        ("/a%5Cb", PathError::EncodedSeparator),
        ("/a\\b", PathError::Backslash),
        ("/a%", PathError::InvalidEscape),
        ("/a%4", PathError::InvalidEscape),
        ("/a%zz", PathError::InvalidEscape),
        ("/..", PathError::AboveRoot),
        ("/a/../..", PathError::AboveRoot),
        ("/%2e%2e/etc", PathError::AboveRoot),
        ("*", PathError::NotAbsolute),
    ] {
        assert_eq!(normalize(path), Err(error), "{path}");
    }
}

#[test]
fn canonicalize_rewrites_the_uri_and_keeps_the_query() {
    let mut req = http::Request::get("/public/%2e%2e/admin//x?a=%2e%2e&b=1")
        .body(())
        .unwrap();
    canonicalize(&mut req).unwrap();
    assert_eq!(req.uri(), "/admin/x?a=%2e%2e&b=1");
}

#[test]
fn the_absolute_form_authority_becomes_the_host() {
    let mut req = http::Request::get("http://user@internal.example:8080/a")
        .header("host", "public.example")
        .body(())
        .unwrap();
    canonicalize(&mut req).unwrap();
    assert_eq!(req.headers()["host"], "internal.example:8080");
    assert_eq!(
        crate::route::request_host(req.uri(), req.headers()),
        Some("internal.example")
    );
}

/// Found by `headers::tests::fuzz`: `http://a.example:99999*` was routed on `a.example` but
/// forwarded with `Host: a.example:99999*`. A port that is not a number is refused.
#[test]
fn an_absolute_form_target_with_a_bad_port_is_refused() {
    for target in [
        "http://a.example:99999*",
        "http://a.example:x/",
        "http://[::1]:70000/",
    ] {
        let mut req = http::Request::get(target).body(()).unwrap();
        assert_eq!(canonicalize(&mut req), Err(PathError::BadPort), "{target}");
    }
    for target in [
        "http://a.example:80/",
        "http://[::1]/",
        "http://[::1]:443/",
        "http://a.example/",
    ] {
        let mut req = http::Request::get(target).body(()).unwrap();
        assert_eq!(canonicalize(&mut req), Ok(()), "{target}");
    }
}

/// What a lenient upstream makes of a path: every escape decoded (once), `\` taken as `/`,
/// dot segments resolved, empty segments dropped. `None`: it climbs above the root.
fn lenient_upstream(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                decoded.push(u8::try_from(h * 16 + l).unwrap());
                i += 3;
            }
            (b'\\', _, _) => {
                decoded.push(b'/');
                i += 1;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&decoded);
    let mut out: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// Path pieces that exercise every rule, and ordinary ones.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just(".%2e".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("\\".to_string()),
        Just("%".to_string()),
        Just("%2".to_string()),
        Just("%25".to_string()),
        Just("%252e".to_string()),
        Just("%41".to_string()),
        Just("public".to_string()),
        Just("admin".to_string()),
        "[a-zA-Z0-9._~%-]{0,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..10).prop_map(|pieces| format!("/{}", pieces.join("/")))
}

proptest! {
    // CI runs the default case count; a long run: PROPTEST_CASES=1000000 (see the README).
    #[test]
    fn normalized_paths_are_canonical(path in path()) {
        if let Ok(n) = normalize(&path) {
            prop_assert!(n.starts_with('/'));
            prop_assert!(!n.contains("//"), "{path} -> {n}");
            for segment in n.split('/') {
                prop_assert!(segment != "." && segment != "..", "{path} -> {n}");
            }
            prop_assert!(!n.contains('\\'));
            let lower = n.to_ascii_lowercase();
            prop_assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"));
            // Canonical means a fixed point.
            let again = normalize(&n).map(Cow::into_owned);
            prop_assert_eq!(again, Ok(n.to_string()), "{}", path);
        }
    }

    #[test]
    fn a_path_that_matches_a_prefix_once_normalized_stays_under_it_upstream(
        prefix in prop::collection::vec("[a-z]{1,4}", 1..3),
        rest in path(),
    ) {
        let prefix = format!("/{}", prefix.join("/"));
        let path = format!("{prefix}{rest}");
        if let Ok(n) = normalize(&path) {
            if prefix_matches(&prefix, &n) {
                // However leniently the upstream decodes what it is sent, it sees a path under
                // the prefix the gateway matched.
                let seen = lenient_upstream(&n);
                prop_assert!(
                    seen.as_deref().is_some_and(|s| prefix_matches(&prefix, s)),
                    "{path} -> {n} -> {seen:?}"
                );
            }
        }
    }
}
