//! Active checks: one HTTP GET, TCP connect or gRPC `grpc.health.v1.Health/Check`, mapped to a
//! [`CheckResult`].

use std::time::Duration;

use signpost_core::health::CheckResult;
use signpost_core::model::{self, CheckKind};
use signpost_core::CheckSpec;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One check task's prober: runs its spec's check and keeps what is worth reusing between runs.
pub struct Prober {
    /// The check this prober runs.
    spec: CheckSpec,
    /// The gRPC client, made on the first gRPC probe; its channel reconnects by itself, so one
    /// HTTP/2 connection serves every probe while the target stays up.
    grpc: Option<GrpcProbe>,
}

impl Prober {
    pub fn new(spec: CheckSpec) -> Self {
        Prober { spec, grpc: None }
    }

    /// Runs the check once, within its timeout.
    pub async fn run(&mut self, client: &reqwest::Client) -> CheckResult {
        let Some(CheckKind::Grpc(target)) = self.spec.kind() else {
            return run_once(client, &self.spec).await;
        };
        let timeout = self.spec.timeout().to_std();
        if self.grpc.is_none() {
            match GrpcProbe::new(target, timeout) {
                Ok(probe) => self.grpc = Some(probe),
                Err(e) => {
                    tracing::debug!(target, "grpc check failed: {e}");
                    return CheckResult::Critical;
                }
            }
        }
        match &mut self.grpc {
            Some(probe) => probe.check(target, timeout).await,
            None => CheckResult::Critical,
        }
    }
}

/// A `grpc.health.v1.Health` client for one target (plaintext HTTP/2; no TLS).
struct GrpcProbe {
    /// Client over a lazily connecting channel: connect failures surface as failed probes.
    client: HealthClient<Channel>,
    /// The `service` asked about; empty for the server's overall health.
    service: String,
}

impl GrpcProbe {
    fn new(target: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let (addr, service) = model::grpc_target(target);
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(GrpcProbe {
            client: HealthClient::new(channel),
            service: service.to_string(),
        })
    }

    /// One `Health/Check` call; `target` is only for the log.
    async fn check(&mut self, target: &str, timeout: Duration) -> CheckResult {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        // Tells the server the deadline too (the `grpc-timeout` header).
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, self.client.check(request)).await {
            Ok(Ok(resp)) => grpc_status(resp.into_inner().status),
            Ok(Err(status)) => {
                tracing::debug!(
                    target,
                    code = ?status.code(),
                    "grpc check failed: {}",
                    status.message()
                );
                CheckResult::Critical
            }
            Err(_) => {
                tracing::debug!(target, "grpc check timed out");
                CheckResult::Critical
            }
        }
    }
}

/// `SERVING` passing; `NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN` and anything else critical.
pub fn grpc_status(status: i32) -> CheckResult {
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => CheckResult::Passing,
        _ => CheckResult::Critical,
    }
}

/// Runs `spec`'s check once, within its timeout. A check that runs repeatedly should keep a
/// [`Prober`] instead, which reuses its gRPC connection.
pub async fn run(client: &reqwest::Client, spec: &CheckSpec) -> CheckResult {
    Prober::new(spec.clone()).run(client).await
}

/// An HTTP or TCP check, once, within its timeout.
async fn run_once(client: &reqwest::Client, spec: &CheckSpec) -> CheckResult {
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
        // TTL checks are never probed; gRPC checks run in [`Prober::run`].
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

    #[test]
    fn grpc_serving_statuses_map_to_statuses() {
        assert_eq!(
            grpc_status(ServingStatus::Serving as i32),
            CheckResult::Passing
        );
        for critical in [
            ServingStatus::Unknown as i32,
            ServingStatus::NotServing as i32,
            ServingStatus::ServiceUnknown as i32,
            42,
        ] {
            assert_eq!(grpc_status(critical), CheckResult::Critical, "{critical}");
        }
    }
}
