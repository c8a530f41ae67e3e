//! The agent's batcher: how queued writes become Raft entries. A group is up to [`MAX_BATCH`]
//! commands and [`MAX_BATCH_BYTES`] of encoded commands, whichever comes first, so that many
//! large registrations never make an entry bigger than the Raft transport takes; up to
//! [`MAX_IN_FLIGHT`] groups are being committed at once.

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use signpost_core::{Command, Response};
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, ProposeError};
use crate::raft::EncodedCommand;

/// Most writes grouped into one Raft entry.
pub const MAX_BATCH: usize = 1024;

/// Most bytes of encoded commands grouped into one Raft entry (a single larger command still
/// travels alone). Well under the Raft transport's 64 MiB body limit.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The length of `command`'s JSON encoding (how it travels between members), counted without
/// building it.
pub fn encoded_len(command: &Command) -> usize {
    /// Counts what is written.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Encoding a command cannot fail (no maps with non-string keys); count what was written.
    let _ = serde_json::to_writer(&mut count, command);
    count.0
}

/// Gathers the queue's waiting writes into groups within the bounds.
pub struct Grouper<P> {
    /// A write taken from the queue that did not fit in the previous group: it leads the next.
    carry: Option<(P, usize)>,
    /// Most commands per group.
    max_count: usize,
    /// Most encoded bytes per group.
    max_bytes: usize,
    /// The encoded size of a write.
    size: fn(&P) -> usize,
}

impl<P> Grouper<P> {
    /// Groups of at most `max_count` writes and `max_bytes` encoded bytes, a write weighing
    /// `size` bytes.
    pub fn new(max_count: usize, max_bytes: usize, size: fn(&P) -> usize) -> Self {
        Grouper {
            carry: None,
            max_count,
            max_bytes,
            size,
        }
    }

    /// Fills `group` (empty on entry) with the next writes: waits for the first, then takes
    /// what is already queued while it fits. False when the queue has closed and nothing is
    /// left.
    pub async fn next(&mut self, queue: &mut Receiver<P>, group: &mut Vec<P>) -> bool {
        let (first, mut bytes) = match self.carry.take() {
            Some(carried) => carried,
            None => match queue.recv().await {
                Some(p) => {
                    let n = (self.size)(&p);
                    (p, n)
                }
                None => return false,
            },
        };
        group.push(first);
        while group.len() < self.max_count {
            let Ok(next) = queue.try_recv() else { break };
            let n = (self.size)(&next);
            if bytes + n > self.max_bytes {
                self.carry = Some((next, n));
                break;
            }
            bytes += n;
            group.push(next);
        }
        true
    }

    /// The write held over for the next group, if any (to refuse it at shutdown).
    pub fn take_carried(&mut self) -> Option<P> {
        self.carry.take().map(|(p, _)| p)
    }
}

/// Most Raft entries the batcher has in flight at once. While one entry's group commit is
/// fsyncing, the next entries are already handed to Raft and wait in the log writer's queue,
/// so the next fsync takes all of them: commits are sized by what is waiting, and a write
/// never waits for another entry's apply and reply before its own fsync can start.
pub const MAX_IN_FLIGHT: usize = 4;

/// A write waiting for the batcher, and where its result goes.
pub type Proposal = (
    EncodedCommand,
    tokio::sync::oneshot::Sender<Result<Response, ProposeError>>,
);

/// The agent's batcher: groups waiting proposals into Raft entries, with up to
/// [`MAX_IN_FLIGHT`] entries being committed at once (each group is whatever queued while
/// the batcher had no room). Stops when `stopping` is cancelled, refusing what is still
/// queued; entries already proposed finish first.
pub(crate) async fn run(
    agent: std::sync::Weak<Agent>,
    mut queue: Receiver<Proposal>,
    stopping: CancellationToken,
) {
    let mut grouper: Grouper<Proposal> =
        Grouper::new(MAX_BATCH, MAX_BATCH_BYTES, |p: &Proposal| p.0.len());
    let mut in_flight = FuturesUnordered::new();
    loop {
        let mut batch: Vec<Proposal> = Vec::new();
        let received = if in_flight.len() >= MAX_IN_FLIGHT {
            // No room: wait for an entry to finish (the queue grows meanwhile).
            tokio::select! {
                _ = in_flight.next() => continue,
                () = stopping.cancelled() => false,
            }
        } else {
            tokio::select! {
                biased;
                Some(()) = in_flight.next() => continue,
                more = grouper.next(&mut queue, &mut batch) => more,
                () = stopping.cancelled() => false,
            }
        };
        if !received {
            refuse(batch);
            break;
        }
        let Some(agent) = agent.upgrade() else {
            refuse(batch);
            break;
        };
        in_flight.push(propose_group(agent, batch));
    }
    queue.close();
    refuse(grouper.take_carried().into_iter().collect());
    while in_flight.next().await.is_some() {}
    while let Ok((_, reply)) = queue.try_recv() {
        let _ = reply.send(Err(ProposeError::Fatal(
            "the agent is shutting down".into(),
        )));
    }
}

/// Answers every write of `batch` that the agent is shutting down.
fn refuse(batch: Vec<Proposal>) {
    for (_, reply) in batch {
        let _ = reply.send(Err(ProposeError::Fatal(
            "the agent is shutting down".into(),
        )));
    }
}

/// Proposes one group as one Raft entry and answers each of its writes.
async fn propose_group(agent: Arc<Agent>, batch: Vec<Proposal>) {
    let (commands, replies): (Vec<EncodedCommand>, Vec<_>) = batch.into_iter().unzip();
    let outcome = agent.cluster().propose_entry(commands).await;
    drop(agent);
    match outcome {
        Ok(Response::Batch(responses)) if responses.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok(response));
            }
        }
        Ok(response) if replies.len() == 1 => {
            let reply = replies.into_iter().next().expect("one reply");
            let _ = reply.send(Ok(response));
        }
        Ok(other) => {
            for reply in replies {
                let _ = reply.send(Err(ProposeError::Fatal(format!(
                    "a batch was answered with {other:?}"
                ))));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_len(p: &(Command, i32)) -> usize {
        encoded_len(&p.0)
    }

    fn kv(n: usize) -> Command {
        Command::KvSet {
            key: "k".into(),
            value: vec![7; n],
            flags: 0,
            cas: None,
        }
    }

    #[tokio::test]
    async fn groups_are_bounded_by_bytes_as_well_as_count() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(100);
        // 10 commands of over 1 MiB encoded each: fewer than 4 fit in 4 MiB.
        for i in 0..10 {
            tx.send((kv(1 << 20), i)).await.unwrap();
        }
        let one = encoded_len(&kv(1 << 20));
        assert!(one > 1 << 20);
        let mut grouper = Grouper::new(MAX_BATCH, MAX_BATCH_BYTES, json_len);
        let mut sizes = Vec::new();
        let mut order = Vec::new();
        drop(tx);
        loop {
            let mut group = Vec::new();
            if !grouper.next(&mut rx, &mut group).await {
                break;
            }
            let bytes: usize = group.iter().map(|(c, _)| encoded_len(c)).sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
            sizes.push(group.len());
            order.extend(group.into_iter().map(|(_, i)| i));
        }
        let per = MAX_BATCH_BYTES / one;
        assert!((1..4).contains(&per));
        assert!(sizes.iter().all(|&n| n <= per), "{sizes:?}");
        assert_eq!(sizes.len(), 10usize.div_ceil(per), "{sizes:?}");
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "nothing lost, in order");
    }

    #[tokio::test]
    async fn small_writes_are_bounded_by_count_and_a_huge_one_travels_alone() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(10);
        for i in 0..5 {
            tx.send((kv(1), i)).await.unwrap();
        }
        let mut grouper = Grouper::new(2, MAX_BATCH_BYTES, json_len);
        let mut group = Vec::new();
        assert!(grouper.next(&mut rx, &mut group).await);
        assert_eq!(group.len(), 2);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel(10);
        tx2.send((kv(5 << 20), 0)).await.unwrap();
        tx2.send((kv(1), 1)).await.unwrap();
        let mut grouper = Grouper::new(MAX_BATCH, MAX_BATCH_BYTES, json_len);
        let mut group = Vec::new();
        assert!(grouper.next(&mut rx2, &mut group).await);
        assert_eq!(group.len(), 1, "over the byte bound alone");
        assert!(grouper.take_carried().is_some());
        drop(tx);
    }
}
