//! How the agent's batcher groups queued writes into one Raft entry: up to [`MAX_BATCH`]
//! commands and [`MAX_BATCH_BYTES`] of encoded commands, whichever comes first, so that many
//! large registrations never make an entry bigger than the Raft transport takes.

use signpost_core::Command;
use tokio::sync::mpsc::Receiver;

/// Most writes grouped into one Raft entry.
pub const MAX_BATCH: usize = 1024;

/// Most bytes of encoded commands grouped into one Raft entry (a single larger command still
/// travels alone). Well under the Raft transport's 64 MiB body limit.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The length of `command` as the log encodes it (JSON), counted without building it.
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
pub struct Grouper<T> {
    /// A write taken from the queue that did not fit in the previous group: it leads the next.
    carry: Option<((Command, T), usize)>,
    /// Most commands per group.
    max_count: usize,
    /// Most encoded bytes per group.
    max_bytes: usize,
}

impl<T> Grouper<T> {
    /// Groups of at most `max_count` commands and `max_bytes` encoded bytes.
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Grouper {
            carry: None,
            max_count,
            max_bytes,
        }
    }

    /// Fills `group` (empty on entry) with the next writes: waits for the first, then takes
    /// what is already queued while it fits. False when the queue has closed and nothing is
    /// left.
    pub async fn next(
        &mut self,
        queue: &mut Receiver<(Command, T)>,
        group: &mut Vec<(Command, T)>,
    ) -> bool {
        let (first, mut bytes) = match self.carry.take() {
            Some(carried) => carried,
            None => match queue.recv().await {
                Some(p) => {
                    let n = encoded_len(&p.0);
                    (p, n)
                }
                None => return false,
            },
        };
        group.push(first);
        while group.len() < self.max_count {
            let Ok(next) = queue.try_recv() else { break };
            let n = encoded_len(&next.0);
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
    pub fn take_carried(&mut self) -> Option<(Command, T)> {
        self.carry.take().map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut grouper = Grouper::new(MAX_BATCH, MAX_BATCH_BYTES);
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
        let mut grouper = Grouper::new(2, MAX_BATCH_BYTES);
        let mut group = Vec::new();
        assert!(grouper.next(&mut rx, &mut group).await);
        assert_eq!(group.len(), 2);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel(10);
        tx2.send((kv(5 << 20), 0)).await.unwrap();
        tx2.send((kv(1), 1)).await.unwrap();
        let mut grouper = Grouper::new(MAX_BATCH, MAX_BATCH_BYTES);
        let mut group = Vec::new();
        assert!(grouper.next(&mut rx2, &mut group).await);
        assert_eq!(group.len(), 1, "over the byte bound alone");
        assert!(grouper.take_carried().is_some());
        drop(tx);
    }
}
