//! What the two HTTP registries ([`super::signpost`] and [`super::consul`]) share: the agents
//! they may call, failover from one to the next, and the small URL helpers.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use signpost_tls::ClientTls;

use super::{Cause, ConfigError, RegistryError};

/// The agents' base URLs, in the order given, and which one answered last.
#[derive(Debug)]
pub(crate) struct Agents {
    /// Base URLs (`http://host:port`, no trailing slash).
    addrs: Vec<String>,
    /// Index into `addrs` of the agent that answered last; calls start there.
    current: AtomicUsize,
    /// The system's name, for messages and log lines ("Signpost", "Consul").
    system: &'static str,
}

/// What one agent made of a call.
pub(crate) enum Tried<T> {
    /// An answer to hand back: a success, or an error any other agent would repeat.
    Answer(T),
    /// Another agent might do better (unreachable, timed out, overloaded); why.
    Next(Cause),
}

impl Agents {
    /// The agents at `addrs` (`http://host:port` or just `host:port`). Fails if there are none.
    pub(crate) fn new<I, S>(addrs: I, system: &'static str) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let addrs: Vec<String> = addrs.into_iter().map(|a| normalize(a.into())).collect();
        if addrs.is_empty() {
            return Err(RegistryError::Config(ConfigError::NoAgents { system }));
        }
        Ok(Agents {
            addrs,
            current: AtomicUsize::new(0),
            system,
        })
    }

    /// The base URLs, normalised.
    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The base URL calls go to first: the agent that answered last.
    pub(crate) fn current(&self) -> &str {
        &self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Calls `attempt` with one agent's base URL after another, starting at the current one,
    /// until one gives an answer; that agent becomes the current one. A lone agent still gets a
    /// second try, since a pooled connection may have gone stale. When every agent has said
    /// [`Tried::Next`], the error is [`RegistryError::Unavailable`] with the last one and why.
    pub(crate) async fn call<'a, T, F, Fut>(&'a self, mut attempt: F) -> Result<T, RegistryError>
    where
        F: FnMut(&'a str) -> Fut,
        Fut: Future<Output = Tried<T>>,
    {
        let n = self.addrs.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for k in 0..n.max(2) {
            let i = (start + k) % n;
            let base = self.addrs[i].as_str();
            match attempt(base).await {
                Tried::Answer(answer) => {
                    if i != start {
                        tracing::info!("{} registry: now using agent {base}", self.system);
                    }
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(answer);
                }
                Tried::Next(cause) => {
                    tracing::debug!(
                        "{} agent {base} failed: {cause}; trying the next one",
                        self.system
                    );
                    last = Some((base, cause));
                }
            }
        }
        let (agent, cause) = last.unwrap_or((self.current(), Cause::Closed));
        Err(RegistryError::Unavailable {
            agent: agent.to_string(),
            cause,
        })
    }
}

/// The header an ACL token travels in, on Consul and on Signpost alike.
pub(crate) const TOKEN_HEADER: &str = "x-consul-token";

/// What every HTTP registry client is built from: the token sent with every request, the TLS
/// settings for `https://` agents, and how long a connection may take.
pub(crate) struct ClientSettings<'a> {
    /// The registry's system, for messages ("Signpost", "Consul").
    pub(crate) system: &'static str,
    /// The ACL token, sent as `X-Consul-Token` with every request (short calls, blocking
    /// queries and watch streams alike).
    pub(crate) token: Option<&'a str>,
    /// The CA `https://` agents are checked against (the system's roots without one) and the
    /// client certificate presented to agents that ask for one (mutual TLS).
    pub(crate) tls: &'a ClientTls,
    /// How long establishing a connection may take.
    pub(crate) connect_timeout: Duration,
}

impl ClientSettings<'_> {
    /// A reqwest builder with the token as a default header (validated, and marked sensitive so
    /// it never shows in logs), the TLS settings (rustls on *ring*), no proxy, the SDK's user
    /// agent and the connect timeout. Fails if the token cannot be sent in a header or the TLS
    /// files cannot be used.
    pub(crate) fn builder(&self) -> Result<reqwest::ClientBuilder, RegistryError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = self.token {
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                RegistryError::Config(ConfigError::BadToken {
                    system: self.system,
                })
            })?;
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }
        let builder = if self.tls.is_default() {
            // The system's roots, through reqwest's own verifier on the process's provider.
            signpost_tls::install_default_provider();
            reqwest::Client::builder()
        } else {
            let config = self.tls.client_config().map_err(|source| {
                RegistryError::Config(ConfigError::Tls {
                    system: self.system,
                    source,
                })
            })?;
            reqwest::Client::builder().tls_backend_preconfigured(config)
        };
        Ok(builder
            .no_proxy()
            .user_agent(concat!("signpost-client/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(self.connect_timeout))
    }

    /// [`ClientSettings::builder`] built as it is: the client of a registry or config reader
    /// whose requests carry their own timeouts.
    pub(crate) fn client(&self) -> Result<reqwest::Client, RegistryError> {
        self.builder()?
            .build()
            .map_err(|e| RegistryError::Config(ConfigError::HttpClient(e)))
    }
}

/// `host:port` → `http://host:port`; no trailing slash.
pub(crate) fn normalize(addr: String) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Percent-encodes a path segment or query value (service names and ids are plain, but never
/// trust input).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TransportKind;

    fn down(base: &str) -> Cause {
        Cause::Transport {
            kind: TransportKind::Refused,
            detail: format!("no {base}"),
        }
    }

    #[test]
    fn normalizes_addresses_and_refuses_none() {
        let agents = Agents::new([" 10.0.0.1:8500/ ", "https://b:8501"], "Test").unwrap();
        assert_eq!(agents.addrs(), ["http://10.0.0.1:8500", "https://b:8501"]);
        assert_eq!(agents.current(), "http://10.0.0.1:8500");
        match Agents::new(Vec::<String>::new(), "Test") {
            Err(RegistryError::Config(ConfigError::NoAgents { system: "Test" })) => {}
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn encodes_everything_but_unreserved_characters() {
        assert_eq!(encode("users-v2_a.b~c:d@e"), "users-v2_a.b~c:d@e");
        assert_eq!(encode("a/b c?d"), "a%2Fb%20c%3Fd");
    }

    #[tokio::test]
    async fn fails_over_and_remembers_the_agent_that_answered() {
        let agents = Agents::new(["a:1", "b:2", "c:3"], "Test").unwrap();
        let mut asked = Vec::new();
        let answer = agents
            .call(|base| {
                asked.push(base.to_string());
                async move {
                    if base.ends_with(":3") {
                        Tried::Answer(base.to_string())
                    } else {
                        Tried::Next(down(base))
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(answer, "http://c:3");
        assert_eq!(asked, ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(agents.current(), "http://c:3");

        // The next call starts at the agent that answered and wraps round.
        asked.clear();
        let err = agents
            .call(|base| {
                asked.push(base.to_string());
                async move { Tried::<()>::Next(down(base)) }
            })
            .await
            .unwrap_err();
        assert_eq!(asked, ["http://c:3", "http://a:1", "http://b:2"]);
        match err {
            RegistryError::Unavailable { agent, cause } => {
                assert_eq!(agent, "http://b:2");
                assert_eq!(cause, down("http://b:2"));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(
            agents.current(),
            "http://c:3",
            "a failed round moves nothing"
        );
    }

    #[tokio::test]
    async fn a_lone_agent_gets_a_second_try() {
        let agents = Agents::new(["a:1"], "Test").unwrap();
        let mut tries = 0;
        let answer = agents
            .call(|_| {
                tries += 1;
                let first = tries == 1;
                async move {
                    if first {
                        Tried::Next(Cause::Closed)
                    } else {
                        Tried::Answer("second")
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(answer, "second");
        assert_eq!(tries, 2);
    }
}
