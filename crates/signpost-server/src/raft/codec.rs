//! How the Raft log's entries and the state machine's snapshots are written on disk.
//!
//! Records written by this build start with a format byte, [`FORMAT_V1`], followed by
//! MessagePack (structs as maps of named fields, enums by variant name). MessagePack describes
//! itself, so every serde shape of the core types (`skip_serializing_if`, `untagged`,
//! `default`) round-trips the same way it does in JSON. Records written before it are JSON
//! objects, which always start with `{` ([`FORMAT_JSON`]); they are still read, so a data
//! directory written by an older build opens.
//!
//! A log entry in format 1 is: the format byte, the payload kind (blank, normal, membership),
//! the log id as three big-endian `u64`s (term, leader node, index), then the payload: nothing,
//! the request as the proposing task encoded it ([`LogRequest`]), or the membership.
//!
//! A write's command is encoded once, in the task that proposes it ([`EncodedCommand`]); the
//! batcher joins the encodings of a group by copying bytes, and the log store writes them as they
//! are: nothing on the one apply path encodes a command again.

use std::sync::Arc;

use openraft::{CommittedLeaderId, EntryPayload, RaftLogId};
use serde::{Deserialize, Serialize};
use signpost_core::{Command, Request};

use super::{Entry, LogId};

/// First byte of a record in this build's format: MessagePack after a fixed header.
pub const FORMAT_V1: u8 = 0x01;

/// First byte of a record written by builds before [`FORMAT_V1`]: a JSON object.
pub const FORMAT_JSON: u8 = b'{';

/// Payload kinds of a format-1 log entry.
const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

/// Length of a format-1 log entry's header: format, kind, term, leader node, index.
const ENTRY_HEADER: usize = 2 + 3 * 8;

/// Why a record cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Encoding a value failed (a serde impl refused it).
    #[error("cannot encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A format-1 record is damaged or holds something else.
    #[error("cannot decode a binary record: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// An older JSON record is damaged.
    #[error("cannot decode a JSON record: {0}")]
    Json(#[from] serde_json::Error),
    /// The record is empty, truncated, or starts with a format byte this build does not know.
    #[error("unknown record format: {0}")]
    Format(String),
}

/// Encodes `value` as MessagePack with named fields (the body of a format-1 record).
pub fn to_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Writes `value` as MessagePack with named fields into `out`.
pub fn write_msgpack<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), CodecError> {
    value.serialize(&mut rmp_serde::Serializer::new(out).with_struct_map())?;
    Ok(())
}

/// A command encoded by the task that proposes it, so the batcher and the log store only copy
/// its bytes.
#[derive(Debug, Clone)]
pub struct EncodedCommand {
    /// The command, for the state machine to apply.
    pub command: Command,
    /// Its MessagePack encoding.
    pub bytes: Vec<u8>,
}

impl EncodedCommand {
    /// Encodes `command`.
    pub fn new(command: Command) -> Result<Self, CodecError> {
        let bytes = to_msgpack(&command)?;
        Ok(EncodedCommand { command, bytes })
    }

    /// Length of the encoding: what the command adds to a log entry.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoding is empty (never, for a real command).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A registry request as the Raft log carries it: the request, and its MessagePack encoding,
/// made once (by the proposer, or when a member receives it) and written to the log as is.
///
/// Between members it travels as the [`Request`] alone, in the same JSON shape as before, so
/// members of different builds understand each other.
#[derive(Debug, Clone)]
pub struct LogRequest {
    /// The request the state machine applies (shared: openraft and the log store's cache
    /// clone entries, and a clone should not copy a batch of commands).
    pub request: Arc<Request>,
    /// `request`'s MessagePack encoding (shared: openraft clones entries it keeps in memory).
    encoded: Arc<[u8]>,
}

impl LogRequest {
    /// Wraps `request`, encoding it.
    pub fn new(request: Request) -> Result<Self, CodecError> {
        let encoded = to_msgpack(&request)?.into();
        Ok(LogRequest {
            request: Arc::new(request),
            encoded,
        })
    }

    /// The request stamped `now_ms` carrying `commands` (one, or a [`Command::Batch`] of
    /// several), built by joining the commands' encodings: no command is encoded again.
    pub fn from_encoded(now_ms: u64, commands: Vec<EncodedCommand>) -> Self {
        let body: usize = commands.iter().map(EncodedCommand::len).sum();
        let mut out = Vec::with_capacity(body + 32);
        out.push(0x82); // a map of two entries
        write_fixstr(&mut out, "now_ms");
        out.push(0xcf); // uint 64
        out.extend_from_slice(&now_ms.to_be_bytes());
        write_fixstr(&mut out, "command");
        let command = if commands.len() == 1 {
            let one = commands.into_iter().next().expect("one command");
            out.extend_from_slice(&one.bytes);
            one.command
        } else {
            out.push(0x81); // the enum's map of one variant
            write_fixstr(&mut out, "Batch");
            out.push(0xdd); // array 32
            let n = u32::try_from(commands.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&n.to_be_bytes());
            let mut list = Vec::with_capacity(commands.len());
            for c in commands {
                out.extend_from_slice(&c.bytes);
                list.push(c.command);
            }
            Command::Batch(list)
        };
        LogRequest {
            request: Arc::new(Request::new(now_ms, command)),
            encoded: out.into(),
        }
    }

    /// The request's MessagePack encoding.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }
}

/// Writes a MessagePack string of under 32 bytes.
fn write_fixstr(out: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() < 32);
    out.push(0xa0 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

impl PartialEq for LogRequest {
    fn eq(&self, other: &Self) -> bool {
        self.request == other.request
    }
}

impl std::fmt::Display for LogRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.request.fmt(f)
    }
}

impl Serialize for LogRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.request.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let request = Request::deserialize(d)?;
        LogRequest::new(request).map_err(serde::de::Error::custom)
    }
}

/// Encodes a log entry in format 1; a normal entry's request is copied as its proposer encoded it.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    let id = entry.get_log_id();
    let (kind, body_len) = match &entry.payload {
        EntryPayload::Blank => (KIND_BLANK, 0),
        EntryPayload::Normal(r) => (KIND_NORMAL, r.encoded.len()),
        EntryPayload::Membership(_) => (KIND_MEMBERSHIP, 64),
    };
    let mut out = Vec::with_capacity(ENTRY_HEADER + body_len);
    out.push(FORMAT_V1);
    out.push(kind);
    out.extend_from_slice(&id.leader_id.term.to_be_bytes());
    out.extend_from_slice(&id.leader_id.node_id.to_be_bytes());
    out.extend_from_slice(&id.index.to_be_bytes());
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(r) => out.extend_from_slice(&r.encoded),
        EntryPayload::Membership(m) => write_msgpack(&mut out, m)?,
    }
    Ok(out)
}

/// Reads a log entry in either format.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    match bytes.first() {
        Some(&FORMAT_V1) => {}
        Some(&FORMAT_JSON) => return Ok(serde_json::from_slice(bytes)?),
        other => return Err(CodecError::Format(format!("log entry starting {other:?}"))),
    }
    if bytes.len() < ENTRY_HEADER {
        return Err(CodecError::Format(format!(
            "log entry of {} bytes, shorter than its header",
            bytes.len()
        )));
    }
    let word = |i: usize| {
        let at = 2 + 8 * i;
        u64::from_be_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
    };
    let log_id = LogId::new(CommittedLeaderId::new(word(0), word(1)), word(2));
    let body = &bytes[ENTRY_HEADER..];
    let payload = match bytes[1] {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => EntryPayload::Normal(LogRequest {
            request: Arc::new(rmp_serde::from_slice(body)?),
            encoded: body.into(),
        }),
        KIND_MEMBERSHIP => EntryPayload::Membership(rmp_serde::from_slice(body)?),
        k => return Err(CodecError::Format(format!("log entry of kind {k}"))),
    };
    Ok(Entry { log_id, payload })
}

/// Encodes a state-machine snapshot of `value` in format 1, straight into one buffer (no
/// intermediate document), sized by `hint` (the previous snapshot's length).
pub fn encode_snapshot<T: Serialize>(value: &T, hint: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(hint.saturating_add(hint / 8).max(64));
    out.push(FORMAT_V1);
    write_msgpack(&mut out, value)?;
    Ok(out)
}

/// Reads a state-machine snapshot in either format, decoding from the bytes in place.
pub fn decode_snapshot<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.first() {
        Some(&FORMAT_V1) => Ok(rmp_serde::from_slice(&bytes[1..])?),
        Some(&FORMAT_JSON) => Ok(serde_json::from_slice(bytes)?),
        other => Err(CodecError::Format(format!("snapshot starting {other:?}"))),
    }
}

#[cfg(test)]
mod tests;
