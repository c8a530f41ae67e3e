//! The open-watch memory row: how much of the agent's resident memory each open SSE watch
//! holds, with many (the issue: 100,000) open at once.
//!
//! The watches are plain sockets that send the request, read until the opening `reset`, and
//! then read nothing: the client's own cost stays small, and the server's RSS before and after
//! opening them, divided by their number, is what one open watch costs the agent. One source
//! address reaches one server port through at most the ephemeral port range (about 28,000
//! ports), so the watches are spread over several loopback source addresses (127.0.0.1,
//! 127.0.0.2, ...).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use super::error::CompareError;
use super::target::Target;
use crate::stats::rss_bytes;

/// Watches opened from one loopback source address: below Linux's default ephemeral port
/// range (32768–60999), so no address runs out of ports.
const PER_SOURCE: usize = 20_000;

/// Watches being opened at once (more overflow the listen backlog, and a dropped SYN is only
/// retried after a second).
const OPENING: usize = 128;

/// File descriptors kept free for everything else the generator and the server hold.
const SPARE_FDS: u64 = 512;

/// What [`watch_memory`] measured.
#[derive(Debug, Clone, Copy)]
pub struct WatchMemory {
    /// Watches held open when RSS was read: the plan's count, or fewer when the open-file
    /// limit ([`watchers_allowed`]) is lower.
    pub watchers: usize,
    /// The server's RSS before the watches were opened.
    pub before: u64,
    /// The server's RSS with every watch open.
    pub after: u64,
}

impl WatchMemory {
    /// Resident bytes per open watch.
    pub fn bytes_per_watcher(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / self.watchers.max(1) as f64
    }
}

/// How many watches fit under the open-file limit: `wanted`, or fewer when the soft limit
/// (`ulimit -n`, which the server started by the suite inherits) is lower. Each watch is a
/// descriptor in the generator and one in the server.
pub fn watchers_allowed(wanted: usize) -> usize {
    match open_files_limit() {
        Some(limit) => wanted.min(limit.saturating_sub(SPARE_FDS) as usize),
        None => wanted,
    }
}

/// The soft `Max open files` of this process, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The socket address of a Signpost agent's `http://ip:port` base URL.
pub fn agent_addr(target: &Target) -> Option<SocketAddr> {
    match target {
        Target::Signpost { base } => base
            .strip_prefix("http://")?
            .trim_end_matches('/')
            .parse()
            .ok(),
        Target::Etcd { .. } => None,
    }
}

/// Opens `watchers` watches of one (empty) service on the Signpost agent at `addr` (process
/// `pid`), waits `settle`, and reads the agent's RSS before and after. The watches are closed
/// when it returns.
pub async fn watch_memory(
    addr: SocketAddr,
    pid: u32,
    watchers: usize,
    settle: Duration,
    pb: &ProgressBar,
) -> Result<WatchMemory, CompareError> {
    let before = rss_bytes(pid).ok_or(CompareError::Rss)?;
    pb.set_length(watchers as u64);
    pb.set_position(0);
    let opening = Arc::new(Semaphore::new(OPENING));
    let mut tasks = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let opening = opening.clone();
        let pb = pb.clone();
        tasks.push(tokio::spawn(async move {
            // The semaphore is never closed, so a permit always comes.
            let _permit = opening.acquire().await.ok();
            let source = Ipv4Addr::new(127, 0, 0, 1 + (i / PER_SOURCE) as u8);
            let stream = open(addr, source).await?;
            pb.inc(1);
            Ok::<_, std::io::Error>(stream)
        }));
    }
    let mut open_watches: Vec<TcpStream> = Vec::with_capacity(watchers);
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(stream)) => open_watches.push(stream),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(source) => {
                return Err(CompareError::Panicked {
                    task: "a watch opener",
                    source,
                })
            }
        }
    }
    if let Some(source) = failure {
        return Err(CompareError::WatchOpen {
            opened: open_watches.len(),
            watchers,
            source,
        });
    }
    tokio::time::sleep(settle).await;
    let after = rss_bytes(pid).ok_or(CompareError::Rss)?;
    drop(open_watches);
    Ok(WatchMemory {
        watchers,
        before,
        after,
    })
}

/// One watch from `source`: the request sent and the opening `reset` read.
async fn open(addr: SocketAddr, source: Ipv4Addr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let mut stream = socket.connect(addr).await?;
    stream
        .write_all(
            format!("GET /api/v1/services/watched/watch HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the watch closed before its reset",
            ));
        }
        got.extend_from_slice(&buf[..n]);
        if !got.starts_with(b"HTTP/1.1 200") && got.len() >= 12 {
            return Err(std::io::Error::other(format!(
                "the watch was refused: {}",
                String::from_utf8_lossy(&got)
                    .lines()
                    .next()
                    .unwrap_or_default()
            )));
        }
        if got.windows(12).any(|w| w == b"event: reset") {
            return Ok(stream);
        }
    }
}
