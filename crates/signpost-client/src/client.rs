//! [`ServiceClient`]: typed JSON calls to a discovered service, with load balancing, circuit
//! breakers, outlier ejection, timeouts and retries.
//!
//! Every call goes through the same steps:
//!
//! 1. take the current instance list from the [`InstanceSource`] (a discovery
//!    [`ServiceWatch`], or a fixed list);
//! 2. [`Selector::select`]: drop instances already tried by this call, ejected outliers and
//!    instances whose breaker is open; run the [`Filter`]s; let the [`Balancer`] pick; take the
//!    breaker's permit (all of it over one [`EndpointState`](crate::selector::EndpointState) per
//!    instance). Nothing left because of open breakers → [`CallError::CircuitOpen`] at once;
//!    nothing at all → [`CallError::NoInstances`];
//! 3. send the request with the per-attempt timeout over the client's one `reqwest` pool;
//! 4. record the outcome with the breaker, the outlier detector and the balancer
//!    ([`Selected::finish`](crate::selector::Selected::finish));
//! 5. if the [`RetryPolicy`] allows it (and its budget has a token), back off and go back to 1
//!    for a different instance.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use serde::Deserialize;
//! use signpost_client::balance::RoundRobin;
//! use signpost_client::client::ServiceClient;
//! use signpost_client::discovery::{Discovery, DiscoveryOptions};
//! use signpost_client::registry::signpost::SignpostRegistry;
//!
//! #[derive(Deserialize)]
//! struct User {
//!     id: u64,
//!     name: String,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(SignpostRegistry::new(["127.0.0.1:8500"])?);
//! let discovery = Discovery::new(registry, DiscoveryOptions::default());
//! let users = ServiceClient::builder(discovery.service("user-service"))
//!     .balancer(RoundRobin::new())
//!     .timeout(Duration::from_secs(2))
//!     .build();
//! let user: User = users.get("/users/1").await?;
//! println!("{} is {}", user.id, user.name);
//! # Ok(()) }
//! ```

pub mod fallback;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::balance::{Balancer, Filter, Outcome, PickContext};
use crate::breaker::{BreakerConfig, OutlierConfig};
use crate::discovery::ServiceWatch;
use crate::endpoints::Endpoints;
use crate::instance::Instance;
use crate::retry::{Decision, FailureKind, NoRetry, RetryPolicy};
use crate::selector::{SelectError, Selector, SelectorBuilder};

pub use self::fallback::{FailedCall, Fallback};

#[cfg(doc)]
use crate::balance::PeakEwma;

/// Where a [`ServiceClient`] gets its instances from.
///
/// Implemented for discovery's [`ServiceWatch`] and for [`StaticInstances`]; implement it to
/// feed instances from anywhere else.
///
/// ```
/// use std::sync::Arc;
/// use signpost_client::client::InstanceSource;
/// use signpost_client::endpoints::Endpoints;
///
/// /// Instances from a `tokio::sync::watch` channel.
/// struct FromChannel(tokio::sync::watch::Receiver<Arc<Endpoints>>);
///
/// impl InstanceSource for FromChannel {
///     fn service(&self) -> &str {
///         "users"
///     }
///     fn instances(&self) -> Arc<Endpoints> {
///         self.0.borrow().clone()
///     }
/// }
/// ```
pub trait InstanceSource: Send + Sync + 'static {
    /// The service's name (for errors and logs).
    fn service(&self) -> &str;
    /// The current instances that may take traffic. A new list must come with a new
    /// [`Endpoints`] (a new version): that is how the selector notices it.
    fn instances(&self) -> Arc<Endpoints>;
}

impl InstanceSource for ServiceWatch {
    fn service(&self) -> &str {
        ServiceWatch::service(self)
    }
    fn instances(&self) -> Arc<Endpoints> {
        ServiceWatch::instances(self)
    }
}

/// A fixed list of instances: for tests, benchmarks, or services at well-known addresses.
///
/// ```
/// use signpost_client::client::{InstanceSource, StaticInstances};
///
/// let none = StaticInstances::new("users", vec![]);
/// assert_eq!(none.service(), "users");
/// assert!(none.instances().is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct StaticInstances {
    /// The service's name.
    service: String,
    /// The instances (one list, one version, for good).
    instances: Arc<Endpoints>,
}

impl StaticInstances {
    /// `instances` of `service`.
    pub fn new(service: impl Into<String>, instances: Vec<Instance>) -> Self {
        StaticInstances {
            service: service.into(),
            instances: Arc::new(Endpoints::new(0, instances)),
        }
    }
}

impl InstanceSource for StaticInstances {
    fn service(&self) -> &str {
        &self.service
    }
    fn instances(&self) -> Arc<Endpoints> {
        self.instances.clone()
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The service has no instances (or the filters left none).
    #[error("no instances of {service} are available")]
    NoInstances {
        /// The service called.
        service: String,
    },
    /// Every instance's circuit breaker (or the service's) is open: failed fast.
    #[error("every circuit of {service} is open")]
    CircuitOpen {
        /// The service called.
        service: String,
    },
    /// The attempt took longer than the call's timeout.
    #[error("{instance} did not answer within {after:?}")]
    Timeout {
        /// The instance that was too slow.
        instance: String,
        /// The timeout.
        after: Duration,
    },
    /// The instance answered with a non-success status.
    #[error("{instance} answered {code}: {body}")]
    Status {
        /// The HTTP status.
        code: u16,
        /// The response body (at most 4 KiB of it, lossily decoded).
        body: String,
        /// The instance that answered.
        instance: String,
    },
    /// The connection could not be made (the request was never sent).
    #[error("cannot connect to {instance}: {source}")]
    Connect {
        /// The instance.
        instance: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The connection failed after it was made (reset, closed mid-response).
    #[error("request to {instance} failed: {source}")]
    Transport {
        /// The instance.
        instance: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The response body is not the JSON expected.
    #[error("cannot decode the response of {instance}: {source}")]
    Decode {
        /// The instance that answered.
        instance: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The request body could not be serialised.
    #[error("cannot encode the request body: {0}")]
    Encode(#[source] serde_json::Error),
    /// The request is malformed (e.g. a path not starting with `/`).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A retry was allowed by the policy but the retry budget had no token left.
    #[error("retry budget exhausted; last error: {last}")]
    RetryBudgetExhausted {
        /// The failure that would have been retried.
        #[source]
        last: Box<CallError>,
    },
}

impl CallError {
    /// The HTTP status, for [`CallError::Status`] (also inside `RetryBudgetExhausted`).
    ///
    /// ```
    /// use signpost_client::client::CallError;
    /// let e = CallError::Status { code: 404, body: String::new(), instance: "a".into() };
    /// assert_eq!(e.status(), Some(404));
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { code, .. } => Some(*code),
            CallError::RetryBudgetExhausted { last } => last.status(),
            _ => None,
        }
    }

    /// The instance the failure came from, if one was reached.
    pub fn instance(&self) -> Option<&str> {
        match self {
            CallError::Timeout { instance, .. }
            | CallError::Status { instance, .. }
            | CallError::Connect { instance, .. }
            | CallError::Transport { instance, .. }
            | CallError::Decode { instance, .. } => Some(instance),
            CallError::RetryBudgetExhausted { last } => last.instance(),
            _ => None,
        }
    }
}

/// A successful response: the decoded body and where it came from.
///
/// ```no_run
/// # async fn run(users: signpost_client::client::ServiceClient) -> Result<(), signpost_client::client::CallError> {
/// let reply = users.request(http::Method::GET, "/users/1").send::<serde_json::Value>().await?;
/// if reply.attempts > 1 {
///     println!("{} answered after {} attempts", reply.instance.id, reply.attempts);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The decoded body.
    pub body: T,
    /// The status (2xx or 3xx).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The instance that answered.
    pub instance: Instance,
    /// Attempts made, this one included (1: no retry; 0 for a fallback's reply).
    pub attempts: u32,
    /// True when the client's [`Fallback`] made this reply because the service could not
    /// answer; `instance` is then a placeholder (empty id, port 0).
    pub from_fallback: bool,
}

/// A client for one service. Cheap to clone; clones share the connection pool, the balancer,
/// the breakers and the retry budget.
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
/// use signpost_client::client::{CallError, ServiceClient, StaticInstances};
///
/// #[derive(Serialize)]
/// struct NewUser<'a> {
///     name: &'a str,
/// }
/// #[derive(Deserialize)]
/// struct User {
///     id: u64,
/// }
///
/// # async fn run(instances: Vec<signpost_client::Instance>) -> Result<(), CallError> {
/// let users = ServiceClient::builder(StaticInstances::new("users", instances)).build();
/// let created: User = users.post("/users", &NewUser { name: "ada" }).await?;
/// let again: User = users.get(&format!("/users/{}", created.id)).await?;
/// users.delete::<()>(&format!("/users/{}", again.id)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    /// Shared by every clone.
    inner: Arc<ClientInner>,
}

struct ClientInner {
    /// Where the instances come from.
    source: Box<dyn InstanceSource>,
    /// Breakers, ejection, filters, balancer.
    selector: Selector,
    /// Which failures are retried.
    retry: RetryPolicy,
    /// Per-attempt timeout.
    timeout: Duration,
    /// The one connection pool.
    http: reqwest::Client,
    /// What to answer when the service cannot, if anything.
    fallback: Option<Fallback>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("service", &self.inner.source.service())
            .field("selector", &self.inner.selector)
            .field("retry", &self.inner.retry)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// Builds a [`ServiceClient`]; see [`ServiceClient::builder`].
///
/// ```
/// use std::time::Duration;
/// use signpost_client::balance::{HasTags, PeakEwma, ZoneAware};
/// use signpost_client::breaker::{BreakerConfig, OutlierConfig};
/// use signpost_client::client::{ServiceClient, StaticInstances};
/// use signpost_client::retry::RetryPolicy;
///
/// // reqwest is built with rustls on *ring* and no default provider: install it first.
/// signpost_tls::install_default_provider();
/// let pool = reqwest::Client::new(); // one pool shared by several service clients
/// let orders = ServiceClient::builder(StaticInstances::new("orders", vec![]))
///     .balancer(PeakEwma::new().decay(Duration::from_secs(5)))
///     .filter(HasTags::new(["v2"]))
///     .filter(ZoneAware::new("eu-west-1a"))
///     .breaker(BreakerConfig { consecutive_failures: 3, ..Default::default() })
///     .service_breaker(BreakerConfig::default())
///     .outlier_detection(OutlierConfig { max_ejection_percent: 30, ..Default::default() })
///     .retry(RetryPolicy::default().max_attempts(2))
///     .timeout(Duration::from_secs(1))
///     .http_client(pool.clone())
///     .build();
/// ```
#[must_use]
pub struct ServiceClientBuilder {
    /// Where the instances come from.
    source: Box<dyn InstanceSource>,
    /// Selection settings.
    selector: SelectorBuilder,
    /// Retry policy.
    retry: RetryPolicy,
    /// Per-attempt timeout.
    timeout: Duration,
    /// A pool to share, if given.
    http: Option<reqwest::Client>,
    /// What to answer when the service cannot.
    fallback: Option<Fallback>,
}

impl ServiceClient {
    /// A builder over `source` with the defaults: [`PeakEwma`] balancing, per-instance breakers
    /// ([`BreakerConfig::default`]), outlier ejection ([`OutlierConfig::default`]),
    /// [`RetryPolicy::default`] and a 10 s timeout per attempt.
    ///
    /// ```
    /// use std::time::Duration;
    /// use signpost_client::balance::{LeastOutstanding, ZoneAware};
    /// use signpost_client::client::{ServiceClient, StaticInstances};
    /// use signpost_client::retry::RetryPolicy;
    ///
    /// let client = ServiceClient::builder(StaticInstances::new("users", vec![]))
    ///     .balancer(LeastOutstanding::new())
    ///     .filter(ZoneAware::new("eu-west-1a"))
    ///     .retry(RetryPolicy::default().max_attempts(2))
    ///     .timeout(Duration::from_millis(500))
    ///     .build();
    /// assert_eq!(client.service(), "users");
    /// ```
    pub fn builder(source: impl InstanceSource) -> ServiceClientBuilder {
        ServiceClientBuilder {
            source: Box::new(source),
            selector: Selector::builder(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            http: None,
            fallback: None,
        }
    }

    /// The service this client calls.
    pub fn service(&self) -> &str {
        self.inner.source.service()
    }

    /// The current instances, as the source reports them.
    pub fn instances(&self) -> Arc<Endpoints> {
        self.inner.source.instances()
    }

    /// The selection machinery (breakers, outliers, balancer), e.g. to inspect breaker states.
    pub fn selector(&self) -> &Selector {
        &self.inner.selector
    }

    /// A request to build further (headers, body, hash key, timeout) and send.
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::client::ServiceClient) -> Result<(), signpost_client::client::CallError> {
    /// use http::Method;
    /// let reply = users
    ///     .request(Method::GET, "/users/42")
    ///     .key("user-42") // for consistent hashing
    ///     .send::<serde_json::Value>()
    ///     .await?;
    /// println!("{} answered after {} attempt(s)", reply.instance.id, reply.attempts);
    /// # Ok(()) }
    /// ```
    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            client: self,
            idempotent: RetryPolicy::is_idempotent(&method),
            method,
            path: path.to_string(),
            headers: HeaderMap::new(),
            body: None,
            ctx: PickContext::new(),
            timeout: self.inner.timeout,
            error: None,
        }
    }

    /// `GET path`, decoding the JSON response.
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::client::ServiceClient) -> Result<(), signpost_client::client::CallError> {
    /// let all: Vec<serde_json::Value> = users.get("/users").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        Ok(self.request(Method::GET, path).send().await?.body)
    }

    /// `POST path` with a JSON body, decoding the JSON response.
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::client::ServiceClient) -> Result<(), signpost_client::client::CallError> {
    /// let created: serde_json::Value = users.post("/users", &serde_json::json!({"name": "ada"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn post<B, T>(&self, path: &str, body: &B) -> Result<T, CallError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        Ok(self
            .request(Method::POST, path)
            .json(body)
            .send()
            .await?
            .body)
    }

    /// `PUT path` with a JSON body, decoding the JSON response.
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::client::ServiceClient) -> Result<(), signpost_client::client::CallError> {
    /// let updated: serde_json::Value = users.put("/users/1", &serde_json::json!({"name": "ada"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put<B, T>(&self, path: &str, body: &B) -> Result<T, CallError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        Ok(self
            .request(Method::PUT, path)
            .json(body)
            .send()
            .await?
            .body)
    }

    /// `DELETE path`, decoding the JSON response (`()` accepts an empty body).
    ///
    /// ```no_run
    /// # async fn run(users: signpost_client::client::ServiceClient) -> Result<(), signpost_client::client::CallError> {
    /// users.delete::<()>("/users/1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        Ok(self.request(Method::DELETE, path).send().await?.body)
    }

    /// Sends `call` ([`attempt_all`](Self::attempt_all)); if that fails because the service
    /// could not answer, the fallback (if any) answers instead.
    async fn execute(&self, call: Call<'_>) -> Result<Reply<Bytes>, CallError> {
        let Some(fallback) = &self.inner.fallback else {
            return self.attempt_all(call).await;
        };
        let (method, path) = (call.method.clone(), call.path.clone());
        match self.attempt_all(call).await {
            Ok(reply) => Ok(reply),
            Err(error) => {
                let failed = FailedCall {
                    service: self.service(),
                    method: &method,
                    path: &path,
                    error: &error,
                };
                fallback.answer(&failed).ok_or(error)
            }
        }
    }

    /// Selects, sends and retries as the policy allows.
    async fn attempt_all(&self, call: Call<'_>) -> Result<Reply<Bytes>, CallError> {
        if let Some(error) = call.error {
            return Err(error);
        }
        if !call.path.starts_with('/') {
            return Err(CallError::InvalidRequest(format!(
                "path must start with '/': {:?}",
                call.path
            )));
        }
        let inner = &*self.inner;
        if let Some(budget) = inner.retry.budget() {
            budget.deposit();
        }
        let service = inner.source.service();
        let mut tried: Vec<String> = Vec::new();
        let mut last_error: Option<CallError> = None;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let list = inner.source.instances();
            let tried_ids: Vec<&str> = tried.iter().map(String::as_str).collect();
            let selected = match inner.selector.select(&list, &call.ctx, &tried_ids) {
                Ok(selected) => selected,
                Err(e) => {
                    // Mid-retry, the failure that made us retry says more than "none left".
                    return Err(last_error.unwrap_or(match e {
                        SelectError::NoInstances => CallError::NoInstances {
                            service: service.to_string(),
                        },
                        SelectError::CircuitOpen => CallError::CircuitOpen {
                            service: service.to_string(),
                        },
                    }));
                }
            };
            let instance = selected.instance();
            crate::metrics::attempt(service);
            let result = self.attempt(&call, instance);
            let result =
                crate::otel::attempt(service, &call.method, &call.path, instance, attempt, result)
                    .await;
            let outcome = match &result {
                Ok(_) => Outcome::Success,
                // A 4xx is the caller's problem, not the instance's.
                Err((FailureKind::Status(code), _)) if *code < 500 => Outcome::Success,
                Err(_) => Outcome::Failure,
            };
            selected.finish(outcome);
            let (kind, error) = match result {
                Ok((status, headers, body)) => {
                    return Ok(Reply {
                        body,
                        status,
                        headers,
                        instance: instance.clone(),
                        attempts: attempt,
                        from_fallback: false,
                    })
                }
                Err(failure) => failure,
            };
            match inner.retry.decide(call.idempotent, &kind, attempt) {
                Decision::Retry { after } => {
                    tracing::debug!(
                        service,
                        instance = %instance.id,
                        attempt,
                        error = %error,
                        ?after,
                        "retrying on another instance"
                    );
                    tried.push(instance.id.clone());
                    last_error = Some(error);
                    tokio::time::sleep(after).await;
                }
                Decision::Stop(NoRetry::BudgetExhausted) => {
                    return Err(CallError::RetryBudgetExhausted {
                        last: Box::new(error),
                    })
                }
                Decision::Stop(_) => return Err(error),
            }
        }
    }

    /// One attempt against `instance`, within the call's timeout.
    async fn attempt(
        &self,
        call: &Call<'_>,
        instance: &Instance,
    ) -> Result<(StatusCode, HeaderMap, Bytes), (FailureKind, CallError)> {
        let url = format!("{}{}", instance.base_url(), call.path);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url)
            .headers(call.headers.clone());
        request = crate::otel::inject(request);
        if let Some(body) = &call.body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let transport = |source: reqwest::Error| {
            if source.is_connect() {
                (
                    FailureKind::Connect,
                    CallError::Connect {
                        instance: instance.id.clone(),
                        source,
                    },
                )
            } else {
                (
                    FailureKind::Transport,
                    CallError::Transport {
                        instance: instance.id.clone(),
                        source,
                    },
                )
            }
        };
        let exchange = async {
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(transport)?;
            Ok::<_, (FailureKind, CallError)>((status, headers, body))
        };
        let (status, headers, body) = match tokio::time::timeout(call.timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err((
                    FailureKind::Timeout,
                    CallError::Timeout {
                        instance: instance.id.clone(),
                        after: call.timeout,
                    },
                ))
            }
        };
        if status.is_client_error() || status.is_server_error() {
            let shown = &body[..body.len().min(4096)];
            return Err((
                FailureKind::Status(status.as_u16()),
                CallError::Status {
                    code: status.as_u16(),
                    body: String::from_utf8_lossy(shown).into_owned(),
                    instance: instance.id.clone(),
                },
            ));
        }
        Ok((status, headers, body))
    }
}

impl ServiceClientBuilder {
    /// The balancer (default [`PeakEwma`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.selector = self.selector.balancer(balancer);
        self
    }

    /// A balancer shared with other code.
    pub fn shared_balancer(mut self, balancer: Arc<dyn Balancer>) -> Self {
        self.selector = self.selector.shared_balancer(balancer);
        self
    }

    /// Adds a filter (tag, metadata, zone, ...); filters run in the order added.
    pub fn filter(mut self, filter: impl Filter) -> Self {
        self.selector = self.selector.filter(filter);
        self
    }

    /// Per-instance circuit breakers with `config` (on by default).
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.selector = self.selector.breaker(config);
        self
    }

    /// No per-instance circuit breakers.
    pub fn no_breaker(mut self) -> Self {
        self.selector = self.selector.no_breaker();
        self
    }

    /// A circuit breaker for the whole service as well (off by default).
    pub fn service_breaker(mut self, config: BreakerConfig) -> Self {
        self.selector = self.selector.service_breaker(config);
        self
    }

    /// Outlier ejection with `config` (on by default).
    pub fn outlier_detection(mut self, config: OutlierConfig) -> Self {
        self.selector = self.selector.outlier_detection(config);
        self
    }

    /// No outlier ejection.
    pub fn no_outlier_detection(mut self) -> Self {
        self.selector = self.selector.no_outlier_detection();
        self
    }

    /// The retry policy (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Timeout per attempt, from sending the request to the end of the response body
    /// (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The HTTP client to use; pass clones of one `reqwest::Client` to several builders to share
    /// one connection pool across services. By default each client gets its own pool (shared by
    /// its clones) that ignores proxy environment variables.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Answers with `fallback` when the service cannot (no instance, every breaker open,
    /// retries spent): the call then succeeds with a [`Reply`] whose `from_fallback` is true.
    ///
    /// ```
    /// use signpost_client::client::{fallback::Fallback, ServiceClient, StaticInstances};
    ///
    /// let users = ServiceClient::builder(StaticInstances::new("users", vec![]))
    ///     .fallback(Fallback::value(serde_json::json!({"id": 0, "name": "guest"})))
    ///     .build();
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # rt.block_on(async {
    /// let reply = users
    ///     .request(http::Method::GET, "/users/1")
    ///     .send::<serde_json::Value>()
    ///     .await
    ///     .unwrap();
    /// assert!(reply.from_fallback);
    /// assert_eq!(reply.body["name"], "guest");
    /// # });
    /// ```
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// The client.
    pub fn build(self) -> ServiceClient {
        let http = self.http.unwrap_or_else(|| {
            signpost_tls::install_default_provider();
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(self.timeout)
                .build()
                .expect("a default reqwest client builds")
        });
        ServiceClient {
            inner: Arc::new(ClientInner {
                source: self.source,
                selector: self.selector.build(),
                retry: self.retry,
                timeout: self.timeout,
                http,
                fallback: self.fallback,
            }),
        }
    }
}

/// One request being built; made by [`ServiceClient::request`].
///
/// ```no_run
/// use std::time::Duration;
/// use http::Method;
/// # async fn run(carts: signpost_client::client::ServiceClient) -> Result<(), signpost_client::client::CallError> {
/// let reply = carts
///     .request(Method::POST, "/carts/42/items")
///     .json(&serde_json::json!({ "sku": "kb-1", "qty": 1 }))
///     .header("x-request-id", "8d3f")
///     .key("cart-42")                     // same cart, same instance (consistent hashing)
///     .timeout(Duration::from_millis(300))
///     .idempotent(true)                   // the server dedupes by request id: safe to retry
///     .send::<serde_json::Value>()
///     .await?;
/// println!("{} answered {}", reply.instance.id, reply.status);
///
/// let raw = carts.request(Method::GET, "/carts/42/receipt.pdf").send_bytes().await?;
/// println!("{} bytes", raw.body.len());
/// # Ok(()) }
/// ```
#[must_use = "a call does nothing until sent"]
pub struct Call<'c> {
    /// The client that sends it.
    client: &'c ServiceClient,
    /// The method.
    method: Method,
    /// Path and query, starting with `/`.
    path: String,
    /// Extra headers.
    headers: HeaderMap,
    /// The serialised JSON body.
    body: Option<Bytes>,
    /// The request key for consistent hashing.
    ctx: PickContext,
    /// Per-attempt timeout.
    timeout: Duration,
    /// Whether it may be retried where the policy requires idempotency.
    idempotent: bool,
    /// A mistake made while building, reported by `send`.
    error: Option<CallError>,
}

impl Call<'_> {
    /// Serialises `body` as the JSON request body.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.body = Some(Bytes::from(bytes)),
            Err(e) => self.error = Some(CallError::Encode(e)),
        }
        self
    }

    /// Adds a header.
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.error = Some(CallError::InvalidRequest("invalid header".into())),
        }
        self
    }

    /// The request key consistent hashing routes by.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.ctx = PickContext::with_key(key);
        self
    }

    /// Overrides the client's per-attempt timeout for this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Vouches that this request may be retried even though its method is not idempotent (or
    /// forbids retrying a GET with side effects).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Sends the request and decodes the JSON response (an empty body decodes as `null`, so
    /// `()` and `Option<T>` accept it).
    pub async fn send<T: DeserializeOwned>(self) -> Result<Reply<T>, CallError> {
        let client = self.client;
        let reply = crate::metrics::call(client.service(), client.execute(self)).await?;
        let json: &[u8] = if reply.body.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &reply.body
        };
        let body = serde_json::from_slice(json).map_err(|source| CallError::Decode {
            instance: reply.instance.id.clone(),
            source,
        })?;
        Ok(Reply {
            body,
            status: reply.status,
            headers: reply.headers,
            instance: reply.instance,
            attempts: reply.attempts,
            from_fallback: reply.from_fallback,
        })
    }

    /// Sends the request and returns the raw response body.
    pub async fn send_bytes(self) -> Result<Reply<Bytes>, CallError> {
        let client = self.client;
        crate::metrics::call(client.service(), client.execute(self)).await
    }
}
