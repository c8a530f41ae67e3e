//! The query parameters of blocking reads in Consul's style (`index`, `wait`, `consistent`,
//! `dc`, and the KV parameters), shared by the Consul face and the native KV API.

use std::future::Future;
use std::time::Duration;

use signpost_core::model::{BadDuration, Dur};

use super::ApiError;
use crate::agent::Agent;
use crate::service::{self, kv::KvRead};

/// Longest blocking wait Consul allows.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Consul's default blocking wait.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// Consul's query parameters, parsed once per request.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Blocking: the index the client has seen.
    pub index: Option<u64>,
    /// Blocking: how long to wait for a change.
    pub wait: Option<Duration>,
    /// Only passing instances.
    pub passing: bool,
    /// Only instances with every one of these tags.
    pub tags: Vec<String>,
    /// KV: every entry under the key.
    pub recurse: bool,
    /// KV: only the keys under the key.
    pub keys: bool,
    /// KV: the value alone, not JSON.
    pub raw: bool,
    /// KV with `keys`: fold keys at this separator.
    pub separator: Option<String>,
    /// KV: check-and-set index.
    pub cas: Option<u64>,
    /// KV: the client's flags.
    pub flags: Option<u64>,
    /// Consul's check note (accepted, ignored).
    pub note: Option<String>,
    /// Any parameter this agent understands but refuses (`acquire`, `release`, ...).
    pub unsupported: Option<String>,
    /// `?consistent`: read through the leader's read index.
    pub consistent: bool,
}

impl Query {
    /// Parses the query string; `dc` must be this agent's, and `filter` is refused.
    pub fn parse(raw: Option<&str>, datacenter: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request("query", format!("malformed query string: {e}")))?;
        let mut q = Query::default();
        // Consul turns `recurse`, `keys` and `raw` on by their mere presence, whatever the value
        // (py-consul sends `keys=True`); `passing` takes Go's booleans, empty meaning true.
        let present = |_: &str| true;
        let go_bool =
            |v: &str| v.is_empty() || matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True");
        for (key, value) in pairs {
            match key.as_str() {
                "index" => {
                    q.index = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(
                            "index",
                            format!("index must be an unsigned integer, got {value:?}"),
                        )
                    })?)
                }
                "wait" => {
                    let d: Dur = value
                        .parse()
                        .map_err(|e: BadDuration| ApiError::bad_request("wait", e.to_string()))?;
                    q.wait = Some(d.to_std().min(MAX_WAIT));
                }
                "dc" if !value.is_empty() && value != datacenter => {
                    return Err(ApiError::bad_request(
                        "dc",
                        format!(
                            "unknown datacenter {value:?}: this agent serves {datacenter:?} only"
                        ),
                    ));
                }
                "filter" => {
                    return Err(ApiError::bad_request(
                        "filter",
                        "filter expressions are not supported by Signpost; use tag and passing",
                    ))
                }
                "passing" => q.passing = go_bool(&value),
                "tag" => q.tags.push(value),
                "recurse" => q.recurse = present(&value),
                "keys" => q.keys = present(&value),
                "raw" => q.raw = present(&value),
                "separator" => q.separator = Some(value),
                "cas" => {
                    q.cas = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(
                            "cas",
                            format!("cas must be an unsigned integer, got {value:?}"),
                        )
                    })?)
                }
                "flags" => {
                    q.flags = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(
                            "flags",
                            format!("flags must be an unsigned integer, got {value:?}"),
                        )
                    })?)
                }
                "note" => q.note = Some(value),
                "consistent" => q.consistent = present(&value),
                "acquire" | "release" => q.unsupported = Some(key),
                // Accepted and needing no action: stale (local reads are the default), cached,
                // token (until ACLs), near, ns, partition, replace-existing-checks, ...
                _ => {}
            }
        }
        Ok(q)
    }

    /// Waits, for a blocking query, until `wait_for` (a service-layer wait) returns: the
    /// index moved past `index`, the wait passed, or the agent is shutting down.
    /// With `consistent`, first makes the read linearizable (an error if no leader confirms).
    pub async fn block<F, Fut>(&self, agent: &Agent, wait_for: F) -> Result<(), ApiError>
    where
        F: FnOnce(u64, Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        if self.consistent {
            service::linearize(agent).await?;
        }
        if let Some(index) = self.index.filter(|i| *i > 0) {
            let wait = self.wait.unwrap_or(DEFAULT_WAIT);
            // Consul adds up to wait/16 of jitter so that many watchers do not return at once.
            let jitter = rand::random_range(0..=wait.as_millis() as u64 / 16);
            let wait = wait + Duration::from_millis(jitter);
            wait_for(index, wait).await;
        }
        Ok(())
    }
}

impl Query {
    /// Refuses the parameters of sessions and locks, which Signpost does not support.
    pub fn refuse_locks(&self) -> Result<(), ApiError> {
        match &self.unsupported {
            Some(p) => Err(ApiError::bad_request(
                p,
                "sessions and locks (acquire/release) are not supported by Signpost",
            )),
            None => Ok(()),
        }
    }

    /// The KV read these parameters ask for, of `key`.
    pub fn kv_read(&self, key: String) -> KvRead {
        KvRead {
            key,
            recurse: self.recurse,
            keys: self.keys,
            separator: self.separator.clone(),
        }
    }
}
