//! Configuration from the KV store: [`Config`] reads a key or a prefix from Signpost's native KV
//! API (`/api/v1/kv`) or any Consul-compatible agent's (`/v1/kv`), decodes it into the caller's
//! type (JSON, TOML or the raw text), and [`Config::watch`]es it.
//!
//! # Watching
//! A watch is a loop of blocking queries on the key's (or the prefix's) index, run by a
//! background task the [`ConfigWatch`] owns (dropping the watch stops it):
//! - every answer at a new index is decoded and, when it decodes, becomes the current value;
//! - an answer that does not decode (or a key that was deleted) keeps the last good value and
//!   reports why in [`Watched::problem`];
//! - an agent that cannot be reached keeps the last good value too: the error is reported once,
//!   and the query is retried with the SDK's [`Backoff`] (failing over between agents as every
//!   call does) until an agent answers again, at once rather than blocking;
//! - a prefix is read in one answer at one index, so a prefix watch hands over whole snapshots:
//!   never some keys from before a change and some from after.
//!
//! ```no_run
//! use serde::Deserialize;
//! use signpost_client::config::{Config, ConfigOptions, Format};
//!
//! #[derive(Debug, Deserialize)]
//! struct Settings { greeting: String, page_size: usize }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::native(["127.0.0.1:8500"], ConfigOptions::default())?;
//! let now: Settings = config.get("app/users/config", Format::Json).await?;
//! let mut watch = config.watch::<Settings>("app/users/config", Format::Json);
//! while let Some(settings) = watch.next_value().await {
//!     println!("settings at index {}: {:?}", settings.index, settings.value);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::{Backoff, Reconnect};
use crate::registry::agents::{encode, Agents, ClientSettings, Tried};
use crate::registry::error::error_body;
use crate::registry::{AnswerError, Cause, ClientTls, RegistryError};

/// Which KV API the agents speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Signpost's native `/api/v1/kv` (index in `X-Signpost-Index`).
    Native,
    /// Consul's `/v1/kv` (index in `X-Consul-Index`): Consul itself, or Signpost's Consul face.
    Consul,
}

impl Api {
    /// The path prefix of a key.
    fn root(self) -> &'static str {
        match self {
            Api::Native => "/api/v1/kv/",
            Api::Consul => "/v1/kv/",
        }
    }

    /// The header that carries the index of an answer.
    fn index_header(self) -> &'static str {
        match self {
            Api::Native => signpost_api::INDEX_HEADER,
            Api::Consul => "x-consul-index",
        }
    }

    /// The system's name, for messages.
    fn system(self) -> &'static str {
        match self {
            Api::Native => "Signpost",
            Api::Consul => "Consul",
        }
    }
}

/// How a value is decoded into the caller's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON document.
    Json,
    /// A TOML document.
    Toml,
    /// The value's UTF-8 text as it is (decode into `String`, or anything that deserializes
    /// from a string); [`Config::get_bytes`] gives the bytes themselves.
    Raw,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
            Format::Raw => "UTF-8 text",
        })
    }
}

/// Tunables of a [`Config`] client. `Default` gives production values and no token.
#[derive(Clone)]
pub struct ConfigOptions {
    /// ACL token sent as `X-Consul-Token` with every request; `None` sends none.
    pub token: Option<String>,
    /// TLS for `https://` agents (the default trusts the system's roots and presents nothing).
    pub tls: ClientTls,
    /// How long establishing a TCP connection to one agent may take before the next is tried.
    pub connect_timeout: Duration,
    /// Total time a plain read may take on one agent (a blocking query gets its wait on top).
    pub request_timeout: Duration,
    /// How long one blocking query of a watch waits on the agent for a change.
    pub blocking_wait: Duration,
    /// How long a watch waits before asking again after no agent could be reached.
    pub backoff: Backoff,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        ConfigOptions {
            token: None,
            tls: ClientTls::default(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            blocking_wait: Duration::from_secs(300),
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(10),
                jitter: crate::backoff::Jitter::Equal,
            },
        }
    }
}

impl fmt::Debug for ConfigOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("blocking_wait", &self.blocking_wait)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// Why a configuration read gave no (new) value.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The agents could not be asked, refused (403), or answered something unreadable.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The key is not set (or the prefix holds nothing).
    #[error("configuration key {key:?} is not set")]
    Missing {
        /// The key or prefix read.
        key: String,
    },
    /// The value is there but is not what the caller's type reads.
    #[error("configuration key {key:?} is not valid {format}: {source}")]
    Decode {
        /// The key whose value did not decode.
        key: String,
        /// What it was decoded as.
        format: Format,
        /// The decoder's complaint.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The entries under a key or prefix as one answer gave them, at one index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The index the answer reflects (`X-Signpost-Index` / `X-Consul-Index`).
    pub index: u64,
    /// Full key → value. Empty when nothing is set; folder keys (ending in `/`, no value) are
    /// left out.
    pub entries: BTreeMap<String, Bytes>,
}

/// A value and the index it was read at.
#[derive(Debug)]
pub struct Versioned<T> {
    /// The index of the answer the value was decoded from.
    pub index: u64,
    /// The decoded value, shared by everyone who reads it.
    pub value: Arc<T>,
}

impl<T> Clone for Versioned<T> {
    fn clone(&self) -> Self {
        Versioned {
            index: self.index,
            value: self.value.clone(),
        }
    }
}

/// What a [`ConfigWatch`] knows: the last good value and, when the latest read did not give a
/// new one, why.
#[derive(Debug)]
pub struct Watched<T> {
    /// The last value that decoded; `None` until one has.
    pub value: Option<Versioned<T>>,
    /// Why the latest read did not replace `value` (an unreachable agent, a value that does not
    /// decode, a deleted key); `None` when `value` is what the agent holds now.
    pub problem: Option<Arc<ReadError>>,
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Watched {
            value: self.value.clone(),
            problem: self.problem.clone(),
        }
    }
}

/// A configuration client over one or more agents' KV API. Cheap to clone.
#[derive(Clone)]
pub struct Config {
    /// Shared with every watch's task.
    inner: Arc<Inner>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api", &self.inner.api)
            .field("agents", &self.inner.agents)
            .finish()
    }
}

/// What a [`Config`] and its watches share.
struct Inner {
    /// Which KV API to speak.
    api: Api,
    /// The agents, and the one that answered last.
    agents: Agents,
    /// HTTP client (connect timeout only; each request sets its own total timeout).
    http: reqwest::Client,
    /// The tunables.
    options: ConfigOptions,
}

/// What a watch reads: one key, or everything under a prefix.
#[derive(Debug, Clone)]
struct Target {
    /// The key or prefix.
    key: String,
    /// A prefix (`?recurse`).
    recurse: bool,
}

/// Turns a snapshot into the caller's value.
type Decoder<T> = Arc<dyn Fn(&Snapshot) -> Result<T, ReadError> + Send + Sync>;

impl Config {
    /// A client of Signpost agents' native KV API at `addrs` (`http://host:port` or
    /// `host:port`). Fails if `addrs` is empty or the token or TLS settings are unusable.
    pub fn native<I, S>(addrs: I, options: ConfigOptions) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Api::Native, addrs, options)
    }

    /// A client of Consul-compatible agents' `/v1/kv` at `addrs`.
    pub fn consul<I, S>(addrs: I, options: ConfigOptions) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Api::Consul, addrs, options)
    }

    /// A client of `api` at `addrs`.
    pub fn new<I, S>(api: Api, addrs: I, options: ConfigOptions) -> Result<Self, RegistryError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let agents = Agents::new(addrs, api.system())?;
        let http = ClientSettings {
            system: api.system(),
            token: options.token.as_deref(),
            tls: &options.tls,
            connect_timeout: options.connect_timeout,
        }
        .client()?;
        Ok(Config {
            inner: Arc::new(Inner {
                api,
                agents,
                http,
                options,
            }),
        })
    }

    /// The raw value of `key`: [`ReadError::Missing`] when it is not set.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, ReadError> {
        let snapshot = self.inner.fetch(&Target::key(key), None).await?;
        snapshot
            .entries
            .get(key)
            .cloned()
            .ok_or_else(|| ReadError::Missing { key: key.into() })
    }

    /// `key`'s value decoded as `format` into `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        format: Format,
    ) -> Result<T, ReadError> {
        let bytes = self.get_bytes(key).await?;
        decode(key, &bytes, format)
    }

    /// Every entry under `prefix`, read in one answer at one index.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Snapshot, ReadError> {
        Ok(self.inner.fetch(&Target::prefix(prefix), None).await?)
    }

    /// Watches `key`, decoding each new value as `format` into `T`.
    pub fn watch<T>(&self, key: &str, format: Format) -> ConfigWatch<T>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let owned = key.to_string();
        let decoder: Decoder<T> = Arc::new(move |s: &Snapshot| match s.entries.get(&owned) {
            Some(bytes) => decode(&owned, bytes, format),
            None => Err(ReadError::Missing { key: owned.clone() }),
        });
        self.spawn(Target::key(key), decoder)
    }

    /// Watches everything under `prefix`; each value is the whole prefix at one index, as a map
    /// from the key (with `prefix` taken off) to its value decoded as `format`. When one entry
    /// does not decode, the whole snapshot is refused and the last good map kept.
    pub fn watch_prefix<T>(&self, prefix: &str, format: Format) -> ConfigWatch<BTreeMap<String, T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let owned = prefix.to_string();
        let decoder: Decoder<BTreeMap<String, T>> = Arc::new(move |s: &Snapshot| {
            s.entries
                .iter()
                .map(|(key, bytes)| {
                    let short = key.strip_prefix(owned.as_str()).unwrap_or(key);
                    Ok((short.to_string(), decode(key, bytes, format)?))
                })
                .collect()
        });
        self.spawn(Target::prefix(prefix), decoder)
    }

    /// Watches everything under `prefix` with the caller's own decoding of each whole snapshot
    /// (e.g. one struct assembled from several keys).
    pub fn watch_prefix_with<T, F>(&self, prefix: &str, decode: F) -> ConfigWatch<T>
    where
        T: Send + Sync + 'static,
        F: Fn(&Snapshot) -> Result<T, ReadError> + Send + Sync + 'static,
    {
        self.spawn(Target::prefix(prefix), Arc::new(decode))
    }

    /// Starts the watch task.
    fn spawn<T: Send + Sync + 'static>(
        &self,
        target: Target,
        decoder: Decoder<T>,
    ) -> ConfigWatch<T> {
        let (tx, rx) = watch::channel(Watched {
            value: None,
            problem: None,
        });
        let task = tokio::spawn(run(self.inner.clone(), target, decoder, tx));
        ConfigWatch {
            rx,
            task,
            delivered: None,
        }
    }
}

impl Target {
    fn key(key: &str) -> Target {
        Target {
            key: key.to_string(),
            recurse: false,
        }
    }

    fn prefix(prefix: &str) -> Target {
        Target {
            key: prefix.to_string(),
            recurse: true,
        }
    }
}

/// Decodes one value.
fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8], format: Format) -> Result<T, ReadError> {
    let bad = |source: Box<dyn std::error::Error + Send + Sync>| ReadError::Decode {
        key: key.to_string(),
        format,
        source,
    };
    match format {
        Format::Json => serde_json::from_slice(bytes).map_err(|e| bad(e.into())),
        Format::Toml => {
            let text = std::str::from_utf8(bytes).map_err(|e| bad(e.into()))?;
            toml::from_str(text).map_err(|e| bad(e.into()))
        }
        Format::Raw => {
            let text = std::str::from_utf8(bytes).map_err(|e| bad(e.into()))?;
            T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text))
                .map_err(|e| bad(e.into()))
        }
    }
}

/// A native KV entry (`?recurse` answers a list of them, a single key one).
#[derive(Deserialize)]
struct NativeEntry {
    key: String,
    #[serde(default)]
    value: String,
}

/// A Consul `KVPair` (always in a list).
#[derive(Deserialize)]
struct ConsulPair {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
}

/// A native answer: one entry or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum NativeAnswer {
    One(NativeEntry),
    Many(Vec<NativeEntry>),
}

impl Inner {
    /// One read of `target`; with `wait`, a blocking query past that index.
    async fn fetch(
        &self,
        target: &Target,
        wait: Option<(u64, Duration)>,
    ) -> Result<Snapshot, RegistryError> {
        let segments: Vec<String> = target.key.split('/').map(encode).collect();
        let mut path = format!("{}{}", self.api.root(), segments.join("/"));
        let mut sep = '?';
        if target.recurse {
            path.push_str("?recurse=true");
            sep = '&';
        }
        let mut timeout = self.options.request_timeout;
        if let Some((index, wait)) = wait {
            path.push_str(&format!("{sep}index={index}&wait={}ms", wait.as_millis()));
            timeout += wait;
        }
        let what = || format!("configuration {}", target.key);
        let (path, http) = (&path, &self.http);
        let resp = self
            .agents
            .call(|base| async move {
                match http
                    .get(format!("{base}{path}"))
                    .timeout(timeout)
                    .send()
                    .await
                {
                    Ok(r)
                        if r.status().is_server_error()
                            || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                    {
                        let status = r.status();
                        let body = error_body(&r.bytes().await.unwrap_or_default());
                        Tried::Next(Cause::Status { status, body })
                    }
                    Ok(r) => Tried::Answer(r),
                    Err(e) => Tried::Next(Cause::transport(&e)),
                }
            })
            .await?;
        let status = resp.status();
        let index = resp
            .headers()
            .get(self.api.index_header())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Unavailable {
            agent: self.agents.current().to_string(),
            cause: Cause::transport(&e),
        })?;
        let index = index.ok_or_else(|| {
            RegistryError::malformed(
                what(),
                AnswerError::MissingHeader {
                    header: match self.api {
                        Api::Native => signpost_api::INDEX_HEADER,
                        Api::Consul => "X-Consul-Index",
                    },
                    system: self.api.system(),
                },
            )
        });
        match status {
            StatusCode::NOT_FOUND => {
                return Ok(Snapshot {
                    index: index?,
                    entries: BTreeMap::new(),
                })
            }
            StatusCode::FORBIDDEN => {
                return Err(RegistryError::Forbidden {
                    what: what(),
                    body: error_body(&bytes),
                })
            }
            s if !s.is_success() => {
                return Err(RegistryError::Rejected {
                    what: what(),
                    status: Some(s),
                    body: error_body(&bytes),
                })
            }
            _ => {}
        }
        let index = index?;
        let pairs: Vec<(String, Option<String>)> = match self.api {
            Api::Native => match serde_json::from_slice(&bytes)
                .map_err(|e| RegistryError::malformed(what(), e))?
            {
                NativeAnswer::One(e) => vec![(e.key, Some(e.value))],
                NativeAnswer::Many(list) => {
                    list.into_iter().map(|e| (e.key, Some(e.value))).collect()
                }
            },
            Api::Consul => serde_json::from_slice::<Vec<ConsulPair>>(&bytes)
                .map_err(|e| RegistryError::malformed(what(), e))?
                .into_iter()
                .map(|p| (p.key, p.value))
                .collect(),
        };
        let mut entries = BTreeMap::new();
        for (key, value) in pairs {
            if key.ends_with('/') && value.as_deref().is_none_or(str::is_empty) {
                continue; // a folder
            }
            let value = base64::engine::general_purpose::STANDARD
                .decode(value.unwrap_or_default())
                .map_err(|e| RegistryError::malformed(what(), e))?;
            entries.insert(key, Bytes::from(value));
        }
        Ok(Snapshot { index, entries })
    }
}

/// The watch loop: blocking queries on the target's index, each new answer decoded and
/// published; errors keep the last good value.
async fn run<T>(
    inner: Arc<Inner>,
    target: Target,
    decoder: Decoder<T>,
    tx: watch::Sender<Watched<T>>,
) {
    let mut reconnect = Reconnect::new(inner.options.backoff);
    // The index the next query blocks on (0: answer at once) and the one last decoded.
    let mut query: u64 = 0;
    let mut seen: Option<u64> = None;
    // Why the answer at `seen` was not taken (it did not decode), to report again after an
    // outage that changed nothing.
    let mut refused: Option<Arc<ReadError>> = None;
    loop {
        let wait = (query > 0).then_some((query, inner.options.blocking_wait));
        let result = tokio::select! {
            r = inner.fetch(&target, wait) => r,
            _ = tx.closed() => return,
        };
        match result {
            Ok(snapshot) => {
                let recovered = reconnect.failures() > 0;
                reconnect.reset();
                let got = snapshot.index.max(1);
                query = got;
                if seen == Some(got) {
                    if recovered {
                        // Back, and nothing changed meanwhile: what was true before the outage
                        // (the last value current, or the latest answer refused) is again.
                        tx.send_if_modified(|w| {
                            let unreachable =
                                matches!(w.problem.as_deref(), Some(ReadError::Registry(_)));
                            if unreachable {
                                w.problem = refused.clone();
                            }
                            unreachable
                        });
                    }
                    continue;
                }
                seen = Some(got);
                match decoder(&snapshot) {
                    Ok(value) => {
                        refused = None;
                        tx.send_replace(Watched {
                            value: Some(Versioned {
                                index: got,
                                value: Arc::new(value),
                            }),
                            problem: None,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(key = %target.key, "configuration not taken, keeping the last good value: {e}");
                        let e = Arc::new(e);
                        refused = Some(e.clone());
                        tx.send_modify(|w| w.problem = Some(e));
                    }
                }
            }
            Err(e) => {
                query = 0;
                let delay = reconnect.next_delay();
                if reconnect.failures() == 1 {
                    tracing::warn!(key = %target.key, "configuration watch failed, keeping the last good value; retrying: {e}");
                    tx.send_modify(|w| w.problem = Some(Arc::new(ReadError::Registry(e))));
                } else {
                    tracing::debug!(key = %target.key, "configuration watch still failing: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                }
            }
        }
    }
}

/// A running watch of a key or prefix; see the module documentation. Dropping it stops the
/// background task.
#[derive(Debug)]
pub struct ConfigWatch<T> {
    /// The task's latest state.
    rx: watch::Receiver<Watched<T>>,
    /// The blocking-query loop, aborted on drop.
    task: JoinHandle<()>,
    /// The index of the value [`ConfigWatch::next_value`] handed out last.
    delivered: Option<u64>,
}

impl<T> Drop for ConfigWatch<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> ConfigWatch<T> {
    /// The last good value, if one has arrived.
    pub fn current(&self) -> Option<Arc<T>> {
        self.rx.borrow().value.as_ref().map(|v| v.value.clone())
    }

    /// The last good value and the latest problem.
    pub fn state(&self) -> Watched<T> {
        self.rx.borrow().clone()
    }

    /// Waits for the state to change (a new value, or a new problem) and returns it; `None`
    /// when the watch task has ended (it panicked).
    pub async fn changed(&mut self) -> Option<Watched<T>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }

    /// Waits for a value newer than the one this method returned last (the current one, on the
    /// first call, as soon as there is one). Problems in between are skipped; see
    /// [`ConfigWatch::state`] for them.
    pub async fn next_value(&mut self) -> Option<Versioned<T>> {
        let delivered = self.delivered;
        let state = self
            .rx
            .wait_for(|w| {
                w.value
                    .as_ref()
                    .map(|v| v.index)
                    .is_some_and(|i| Some(i) != delivered)
            })
            .await
            .ok()?;
        let value = state.value.clone()?;
        drop(state);
        self.delivered = Some(value.index);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct S {
        a: u32,
    }

    #[test]
    fn decodes_json_toml_and_raw() {
        assert_eq!(
            decode::<S>("k", br#"{"a":1}"#, Format::Json).unwrap(),
            S { a: 1 }
        );
        assert_eq!(
            decode::<S>("k", b"a = 2", Format::Toml).unwrap(),
            S { a: 2 }
        );
        assert_eq!(decode::<String>("k", b"hi", Format::Raw).unwrap(), "hi");
        let err = decode::<S>("k", b"a = ", Format::Toml).unwrap_err();
        assert!(
            matches!(&err, ReadError::Decode { key, format: Format::Toml, .. } if key == "k"),
            "{err}"
        );
        assert!(decode::<String>("k", &[0xff], Format::Raw).is_err());
    }
}
