//! The last word on client errors: every 4xx the API answers carries a JSON body
//! (`{"error": …}`) or none, including the ones axum's extractors make themselves (a path segment that
//! is not UTF-8, a query string that does not parse), which are plain text. The web UI's pages
//! (`/ui`) are left as they are.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use signpost_api::ErrorBody;

/// The most of a plain-text error body kept as the message.
const MAX_MESSAGE: usize = 4096;

/// Rewrites a 4xx answer with a plain-text body into a JSON one whose `error` is that text
/// (an empty body, which some Consul answers have on purpose, is left empty).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let skip = req.uri().path().starts_with("/ui") || req.method() == Method::HEAD;
    let response = next.run(req).await;
    let status = response.status();
    if skip || !status.is_client_error() {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .unwrap_or_default();
    let error = String::from_utf8_lossy(&bytes).trim().to_string();
    if error.is_empty() {
        // An empty answer is deliberate (Consul's 404 for a missing key): left empty.
        return Response::from_parts(parts, Body::empty());
    }
    let json = serde_json::to_vec(&ErrorBody { error, field: None })
        .unwrap_or_else(|_| br#"{"error":"client error"}"#.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(json))
}
