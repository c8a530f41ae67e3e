//! The KV operations both KV faces (Consul's `/v1/kv/*`, the native `/api/v1/kv/*`) call; each
//! face renders the result its own way.

use std::collections::BTreeSet;
use std::time::Duration;

use signpost_core::kv::{self, KvEntry};
use signpost_core::validate::ValidationError;
use signpost_core::{Command, Response};

use signpost_core::acl::{Access, Resource};

use super::{apply, authorize, Caller, Result, ServiceError};
use crate::agent::Agent;

/// What a KV read asks for.
#[derive(Debug, Clone, Default)]
pub struct KvRead {
    /// The key, or the prefix with `recurse` or `keys`.
    pub key: String,
    /// Every entry under `key`.
    pub recurse: bool,
    /// Only the keys under `key`.
    pub keys: bool,
    /// With `keys`: fold keys at the first `separator` after the prefix.
    pub separator: Option<String>,
}

impl KvRead {
    /// Whether the read names a prefix rather than one key.
    pub fn listing(&self) -> bool {
        self.recurse || self.keys
    }
}

/// What a KV read found.
#[derive(Debug, Clone)]
pub enum KvFound {
    /// The keys under the prefix (`keys`), possibly empty.
    Keys(BTreeSet<String>),
    /// The entries: the one key, or every entry under the prefix (`recurse`), possibly empty.
    Entries(Vec<KvEntry>),
}

/// Checks a key; an empty key is allowed where a prefix is meant (`allow_empty`).
pub fn check_key(key: &str, allow_empty: bool) -> Result<()> {
    if allow_empty && key.is_empty() {
        return Ok(());
    }
    Ok(kv::validate_key(key)?)
}

/// Waits until the KV index of the read's key (or prefix) exceeds `index`, `wait` passes or
/// the agent shuts down.
pub async fn wait(agent: &Agent, read: &KvRead, index: u64, wait: Duration) {
    tokio::select! {
        _ = agent.store().wait_for_kv(&read.key, read.listing(), index, wait) => {}
        _ = agent.closed() => {}
    }
}

/// Reads a key (`key:read`), a prefix's entries or a prefix's keys (those the caller may read:
/// a filtered listing); returns the index of what was read.
pub fn get(agent: &Agent, caller: &Caller, read: &KvRead) -> Result<(u64, KvFound)> {
    check_key(&read.key, read.listing())?;
    if !read.listing() {
        authorize(caller, Resource::Key, &read.key, Access::Read)?;
    }
    let state = agent.store().read();
    let store = state.registry.kv();
    let key = &read.key;
    let index = store.index(key, read.listing());
    let found = if read.keys {
        KvFound::Keys(
            store
                .list(key)
                .filter(|e| caller.sees_key(&e.key))
                .map(|e| match &read.separator {
                    Some(sep) if !sep.is_empty() => match e.key[key.len()..].find(sep.as_str()) {
                        Some(pos) => e.key[..key.len() + pos + sep.len()].to_string(),
                        None => e.key.clone(),
                    },
                    _ => e.key.clone(),
                })
                .collect(),
        )
    } else if read.recurse {
        KvFound::Entries(
            store
                .list(key)
                .filter(|e| caller.sees_key(&e.key))
                .cloned()
                .collect(),
        )
    } else {
        KvFound::Entries(store.get(key).cloned().into_iter().collect())
    };
    Ok((index, found))
}

/// One entry, if set.
pub fn entry(agent: &Agent, key: &str) -> Option<KvEntry> {
    agent.store().read().registry.kv().get(key).cloned()
}

/// Sets `key`; with `cas`, only if its modify index matches (0: only if absent). Returns
/// whether it was written.
pub async fn put(
    agent: &Agent,
    caller: &Caller,
    key: String,
    value: Vec<u8>,
    flags: u64,
    cas: Option<u64>,
) -> Result<bool> {
    check_key(&key, false)?;
    authorize(caller, Resource::Key, &key, Access::Write)?;
    if value.len() > kv::MAX_VALUE_BYTES {
        return Err(ServiceError::TooLarge {
            limit: kv::MAX_VALUE_BYTES,
        });
    }
    let command = Command::KvSet {
        key,
        value,
        flags,
        cas,
    };
    apply(agent, command, |r| match r {
        Response::Kv(ok) => Ok(ok),
        other => Err(Box::new(other)),
    })
    .await
}

/// Deletes `key`, or everything under it with `recurse`; with `cas`, only if its modify index
/// matches. Returns whether anything was deleted.
///
/// Needs `key:write` on `key`; a recursive delete needs it on every key under the prefix (and
/// on the prefix itself), so a token cannot delete what it could not write one by one.
pub async fn delete(
    agent: &Agent,
    caller: &Caller,
    key: String,
    recurse: bool,
    cas: Option<u64>,
) -> Result<bool> {
    if recurse && cas.is_some() {
        return Err(ValidationError::new("cas", "cas cannot be combined with recurse").into());
    }
    check_key(&key, recurse)?;
    authorize(caller, Resource::Key, &key, Access::Write)?;
    if recurse && !caller.unrestricted_caller() {
        let keys: Vec<String> = agent
            .store()
            .read()
            .registry
            .kv()
            .list(&key)
            .map(|e| e.key.clone())
            .collect();
        for k in keys {
            authorize(caller, Resource::Key, &k, Access::Write)?;
        }
    }
    apply(
        agent,
        Command::KvDelete { key, recurse, cas },
        |r| match r {
            Response::Kv(ok) => Ok(ok),
            other => Err(Box::new(other)),
        },
    )
    .await
}
