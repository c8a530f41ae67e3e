//! Active checks: one HTTP GET, TCP connect or gRPC `grpc.health.v1.Health/Check`, mapped to a
//! [`CheckResult`]. Every probe first holds its target to `[health] check_deny_cidrs` /
//! `check_allow_cidrs` ([`super::targets`]): DNS may have changed since the registration was
//! admitted. HTTP checks resolve names through [`Clients`]' guarded resolver, so the address
//! checked is the address connected to.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use signpost_tls::rustls::pki_types::ServerName;
use signpost_tls::rustls::ClientConfig;
use signpost_tls::{ClientTls, TlsError};

use signpost_core::cidr::AddressPolicy;
use signpost_core::health::CheckResult;
use signpost_core::model::{self, CheckKind};
use signpost_core::CheckSpec;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::targets::{self, TargetRefused};

/// The clients every check shares: HTTP(S) clients that verify the checked service's
/// certificate (against `[health] ca_file`, else the system's roots) or, for `tls_skip_verify`
/// checks, accept any; the same two TLS configurations for gRPC checks over TLS.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Verifies certificates; resolves names through [`Guarded`]; no proxy, no redirects.
    http: reqwest::Client,
    /// Like `http`, accepting any certificate.
    http_skip_verify: reqwest::Client,
    /// gRPC over TLS, verifying.
    grpc_tls: Arc<ClientConfig>,
    /// gRPC over TLS, accepting any certificate.
    grpc_tls_skip_verify: Arc<ClientConfig>,
}

impl Clients {
    /// Clients whose name resolution refuses what `policy` refuses, trusting `ca_file` (the
    /// system's roots without one; with neither, every HTTPS check fails verification).
    pub fn new(policy: &AddressPolicy, ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let verify = ClientTls {
            ca_file: ca_file.map(Path::to_path_buf),
            ..ClientTls::default()
        };
        let verifying = match verify.client_config() {
            Err(TlsError::NoRoots) => {
                tracing::warn!(
                    "no system roots and no [health] ca_file: HTTPS checks cannot verify any certificate"
                );
                ClientConfig::builder_with_provider(signpost_tls::provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(signpost_tls::rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }
            other => other?,
        };
        let skipping = ClientTls {
            skip_verify: true,
            ..ClientTls::default()
        }
        .client_config()?;
        let guarded = Arc::new(Guarded(Arc::new(policy.clone())));
        let http = |tls: &ClientConfig| {
            let mut tls = tls.clone();
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(guarded.clone())
                .tls_backend_preconfigured(tls)
                .build()
                .expect("a reqwest client with a rustls configuration builds")
        };
        let grpc = |tls: &ClientConfig| {
            let mut tls = tls.clone();
            tls.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(tls)
        };
        Ok(Clients {
            http: http(&verifying),
            http_skip_verify: http(&skipping),
            grpc_tls: grpc(&verifying),
            grpc_tls_skip_verify: grpc(&skipping),
        })
    }
}

/// A resolver that fails a name resolving into an address the policy refuses (any of its
/// addresses: the client could dial any of them).
struct Guarded(Arc<AddressPolicy>);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            policy
                .check_all(addrs.iter().map(SocketAddr::ip))
                .map_err(|refusal| {
                    Box::new(TargetRefused {
                        target: host.clone(),
                        host: Some(host.clone()),
                        refusal,
                    })
                })?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// One check task's prober: runs its spec's check and keeps what is worth reusing between runs.
pub struct Prober {
    /// The check this prober runs.
    spec: CheckSpec,
    /// The addresses it may reach.
    policy: AddressPolicy,
    /// The refusal last logged (each change is logged once, not every probe).
    refused: Option<TargetRefused>,
    /// The gRPC client, made on the first gRPC probe; its channel reconnects by itself, so one
    /// HTTP/2 connection serves every probe while the target stays up.
    grpc: Option<GrpcProbe>,
}

impl Prober {
    /// A prober of `spec` held to `policy`.
    pub fn new(spec: CheckSpec, policy: AddressPolicy) -> Self {
        Prober {
            spec,
            policy,
            refused: None,
            grpc: None,
        }
    }

    /// The check it runs.
    pub fn spec(&self) -> &CheckSpec {
        &self.spec
    }

    /// Runs the check once, within its timeout. A target the policy refuses is critical
    /// without being contacted.
    pub async fn run(&mut self, clients: &Clients) -> CheckResult {
        let addrs = match targets::screen_addrs(&self.policy, &self.spec).await {
            Err(refused) => {
                if self.refused.as_ref() != Some(&refused) {
                    tracing::warn!("health check critical: {refused}");
                    self.refused = Some(refused);
                }
                return CheckResult::Critical;
            }
            Ok(addrs) => {
                if let Some(was) = self.refused.take() {
                    tracing::info!(target = %was.target, "health check target allowed again");
                }
                addrs
            }
        };
        let client = if self.spec.tls_skip_verify {
            &clients.http_skip_verify
        } else {
            &clients.http
        };
        let Some(CheckKind::Grpc(target)) = self.spec.kind() else {
            return run_once(client, &self.spec, &addrs).await;
        };
        let timeout = self.spec.timeout().to_std();
        if self.grpc.is_none() {
            let tls = self.spec.grpc_use_tls.then(|| {
                if self.spec.tls_skip_verify {
                    clients.grpc_tls_skip_verify.clone()
                } else {
                    clients.grpc_tls.clone()
                }
            });
            match GrpcProbe::new(target, timeout, tls) {
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

/// A `grpc.health.v1.Health` client for one target (plaintext HTTP/2, or HTTP/2 over TLS with
/// `grpc_use_tls`).
struct GrpcProbe {
    /// Client over a lazily connecting channel: connect failures surface as failed probes.
    client: HealthClient<Channel>,
    /// The `service` asked about; empty for the server's overall health.
    service: String,
}

impl GrpcProbe {
    fn new(
        target: &str,
        timeout: Duration,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Self, tonic::transport::Error> {
        let (addr, service) = model::grpc_target(target);
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        let channel =
            match tls {
                None => endpoint.connect_lazy(),
                Some(tls) => endpoint.connect_with_connector_lazy(tower::service_fn(
                    move |uri: http::Uri| dial_tls(uri, tls.clone()),
                )),
            };
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

/// A TCP connection to `uri`'s host and port with a TLS handshake over it (the certificate
/// checked for that host), for gRPC over TLS.
async fn dial_tls(
    uri: http::Uri,
    tls: Arc<ClientConfig>,
) -> std::io::Result<
    hyper_util::rt::TokioIo<signpost_tls::tokio_rustls::client::TlsStream<TcpStream>>,
> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("no host in {uri}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
    let stream = signpost_tls::tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    Ok(hyper_util::rt::TokioIo::new(stream))
}

/// `SERVING` passing; `NOT_SERVING`, `SERVICE_UNKNOWN`, `UNKNOWN` and anything else critical.
pub fn grpc_status(status: i32) -> CheckResult {
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => CheckResult::Passing,
        _ => CheckResult::Critical,
    }
}

/// An HTTP or TCP check, once, within its timeout. A TCP check connects to `addrs`, the
/// addresses its target was judged by (its target as given when there are none).
async fn run_once(client: &reqwest::Client, spec: &CheckSpec, addrs: &[IpAddr]) -> CheckResult {
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
            let port = target
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok());
            let judged: Vec<SocketAddr> = match port {
                Some(port) => addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
                None => Vec::new(),
            };
            let connect = async {
                if judged.is_empty() {
                    TcpStream::connect(target).await
                } else {
                    TcpStream::connect(&judged[..]).await
                }
            };
            match tokio::time::timeout(timeout, connect).await {
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

    /// The prober judges the target again at each probe and does not connect to a refused one.
    #[tokio::test]
    async fn a_refused_target_is_critical_and_never_contacted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let server = tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let loopback = AddressPolicy::deny_only(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let clients = Clients::new(&loopback, None).unwrap();
        for target in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let spec: CheckSpec =
                serde_json::from_value(serde_json::json!({ "tcp": target })).unwrap();
            let mut prober = Prober::new(spec, loopback.clone());
            assert_eq!(
                prober.run(&clients).await,
                CheckResult::Critical,
                "{target}"
            );
            assert!(prober.refused.is_some());
        }
        let url = format!("http://localhost:{port}/health");
        let spec: CheckSpec = serde_json::from_value(serde_json::json!({ "http": url })).unwrap();
        assert_eq!(
            Prober::new(spec, loopback.clone()).run(&clients).await,
            CheckResult::Critical
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);

        // The same target under the default policy is reached.
        let open = AddressPolicy::default();
        let spec: CheckSpec =
            serde_json::from_value(serde_json::json!({ "tcp": format!("127.0.0.1:{port}") }))
                .unwrap();
        let mut prober = Prober::new(spec, open.clone());
        assert_eq!(
            prober.run(&Clients::new(&open, None).unwrap()).await,
            CheckResult::Passing
        );
        server.abort();
    }

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
