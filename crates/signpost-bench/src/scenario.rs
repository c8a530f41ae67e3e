//! The scenarios: N client tasks, each with its own HTTP client and so its own keep-alive
//! connection, one request in flight per task.
//!
//! - [`register`]: `count` distinct instances over `services` services; every answer must be
//!   `201 Created`.
//! - [`seed`]: the same load, for filling an agent before a restart test; `200 OK` (already
//!   registered, identical) is accepted too, so seeding is idempotent.
//! - [`discover`]: seeds `services` services of `instances` passing instances each, then queries
//!   them in a loop for a fixed time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

use crate::compare::target::{error_chain, snippet};
use crate::payload;
use crate::report::Report;
use crate::stats::{cpu_time, Latencies};

/// Longest a single request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How many error messages a report keeps.
const MAX_ERROR_SAMPLES: usize = 5;

/// Why a scenario could not run. (A request that fails while it runs is not an error of the
/// scenario: it is counted in the [`Report`], with the first few messages kept.)
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `--addr` is not a plain-HTTP base URL.
    #[error("--addr must look like http://127.0.0.1:8500, got {addr:?}")]
    BadAddr {
        /// The address given.
        addr: String,
    },
    /// A count that must be at least 1 is 0.
    #[error("{setting} must be at least 1")]
    Zero {
        /// The setting: `clients`, `services` or `instances`.
        setting: &'static str,
    },
    /// The ACL token cannot be sent as a header.
    #[error("the token is not a valid header value")]
    BadToken,
    /// The `reqwest` client of a task could not be built.
    #[error("cannot build an HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// Seeding a discovery service failed, so its queries would measure nothing useful.
    #[error(
        "seeding {service} failed: {failed} of {requests} registrations failed ({})",
        samples.join("; ")
    )]
    Seeding {
        /// The service being seeded.
        service: String,
        /// Registrations that failed.
        failed: u64,
        /// Registrations sent.
        requests: u64,
        /// The first few error messages.
        samples: Vec<String>,
    },
    /// A client task panicked (or was cancelled).
    #[error("a client task panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

/// Fails with [`ScenarioError::Zero`] when `value` is 0.
fn at_least_one(setting: &'static str, value: u64) -> Result<(), ScenarioError> {
    if value == 0 {
        return Err(ScenarioError::Zero { setting });
    }
    Ok(())
}

/// Settings of [`register`] and [`seed`].
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Base URL of the agent, e.g. `http://127.0.0.1:8500`.
    pub addr: String,
    /// Concurrent client tasks (and so connections).
    pub clients: usize,
    /// Distinct instances to register.
    pub count: u64,
    /// Services the instances are spread over (round robin).
    pub services: u64,
    /// TTL of each instance's check; `None` registers instances without a check.
    pub ttl: Option<Duration>,
    /// Prefix of service names and instance ids, so runs against one agent do not collide.
    pub prefix: String,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// ACL token sent as `X-Consul-Token` on every request.
    pub token: Option<String>,
}

impl RegisterOptions {
    /// The defaults of `signpost-bench register` against `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        RegisterOptions {
            addr: addr.into(),
            clients: 64,
            count: 20_000,
            services: 1_000,
            ttl: Some(Duration::from_secs(30)),
            prefix: "reg".to_string(),
            progress: false,
            token: None,
        }
    }
}

/// Settings of [`discover`].
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// Base URL of the agent, e.g. `http://127.0.0.1:8500`.
    pub addr: String,
    /// Concurrent client tasks (and so connections).
    pub clients: usize,
    /// How long the query loop runs (seeding is not counted).
    pub duration: Duration,
    /// Passing instances in each queried service.
    pub instances: u64,
    /// Services queried (round robin); see [`discover_service`] for their names.
    pub services: u64,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// ACL token sent as `X-Consul-Token` on every request.
    pub token: Option<String>,
}

impl DiscoverOptions {
    /// The defaults of `signpost-bench discover` against `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        DiscoverOptions {
            addr: addr.into(),
            clients: 64,
            duration: Duration::from_secs(10),
            instances: 10,
            services: 1,
            progress: false,
            token: None,
        }
    }
}

/// Name of the `k`th service a discovery run queries: `disc-{instances}` when there is one,
/// `disc-{instances}-{k}` when there are several.
pub fn discover_service(instances: u64, services: u64, k: u64) -> String {
    if services == 1 {
        format!("disc-{instances}")
    } else {
        format!("disc-{instances}-{k}")
    }
}

/// Registers `opts.count` distinct instances; any answer but `201 Created` is an error.
pub async fn register(opts: &RegisterOptions) -> Result<Report, ScenarioError> {
    let plan = Plan::from_options("register", opts, |s| s == StatusCode::CREATED)?;
    plan.run().await
}

/// Registers `opts.count` distinct instances, accepting `200 OK` for ones already registered.
pub async fn seed(opts: &RegisterOptions) -> Result<Report, ScenarioError> {
    let plan = Plan::from_options("seed", opts, |s| {
        s == StatusCode::CREATED || s == StatusCode::OK
    })?;
    plan.run().await
}

/// Seeds the discovery services, then queries them from `opts.clients` tasks for
/// `opts.duration`. A query counts as ok when it answers `200 OK`; the first answer each task
/// gets from each service is also parsed and must list exactly `opts.instances` instances.
pub async fn discover(opts: &DiscoverOptions) -> Result<Report, ScenarioError> {
    let base = base_url(&opts.addr)?;
    at_least_one("clients", opts.clients as u64)?;
    at_least_one("services", opts.services)?;
    at_least_one("instances", opts.instances)?;

    let names: Vec<String> = (0..opts.services)
        .map(|k| discover_service(opts.instances, opts.services, k))
        .collect();
    for name in &names {
        let plan = Plan {
            scenario: "discover seed",
            base: base.clone(),
            clients: opts.clients,
            count: opts.instances,
            services: 1,
            service_of: Box::new({
                let name = name.clone();
                move |_| name.clone()
            }),
            id_prefix: name.clone(),
            ttl: None,
            accept: |s| s == StatusCode::CREATED || s == StatusCode::OK,
            token: opts.token.clone(),
            progress: false,
        };
        let seeded = plan.run().await?;
        if seeded.errors > 0 {
            return Err(ScenarioError::Seeding {
                service: name.clone(),
                failed: seeded.errors,
                requests: seeded.requests,
                samples: seeded.error_samples,
            });
        }
    }

    let urls: Arc<Vec<String>> = Arc::new(
        names
            .iter()
            .map(|n| format!("{base}/api/v1/services/{n}/instances"))
            .collect(),
    );
    let expected = opts.instances;
    let errors = Arc::new(ErrorLog::default());
    let queries = Arc::new(AtomicU64::new(0));
    let pb = progress_bar(
        opts.progress,
        u64::try_from(opts.duration.as_millis()).unwrap_or(u64::MAX),
        "{spinner} discover [{bar:40}] {elapsed_precise} {msg}",
    );

    let cpu_before = cpu_time();
    let start = Instant::now();
    let deadline = start + opts.duration;
    let ticker = {
        let pb = pb.clone();
        let queries = queries.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let elapsed = start.elapsed();
                pb.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
                pb.set_message(format!("{} queries", queries.load(Ordering::Relaxed)));
            }
        })
    };

    let mut tasks = Vec::with_capacity(opts.clients);
    for task in 0..opts.clients {
        let client = http_client(opts.token.as_deref())?;
        let urls = urls.clone();
        let errors = errors.clone();
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut verified = vec![false; urls.len()];
            let mut n = task;
            while Instant::now() < deadline {
                let k = n % urls.len();
                n += 1;
                let url = &urls[k];
                tally.requests += 1;
                let t0 = Instant::now();
                let answer = fetch(client.get(url)).await;
                queries.fetch_add(1, Ordering::Relaxed);
                match answer {
                    Ok((status, body)) => {
                        tally.latencies.record(t0.elapsed());
                        tally.bytes += body.len() as u64;
                        if status != StatusCode::OK {
                            tally.errors += 1;
                            errors.note(|| format!("GET {url}: HTTP {status}: {}", snippet(&body)));
                        } else if !verified[k] {
                            verified[k] = true;
                            match count_instances(&body) {
                                Some(c) if c == expected => tally.ok += 1,
                                other => {
                                    tally.errors += 1;
                                    errors.note(|| {
                                        format!("GET {url}: expected {expected} instances, got {other:?}")
                                    });
                                }
                            }
                        } else {
                            tally.ok += 1;
                        }
                    }
                    Err(e) => {
                        tally.errors += 1;
                        errors.note(|| format!("GET {url}: {}", error_chain(&e)));
                    }
                }
            }
            tally
        }));
    }
    let tally = join(tasks).await?;
    let duration = start.elapsed();
    let cpu_after = cpu_time();
    ticker.abort();
    pb.finish_and_clear();

    Ok(tally.into_report(
        "discover",
        "queries",
        opts.clients,
        opts.services,
        Some(opts.instances),
        duration,
        cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b)),
        errors.take(),
    ))
}

/// A registration load: which instance goes to which service, and which answers are fine.
struct Plan {
    scenario: &'static str,
    base: String,
    clients: usize,
    count: u64,
    services: u64,
    /// Service name of instance `i`.
    service_of: Box<dyn Fn(u64) -> String + Send + Sync>,
    id_prefix: String,
    ttl: Option<Duration>,
    accept: fn(StatusCode) -> bool,
    progress: bool,
    token: Option<String>,
}

impl Plan {
    fn from_options(
        scenario: &'static str,
        opts: &RegisterOptions,
        accept: fn(StatusCode) -> bool,
    ) -> Result<Plan, ScenarioError> {
        at_least_one("clients", opts.clients as u64)?;
        at_least_one("services", opts.services)?;
        let prefix = opts.prefix.clone();
        let services = opts.services;
        Ok(Plan {
            scenario,
            base: base_url(&opts.addr)?,
            clients: opts.clients,
            count: opts.count,
            services,
            service_of: Box::new(move |i| payload::service_name(&prefix, i % services)),
            id_prefix: opts.prefix.clone(),
            ttl: opts.ttl,
            accept,
            progress: opts.progress,
            token: opts.token.clone(),
        })
    }

    async fn run(self) -> Result<Report, ScenarioError> {
        let plan = Arc::new(self);
        let next = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(ErrorLog::default());
        let pb = progress_bar(
            plan.progress,
            plan.count,
            "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        );
        pb.set_message(plan.scenario);

        let cpu_before = cpu_time();
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(plan.clients);
        for _ in 0..plan.clients {
            let client = http_client(plan.token.as_deref())?;
            let plan = plan.clone();
            let next = next.clone();
            let errors = errors.clone();
            let pb = pb.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= plan.count {
                        break;
                    }
                    let service = (plan.service_of)(i);
                    let url = format!("{}/api/v1/services/{service}/instances", plan.base);
                    let body = payload::registration(&plan.id_prefix, i, plan.ttl);
                    tally.requests += 1;
                    let t0 = Instant::now();
                    let request = client
                        .post(&url)
                        .header(CONTENT_TYPE, "application/json")
                        .body(body);
                    match fetch(request).await {
                        Ok((status, body)) => {
                            tally.latencies.record(t0.elapsed());
                            tally.bytes += body.len() as u64;
                            if (plan.accept)(status) {
                                tally.ok += 1;
                            } else {
                                tally.errors += 1;
                                errors.note(|| {
                                    format!("POST {url}: HTTP {status}: {}", snippet(&body))
                                });
                            }
                        }
                        Err(e) => {
                            tally.errors += 1;
                            errors.note(|| format!("POST {url}: {}", error_chain(&e)));
                        }
                    }
                    pb.inc(1);
                }
                tally
            }));
        }
        let tally = join(tasks).await?;
        let duration = start.elapsed();
        let cpu_after = cpu_time();
        pb.finish_and_clear();

        Ok(tally.into_report(
            plan.scenario,
            "registrations",
            plan.clients,
            plan.services,
            None,
            duration,
            cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b)),
            errors.take(),
        ))
    }
}

/// What one client task counted; tasks keep their own and they are summed at the end.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    ok: u64,
    errors: u64,
    bytes: u64,
    latencies: Latencies,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.latencies.merge(&other.latencies);
    }

    #[allow(clippy::too_many_arguments)]
    fn into_report(
        self,
        scenario: &str,
        unit: &'static str,
        clients: usize,
        services: u64,
        instances_per_service: Option<u64>,
        duration: Duration,
        generator_cpu: Option<Duration>,
        error_samples: Vec<String>,
    ) -> Report {
        Report {
            scenario: scenario.to_string(),
            unit,
            clients,
            services,
            instances_per_service,
            requests: self.requests,
            ok: self.ok,
            errors: self.errors,
            error_samples,
            duration,
            bytes_received: self.bytes,
            latency: self.latencies.summary(),
            generator_cpu,
        }
    }
}

/// The first few error messages of a run, shared by its tasks (locked only on errors).
#[derive(Debug, Default)]
struct ErrorLog(Mutex<Vec<String>>);

impl ErrorLog {
    fn note(&self, message: impl FnOnce() -> String) {
        let mut samples = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < MAX_ERROR_SAMPLES {
            samples.push(message());
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Waits for every task and sums their tallies.
async fn join(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Result<Tally, ScenarioError> {
    let mut total = Tally::default();
    for tally in futures::future::try_join_all(tasks)
        .await
        .map_err(ScenarioError::Panicked)?
    {
        total.merge(tally);
    }
    Ok(total)
}

/// `http://host:port` without a trailing slash, or a clear error.
pub(crate) fn base_url(addr: &str) -> Result<String, ScenarioError> {
    let base = addr.trim_end_matches('/');
    if !(base.starts_with("http://") && base.len() > "http://".len()) {
        return Err(ScenarioError::BadAddr {
            addr: addr.to_string(),
        });
    }
    Ok(base.to_string())
}

/// A client of its own for one task: its own pool, so its own connection. No proxy (a proxy
/// from the environment would measure the proxy), HTTP/1.1 as plain-HTTP clients use. With a
/// token, every request carries it as `X-Consul-Token`.
pub(crate) fn http_client(token: Option<&str>) -> Result<reqwest::Client, ScenarioError> {
    signpost_tls::install_default_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let value =
            reqwest::header::HeaderValue::from_str(token).map_err(|_| ScenarioError::BadToken)?;
        headers.insert("x-consul-token", value);
    }
    signpost_tls::install_default_provider();
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(ScenarioError::HttpClient)
}

/// Sends a request and reads the whole body (so the connection can be reused).
async fn fetch(request: reqwest::RequestBuilder) -> Result<(StatusCode, Bytes), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    Ok((status, body))
}

/// Length of the `instances` array of a listing, or `None` if the body is not one.
fn count_instances(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("instances")?.as_array()?.len() as u64)
}

fn progress_bar(enabled: bool, len: u64, template: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(style);
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:1/").unwrap(),
            "http://127.0.0.1:1"
        );
        assert!(base_url("127.0.0.1:1").is_err());
        assert!(base_url("http://").is_err());
    }

    #[tokio::test]
    async fn settings_that_cannot_run_are_typed_errors() {
        let err = register(&RegisterOptions::new("127.0.0.1:8500"))
            .await
            .unwrap_err();
        assert!(matches!(&err, ScenarioError::BadAddr { addr } if addr == "127.0.0.1:8500"));
        assert_eq!(
            err.to_string(),
            "--addr must look like http://127.0.0.1:8500, got \"127.0.0.1:8500\""
        );

        let err = seed(&RegisterOptions {
            clients: 0,
            ..RegisterOptions::new("http://127.0.0.1:1")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ScenarioError::Zero { setting: "clients" }));
        assert_eq!(err.to_string(), "clients must be at least 1");

        let err = discover(&DiscoverOptions {
            instances: 0,
            ..DiscoverOptions::new("http://127.0.0.1:1")
        })
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            ScenarioError::Zero {
                setting: "instances"
            }
        ));
        assert_eq!(err.to_string(), "instances must be at least 1");
    }

    /// A seeding that fails names the service and shows the failed requests' messages, with
    /// their causes (the agent is not there).
    #[tokio::test]
    async fn a_failed_seeding_says_which_service_and_why() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = discover(&DiscoverOptions {
            clients: 1,
            instances: 2,
            ..DiscoverOptions::new(format!("http://127.0.0.1:{port}"))
        })
        .await
        .unwrap_err();
        let ScenarioError::Seeding {
            service,
            failed,
            requests,
            samples,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((service.as_str(), *failed, *requests), ("disc-2", 2, 2));
        let url = format!("POST http://127.0.0.1:{port}/api/v1/services/disc-2/instances: ");
        assert!(samples[0].starts_with(&url), "{samples:?}");
        assert!(err
            .to_string()
            .starts_with("seeding disc-2 failed: 2 of 2 registrations failed (POST"));
    }

    #[test]
    fn discover_service_names() {
        assert_eq!(discover_service(10, 1, 0), "disc-10");
        assert_eq!(discover_service(100, 3, 2), "disc-100-2");
    }

    #[test]
    fn counts_listed_instances() {
        assert_eq!(
            count_instances(br#"{"index":3,"instances":[{},{}]}"#),
            Some(2)
        );
        assert_eq!(count_instances(b"nope"), None);
    }
}
