//! Active checks: one HTTP GET or TCP connect, mapped to a [`CheckResult`].

use signpost_core::health::CheckResult;
use signpost_core::model::CheckKind;
use signpost_core::CheckSpec;
use tokio::net::TcpStream;

/// Runs `spec`'s check once, within its timeout.
pub async fn run(client: &reqwest::Client, spec: &CheckSpec) -> CheckResult {
    let timeout = spec.timeout().to_std();
    match spec.kind() {
        Some(CheckKind::Http(url)) => match client.get(url).timeout(timeout).send().await {
            Ok(resp) => http_status(resp.status().as_u16()),
            Err(e) => {
                tracing::debug!(url, "http check failed: {e}");
                CheckResult::Critical
            }
        },
        Some(CheckKind::Tcp(target)) => {
            match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
                Ok(Ok(_)) => CheckResult::Passing,
                Ok(Err(e)) => {
                    tracing::debug!(target, "tcp check failed: {e}");
                    CheckResult::Critical
                }
                Err(_) => CheckResult::Critical,
            }
        }
        // TTL checks are never probed; gRPC checks are refused at registration.
        Some(CheckKind::Ttl(_)) | Some(CheckKind::Grpc(_)) | None => CheckResult::Critical,
    }
}

/// 2xx passing, 429 (too many requests) warning, anything else critical.
pub fn http_status(code: u16) -> CheckResult {
    match code {
        200..=299 => CheckResult::Passing,
        429 => CheckResult::Warning,
        _ => CheckResult::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_codes_map_to_statuses() {
        assert_eq!(http_status(200), CheckResult::Passing);
        assert_eq!(http_status(204), CheckResult::Passing);
        assert_eq!(http_status(429), CheckResult::Warning);
        assert_eq!(http_status(301), CheckResult::Critical);
        assert_eq!(http_status(500), CheckResult::Critical);
        assert_eq!(http_status(503), CheckResult::Critical);
    }
}
