//! The request path as the gateway matches and forwards it. Pure: no IO, no clock.
//!
//! Prefix matching on the raw path lets `/public/../admin` or `/public/%2e%2e/admin` match
//! `/public` and then reach an upstream path outside it. So every request's path is first
//! brought into one canonical form ([`normalize`]), and that form is what routes match and
//! what the upstream receives:
//!
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, so `%2e`
//!   and `%2E` are dots; every other escape is kept, its hex digits in upper case;
//! - dot segments (`.`, `..`, decoded or not) are resolved (RFC 3986 §5.2.4);
//! - empty segments (`//`) are collapsed into one `/`; a trailing `/` is kept.
//!
//! Refused with `400 Bad Request` ([`PathError`]): an encoded slash or backslash (`%2f`,
//! `%5c`, any case) — an upstream may decode it into a separator the gateway did not match
//! on, so it is neither decoded nor passed on; a raw backslash (some servers treat it as `/`);
//! a `%` not followed by two hex digits; a `..` that would climb above the root; and a path
//! that does not start with `/` (`*`, the asterisk form of `OPTIONS`).

use std::borrow::Cow;

/// Why a request path is refused (answered with 400 and a JSON body naming the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2f` or `%5c`: a separator the upstream might decode.
    #[error("the path contains an encoded slash or backslash (%2F, %5C)")]
    EncodedSeparator,
    /// A raw `\`.
    #[error("the path contains a backslash")]
    Backslash,
    /// `%` without two hex digits after it.
    #[error("the path contains an invalid percent-escape")]
    InvalidEscape,
    /// More `..` segments than there are segments above them.
    #[error("the path climbs above the root ('..')")]
    AboveRoot,
    /// Not an absolute path.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// An absolute-form target whose authority has a port that is not a number below 65536
    /// (`http://a.example:99999*/`): it would be routed on its host but forwarded as sent.
    #[error("the request target's port is not a number below 65536")]
    BadPort,
}

/// The canonical form of `path` (see the module doc): borrowed when it is already canonical,
/// which is the common case and costs one scan.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut trailing = false;
    for raw in path[1..].split('/') {
        let segment = decode_segment(raw)?;
        trailing = false;
        match segment.as_str() {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` (starting with `/`) needs no change: no `%`, no `\`, no empty segment
/// except a trailing one, no dot segment.
fn is_canonical(path: &str) -> bool {
    if path.bytes().any(|b| b == b'%' || b == b'\\') {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "" if segments.peek().is_none() => {}
            "" | "." | ".." => return false,
            _ => {}
        }
    }
    true
}

/// One segment with unreserved escapes decoded and the others upper-cased.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(PathError::InvalidEscape);
                };
                let byte = u8::try_from(hi * 16 + lo).expect("two hex digits fit a byte");
                match byte {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                        out.push(char::from(b));
                    }
                    b => {
                        out.push('%');
                        out.push_str(&format!("{b:02X}"));
                    }
                }
                i += 3;
            }
            _ => {
                // Not `%` or `\`: copy up to the next byte that is (keeps UTF-8 whole).
                let next = bytes[i..]
                    .iter()
                    .position(|&b| b == b'%' || b == b'\\')
                    .map_or(bytes.len(), |p| i + p);
                out.push_str(&raw[i..next]);
                i = next;
            }
        }
    }
    Ok(out)
}

/// Rewrites `req`'s URI to its canonical path (query untouched), and gives it the host it is
/// routed on: the authority of an absolute-form URI (`GET http://a.example/ HTTP/1.1`, and
/// HTTP/2's `:authority`) wins over the `Host` header and replaces it, so the gateway routes
/// and forwards on the same host. Userinfo in the authority is dropped.
pub fn canonicalize<B>(req: &mut http::Request<B>) -> Result<(), PathError> {
    if let Some(authority) = req.uri().authority() {
        let host = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host)| host);
        let after_ip6 = host.rsplit_once(']').map_or(host, |(_, rest)| rest);
        if after_ip6.contains(':') && authority.port_u16().is_none() {
            return Err(PathError::BadPort);
        }
        if let Ok(value) = http::HeaderValue::from_str(host) {
            if req.headers().get(http::header::HOST) != Some(&value) {
                req.headers_mut().insert(http::header::HOST, value);
            }
        }
    }
    let Cow::Owned(path) = normalize(req.uri().path())? else {
        return Ok(());
    };
    let joined = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    // The canonical form is made of characters the original was valid with.
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(joined).map_err(|_| PathError::InvalidEscape)?);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| PathError::InvalidEscape)?;
    Ok(())
}

#[cfg(test)]
mod tests;
