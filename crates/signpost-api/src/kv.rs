//! The native KV API under `/api/v1/kv/{key}`.

use serde::{Deserialize, Serialize};

/// A KV entry as `GET /api/v1/kv/{key}` (and a successful `PUT`) answers it; `?recurse`
/// answers a JSON array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The full key.
    pub key: String,
    /// The value, base64-encoded (values are arbitrary bytes).
    pub value: String,
    /// Opaque client flags stored with the value.
    #[serde(default)]
    pub flags: u64,
    /// Index of the write that created the key.
    #[serde(default)]
    pub create_index: u64,
    /// Index of the key's last write: what `?cas=` compares against.
    #[serde(default)]
    pub modify_index: u64,
    /// Lock acquisitions (sessions are not supported: always 0).
    #[serde(default)]
    pub lock_index: u64,
}
