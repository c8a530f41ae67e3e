//! Compression of the agent's own answers: listings, the catalog and KV recursions can run to
//! megabytes of JSON, and a client that says `Accept-Encoding: gzip` (or `br`, `zstd`) gets
//! them compressed. Answers under [`MIN_SIZE`] are not worth it; event streams (the SSE
//! watch) must reach the client frame by frame and are never compressed, nor are images
//! (the UI's are already compressed) or gRPC.

use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;

/// Answers of a known size below this many bytes are sent as they are.
pub const MIN_SIZE: u16 = 1024;

/// The layer the router wraps every answer in.
pub(crate) fn layer() -> CompressionLayer<impl Predicate> {
    let predicate = SizeAbove::new(MIN_SIZE)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    CompressionLayer::new().compress_when(predicate)
}
