//! Raft RPCs between agents: JSON to the peer's `/raft/*` routes (see [`crate::http::raft`])
//! through the agent's [`Transport`], with openraft's per-RPC timeouts. Snapshot chunks are the
//! exception: their data travels as raw bytes (see [`encode_snapshot_chunk`]), not as a JSON
//! array of numbers four times its size.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::transport::{PeerRequest, Transport, TransportError};
use super::{Node, NodeId, RaftError, SnapshotMeta, TypeConfig};

/// Everything of an `InstallSnapshotRequest` but its data: the JSON preamble of a chunk.
#[derive(Serialize, serde::Deserialize)]
struct ChunkHeader {
    vote: openraft::Vote<NodeId>,
    meta: SnapshotMeta,
    offset: u64,
    done: bool,
}

/// Encodes one snapshot chunk as a request body: the length of a JSON header (4 bytes,
/// big-endian), the header (vote, meta, offset, done), then the chunk's data as is.
pub fn encode_snapshot_chunk(req: &InstallSnapshotRequest<TypeConfig>) -> Vec<u8> {
    let header = serde_json::to_vec(&ChunkHeader {
        vote: req.vote,
        meta: req.meta.clone(),
        offset: req.offset,
        done: req.done,
    })
    .expect("a snapshot chunk header serialises");
    let len = u32::try_from(header.len()).expect("a chunk header is far below 4 GiB");
    let mut body = Vec::with_capacity(4 + header.len() + req.data.len());
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(&header);
    body.extend_from_slice(&req.data);
    body
}

/// The largest snapshot a member accepts (4 GiB): a bound on the buffer a sender can make
/// this member fill.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

/// Why a body is not a snapshot chunk made by [`encode_snapshot_chunk`], or not one that may
/// follow the chunks received so far (the `/raft/snapshot` route answers it as a 400).
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The body is shorter than the 4-byte length prefix.
    #[error("a snapshot chunk shorter than its length prefix")]
    NoLength,
    /// The length prefix names more header bytes than the body holds.
    #[error("a snapshot chunk header of {len} bytes, but only {available} follow")]
    Truncated {
        /// The header length the prefix gives.
        len: usize,
        /// The bytes after the prefix.
        available: usize,
    },
    /// The header is not the JSON of a chunk header.
    #[error("a bad snapshot chunk header: {0}")]
    Header(#[source] serde_json::Error),
    /// The chunk would leave a gap after the bytes received so far.
    #[error("a snapshot chunk at offset {offset}, but only {received} bytes were received")]
    Hole {
        /// The chunk's offset.
        offset: u64,
        /// Bytes of this snapshot received so far.
        received: u64,
    },
    /// A chunk past the first of a snapshot that is not being received.
    #[error("a chunk at offset {offset} of snapshot {id:?}, which is not being received")]
    NotStarted {
        /// The snapshot's id.
        id: String,
        /// The chunk's offset.
        offset: u64,
    },
    /// The snapshot would grow past [`MAX_SNAPSHOT_BYTES`].
    #[error("a snapshot chunk ending at byte {end}, past the {MAX_SNAPSHOT_BYTES}-byte limit")]
    TooLarge {
        /// Where the chunk would end.
        end: u64,
    },
}

/// Decodes a body made by [`encode_snapshot_chunk`].
pub fn decode_snapshot_chunk(
    body: &[u8],
) -> Result<InstallSnapshotRequest<TypeConfig>, ChunkError> {
    let (len, rest) = body.split_first_chunk::<4>().ok_or(ChunkError::NoLength)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(ChunkError::Truncated {
            len,
            available: rest.len(),
        });
    }
    let (header, data) = rest.split_at(len);
    let header: ChunkHeader = serde_json::from_slice(header).map_err(ChunkError::Header)?;
    Ok(InstallSnapshotRequest {
        vote: header.vote,
        meta: header.meta,
        offset: header.offset,
        data: data.to_vec(),
        done: header.done,
    })
}

/// Creates the connection to each peer; all share one [`Transport`].
#[derive(Clone)]
pub struct NetworkFactory {
    /// What every peer connection sends through.
    transport: Arc<dyn Transport>,
}

impl NetworkFactory {
    /// Peers are reached through `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        NetworkFactory { transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerNetwork {
            transport: self.transport.clone(),
            target,
            addr: node.raft_addr.clone(),
        }
    }
}

/// The connection to one peer.
pub struct PeerNetwork {
    /// What carries the RPCs.
    transport: Arc<dyn Transport>,
    /// The peer's node id, for the remote errors it reports.
    target: NodeId,
    /// The peer's Raft address.
    addr: String,
}

impl PeerNetwork {
    /// Sends one RPC and decodes the peer's `Result` (openraft's own error travels intact).
    async fn call<Resp, E>(
        &self,
        request: Result<PeerRequest, TransportError>,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let request = request.map_err(|e| network(&e))?;
        let reply = self
            .transport
            .send(&self.addr, request)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                e => network(&e),
            })?;
        let result: Result<Resp, RaftError<E>> = reply.json().map_err(|e| network(&e))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// An RPC that failed on the way (not refused by the peer).
fn network<E: std::error::Error + 'static, RE: std::error::Error>(
    e: &E,
) -> RPCError<NodeId, Node, RE> {
    RPCError::Network(NetworkError::new(e))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError>> {
        self.call(PeerRequest::json("/raft/append", &rpc, option.hard_ttl()))
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<InstallSnapshotError>>,
    > {
        let body = encode_snapshot_chunk(&rpc);
        self.call(Ok(PeerRequest::binary(
            "/raft/snapshot",
            body,
            option.hard_ttl(),
        )))
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError>> {
        self.call(PeerRequest::json("/raft/vote", &rpc, option.hard_ttl()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, StoredMembership, Vote};

    #[test]
    fn a_snapshot_chunk_survives_its_encoding() {
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(7, 2),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(7, 2), 1234)),
                last_membership: StoredMembership::default(),
                snapshot_id: "7-2-1234-0".into(),
            },
            offset: 3 << 20,
            data: (0..=255u8).cycle().take(10_000).collect(),
            done: true,
        };
        let body = encode_snapshot_chunk(&req);
        // Raw data plus a small header, not a JSON array of numbers.
        assert!(body.len() < req.data.len() + 1_000, "{} bytes", body.len());
        let back = decode_snapshot_chunk(&body).expect("decodes");
        assert_eq!(back.vote, req.vote);
        assert_eq!(back.meta, req.meta);
        assert_eq!((back.offset, back.done), (req.offset, req.done));
        assert_eq!(back.data, req.data);
    }

    #[test]
    fn a_truncated_snapshot_chunk_is_refused() {
        assert!(matches!(
            decode_snapshot_chunk(&[0, 0]),
            Err(ChunkError::NoLength)
        ));
        assert!(matches!(
            decode_snapshot_chunk(&[0, 0, 0, 9, b'{']),
            Err(ChunkError::Truncated {
                len: 9,
                available: 1
            })
        ));
        assert!(matches!(
            decode_snapshot_chunk(&[0, 0, 0, 2, b'{', b'x']),
            Err(ChunkError::Header(_))
        ));
    }
}
