//! `compress = [...]` on a route: responses compressed as they stream, negotiated with the
//! client's `Accept-Encoding`, and left alone when they must be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use futures::TryStreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::StreamReader;

use crate::common::{respond, AgentExt, Backend, BoxError, TestAgent, TestGateway};

const MIB: u64 = 1 << 20;
const BIG: u64 = 100 * MIB;
const CHUNK: usize = 256 * 1024;

/// 1 MiB of pseudo-random lower-case text (compressible, not trivially so).
fn text_block() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..MIB)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 80 == 79 {
                b'\n'
            } else {
                b"abcdefghijklmnop qrstuvwxyz etaoin"[(x % 34) as usize]
            }
        })
        .collect()
}

/// What the backend produced of the big body: bytes so far and their running hash.
#[derive(Default)]
struct Produced {
    bytes: AtomicU64,
    hash: Mutex<Sha256>,
}

/// The big body as a stream: `BIG` bytes in 256 KiB chunks, each a rotation of `block`.
fn big_body(
    block: Arc<Vec<u8>>,
    produced: Arc<Produced>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static {
    futures::stream::unfold(0u64, move |n| {
        let (block, produced) = (block.clone(), produced.clone());
        async move {
            if n >= BIG {
                return None;
            }
            let start = ((n / CHUNK as u64) * 7919 % (MIB - CHUNK as u64)) as usize;
            let chunk = Bytes::copy_from_slice(&block[start..start + CHUNK]);
            produced.hash.lock().unwrap().update(&chunk);
            produced.bytes.fetch_add(CHUNK as u64, Ordering::SeqCst);
            Some((Ok(Frame::data(chunk)), n + CHUNK as u64))
        }
    })
}

struct Fixture {
    agent: TestAgent,
    _backend: Backend,
    gw: TestGateway,
    produced: Arc<Produced>,
    text: Arc<Vec<u8>>,
}

/// A backend behind a compressing route: `/c/big` (100 MiB, streamed, no length), `/c/text`
/// (64 KiB of text with its length), `/c/small` (100 bytes), `/c/no-transform`, `/c/png`.
async fn fixture() -> Fixture {
    let agent = TestAgent::start().await;
    let block = Arc::new(text_block());
    let produced = Arc::new(Produced::default());
    let text = Arc::new(block[..64 * 1024].to_vec());
    let backend = {
        let (block, produced, text) = (block.clone(), produced.clone(), text.clone());
        Backend::start(false, move |req| {
            let (block, produced, text) = (block.clone(), produced.clone(), text.clone());
            async move {
                let typed = |mut r: Response<_>, ty: &'static str| {
                    let h: &mut http::HeaderMap = r.headers_mut();
                    h.insert("content-type", ty.parse().unwrap());
                    r
                };
                match req.uri().path() {
                    "/c/big" => {
                        let body = BodyExt::boxed(StreamBody::new(big_body(block, produced)));
                        typed(Response::new(body), "text/plain")
                    }
                    "/c/text" => typed(respond(200, text.to_vec()), "text/plain; charset=utf-8"),
                    "/c/small" => typed(respond(200, vec![b'x'; 100]), "application/json"),
                    "/c/no-transform" => {
                        let mut r = typed(respond(200, text.to_vec()), "text/plain");
                        r.headers_mut()
                            .insert("cache-control", "public, no-transform".parse().unwrap());
                        r
                    }
                    "/c/png" => typed(respond(200, text.to_vec()), "image/png"),
                    _ => respond(404, "no"),
                }
            }
        })
        .await
    };
    agent
        .add_instance("blob", "blob-1", backend.port(), json!({}))
        .await;
    let gw = TestGateway::start(
        &agent,
        r#"
        [[route]]
        prefix = "/c"
        service = "blob"
        compress = ["zstd", "br", "gzip"]
        "#,
    )
    .await;
    gw.wait_upstreams("/c", 1).await;
    Fixture {
        agent,
        _backend: backend,
        gw,
        produced,
        text,
    }
}

/// A decoder for `encoding` over `body`.
fn decoder(
    encoding: &str,
    body: impl tokio::io::AsyncBufRead + Send + Unpin + 'static,
) -> Box<dyn AsyncRead + Send + Unpin> {
    match encoding {
        "zstd" => Box::new(ZstdDecoder::new(body)),
        "br" => Box::new(BrotliDecoder::new(body)),
        "gzip" => Box::new(GzipDecoder::new(body)),
        other => panic!("unexpected encoding {other}"),
    }
}

async fn get(f: &Fixture, path: &str, accept: &str) -> reqwest::Response {
    let resp =
        f.gw.client
            .get(f.gw.url(path))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_100_mib_response_arrives_compressed_and_intact() {
    let f = fixture().await;
    let resp = get(&f, "/c/big", "gzip;q=0.5, zstd, br;q=0.8").await;
    assert_eq!(header(&resp, "content-encoding").as_deref(), Some("zstd"));
    assert_eq!(header(&resp, "vary").as_deref(), Some("Accept-Encoding"));
    assert!(header(&resp, "content-length").is_none());

    let started = Instant::now();
    let wire = Arc::new(AtomicU64::new(0));
    let counted = {
        let wire = wire.clone();
        resp.bytes_stream().map_ok(move |b| {
            wire.fetch_add(b.len() as u64, Ordering::SeqCst);
            b
        })
    };
    let mut decoded = decoder(
        "zstd",
        StreamReader::new(counted.map_err(std::io::Error::other)),
    );
    let mut hash = Sha256::new();
    let mut total = 0u64;
    let mut produced_at_first = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = decoded.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        produced_at_first.get_or_insert_with(|| f.produced.bytes.load(Ordering::SeqCst));
        hash.update(&buf[..n]);
        total += n as u64;
    }
    let produced_at_first = produced_at_first.expect("a body");
    eprintln!(
        "100 MiB through zstd in {:?}: {:.1} MiB on the wire; the upstream had produced {:.1} MiB when the first bytes arrived",
        started.elapsed(),
        wire.load(Ordering::SeqCst) as f64 / MIB as f64,
        produced_at_first as f64 / MIB as f64
    );
    assert_eq!(total, BIG, "every byte arrived");
    assert_eq!(
        hash.finalize().as_slice(),
        f.produced
            .hash
            .lock()
            .unwrap()
            .clone()
            .finalize()
            .as_slice(),
        "the decompressed body is the original"
    );
    assert!(
        wire.load(Ordering::SeqCst) < BIG / 2,
        "the body was compressed"
    );
    // Streaming, not buffering: the client decoded its first bytes while most of the body was
    // still to be produced.
    assert!(
        produced_at_first < BIG / 2,
        "the upstream had produced {} MiB before the client got anything",
        produced_at_first / MIB
    );
    f.gw.shutdown().await;
    f.agent.shutdown().await;
}

#[tokio::test]
async fn each_encoding_round_trips_and_identity_is_honoured() {
    let f = fixture().await;
    for encoding in ["zstd", "br", "gzip"] {
        let resp = get(&f, "/c/text", encoding).await;
        assert_eq!(header(&resp, "content-encoding").as_deref(), Some(encoding));
        assert!(header(&resp, "content-length").is_none());
        let wire = resp.bytes().await.unwrap();
        assert!(
            wire.len() < f.text.len(),
            "{encoding}: {} bytes",
            wire.len()
        );
        let mut out = Vec::new();
        decoder(encoding, std::io::Cursor::new(wire.clone()))
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, *f.text, "{encoding}");
    }

    // identity, an unknown coding, no header: the body as it was, still varying.
    for accept in ["identity", "deflate", "zstd;q=0, br;q=0, gzip;q=0"] {
        let resp = get(&f, "/c/text", accept).await;
        assert!(header(&resp, "content-encoding").is_none(), "{accept}");
        assert_eq!(header(&resp, "vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(
            header(&resp, "content-length"),
            Some(f.text.len().to_string())
        );
        assert_eq!(resp.bytes().await.unwrap(), f.text.as_slice());
    }
    let resp = f.gw.client.get(f.gw.url("/c/text")).send().await.unwrap();
    assert!(header(&resp, "content-encoding").is_none());
    f.gw.shutdown().await;
    f.agent.shutdown().await;
}

#[tokio::test]
async fn no_transform_small_bodies_and_compressed_types_are_left_alone() {
    let f = fixture().await;
    for path in ["/c/no-transform", "/c/small", "/c/png"] {
        let resp = get(&f, path, "gzip, br, zstd").await;
        assert!(header(&resp, "content-encoding").is_none(), "{path}");
        let expected = match path {
            "/c/small" => vec![b'x'; 100],
            _ => f.text.to_vec(),
        };
        assert_eq!(resp.bytes().await.unwrap(), expected, "{path}");
    }
    // The client's own no-transform.
    let resp =
        f.gw.client
            .get(f.gw.url("/c/text"))
            .header("accept-encoding", "gzip")
            .header("cache-control", "no-transform")
            .send()
            .await
            .unwrap();
    assert!(header(&resp, "content-encoding").is_none());
    // HEAD: headers as for GET but never an encoding.
    let resp =
        f.gw.client
            .head(f.gw.url("/c/text"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
    assert!(header(&resp, "content-encoding").is_none());
    f.gw.shutdown().await;
    f.agent.shutdown().await;
}
