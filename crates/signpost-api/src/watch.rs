//! `GET /api/v1/services/{service}/watch`: the events of a service's watch stream.
//!
//! The stream opens with a `reset` carrying the full (filtered) list, then sends `add`,
//! `update` and `remove`, each with the index of its change and the instance concerned; each
//! event's SSE `id` is that index.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::instance::Instance;
use crate::services::InstanceList;
use crate::sse;

/// Name of the event carrying the full list.
pub const RESET: &str = "reset";
/// Name of the event for an instance the watcher did not see before.
pub const ADD: &str = "add";
/// Name of the event for a seen instance that changed.
pub const UPDATE: &str = "update";
/// Name of the event for a seen instance that left (or no longer matches).
pub const REMOVE: &str = "remove";

/// The data of an `add`, `update` or `remove` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceChange<I = Instance> {
    /// The index of the change.
    pub index: u64,
    /// The instance as it is after the change (as it was, for `remove`).
    pub instance: I,
}

/// One event of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent<I = Instance> {
    /// The full list; replaces everything seen before.
    Reset(InstanceList<I>),
    /// An instance the watcher did not see before.
    Add(InstanceChange<I>),
    /// A seen instance changed.
    Update(InstanceChange<I>),
    /// A seen instance left.
    Remove(InstanceChange<I>),
}

/// A watch event whose data is not what its name promises.
#[derive(Debug, thiserror::Error)]
#[error("malformed `{event}` watch event: {source}")]
pub struct DecodeError {
    /// The event's name.
    pub event: String,
    /// What the JSON decoder said.
    #[source]
    pub source: serde_json::Error,
}

impl<I> WatchEvent<I> {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            WatchEvent::Reset(_) => RESET,
            WatchEvent::Add(_) => ADD,
            WatchEvent::Update(_) => UPDATE,
            WatchEvent::Remove(_) => REMOVE,
        }
    }

    /// The index this event brings the watcher to.
    pub fn index(&self) -> u64 {
        match self {
            WatchEvent::Reset(list) => list.index,
            WatchEvent::Add(c) | WatchEvent::Update(c) | WatchEvent::Remove(c) => c.index,
        }
    }
}

impl<I: Serialize> WatchEvent<I> {
    /// The event as one SSE frame (its index as the SSE id).
    pub fn to_frame(&self) -> Result<Bytes, serde_json::Error> {
        let data = match self {
            WatchEvent::Reset(list) => serde_json::to_vec(list)?,
            WatchEvent::Add(c) | WatchEvent::Update(c) | WatchEvent::Remove(c) => {
                serde_json::to_vec(c)?
            }
        };
        Ok(sse::frame(self.name(), self.index(), &data))
    }
}

impl<I: DeserializeOwned> WatchEvent<I> {
    /// Reads a parsed SSE event; `Ok(None)` for events of other names (a client ignores them).
    pub fn from_sse(event: &sse::Event) -> Result<Option<Self>, DecodeError> {
        fn parse<T: DeserializeOwned>(event: &sse::Event) -> Result<T, DecodeError> {
            serde_json::from_str(&event.data).map_err(|source| DecodeError {
                event: event.event.clone(),
                source,
            })
        }
        Ok(Some(match event.event.as_str() {
            RESET => WatchEvent::Reset(parse(event)?),
            ADD => WatchEvent::Add(parse(event)?),
            UPDATE => WatchEvent::Update(parse(event)?),
            REMOVE => WatchEvent::Remove(parse(event)?),
            _ => return Ok(None),
        }))
    }
}
