//! A linearizability checker for a grow-only set: the model of one service's instances under a
//! workload that only registers (adds) instances with distinct ids and reads the whole set.
//!
//! # The argument
//!
//! Linearizability is local (Herlihy & Wing, 1990): a history is linearizable iff the history of
//! every object in it is. Each service is one object, so [`check`] runs per service.
//!
//! Within one object, call the operations' real-time intervals `[invoke, complete]`; an add whose
//! outcome is unknown (timeout, 5xx, broken connection) has `complete = ∞`, an add that certainly
//! failed (never sent) must have no effect, and reads that returned nothing are dropped (a read
//! changes nothing). In a sequential grow-only set the value only grows, so in any linearization:
//!
//! 1. the reads' results form a chain under `⊆`: equal sets form groups `G_1 ⊊ G_2 ⊊ … ⊊ G_k`
//!    (`G_0` being reads of the empty set), and every read of `G_j` is linearized before every
//!    read of `G_{j+1}`;
//! 2. an id in `S_j \ S_{j-1}` (first seen by group `j`) is added after every read of `G_{j-1}`
//!    and before every read of `G_j`; call those adds `D_j`;
//! 3. an acknowledged add seen by no read is after every read (block `D_{k+1}`); an
//!    unknown-outcome add seen by no read may be left out of the linearization.
//!
//! So the linearization, if one exists, is the block sequence
//! `G_0, D_1, G_1, D_2, …, G_k, D_{k+1}`, with only the order *inside* a block free; and inside a
//! block operations commute (adds of distinct ids, reads of equal sets). Such a sequence
//! respects real time iff no operation `b` of a later block completed before an operation `a` of
//! an earlier block was invoked (`complete(b) < invoke(a)`): necessity is the definition;
//! sufficiency because ordering each block by completion time and placing each operation at
//! `max(its invoke, the previous point)` then keeps every point inside its interval. The check is
//! a sweep over the blocks with the running maximum of invoke times, `O(n log n)`.
//!
//! The violations this finds are exactly the anomalies one would name:
//! - an acknowledged add missing from a read that started after the add completed (a lost or
//!   stale write),
//! - a read containing an id whose add was not yet invoked when the read completed, or was never
//!   made, or certainly failed,
//! - two reads whose sets are not ordered by inclusion, or a read that completed before another
//!   started yet saw more (a stale read),
//! - and the subtler one that the three conditions above miss: `y` acknowledged before `x` was
//!   invoked, yet some read saw `x` without `y`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Microseconds since the start of the test; comparisons are all that matter.
pub type Micros = u64;

/// How an add ended, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (2xx): the id is in the set from `complete` on.
    Ok,
    /// Certainly not applied (the request never reached a server).
    Failed,
    /// May or may not have been applied (timeout, 5xx, connection broken mid-request).
    Unknown,
}

/// One add: register the instance `id`.
#[derive(Debug, Clone)]
pub struct Add {
    pub id: u64,
    pub invoke: Micros,
    pub complete: Micros,
    pub outcome: Outcome,
}

/// One read that returned a set.
#[derive(Debug, Clone)]
pub struct Read {
    pub invoke: Micros,
    pub complete: Micros,
    pub set: BTreeSet<u64>,
}

/// The operations on one object (one service).
#[derive(Debug, Clone, Default)]
pub struct History {
    pub adds: Vec<Add>,
    pub reads: Vec<Read>,
}

/// What a passing check saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    pub adds: usize,
    pub acknowledged: usize,
    /// Adds that certainly failed (never reached a server).
    pub failed: usize,
    /// Unknown-outcome adds that some read saw (so they did take effect).
    pub unknown_seen: usize,
    pub reads: usize,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A read returned an id nobody tried to add.
    NeverAdded { id: u64, read: usize },
    /// A read returned an id whose add certainly failed.
    FailedAddSeen { id: u64, read: usize },
    /// Two reads saw sets neither of which contains the other.
    Incomparable {
        a: usize,
        b: usize,
        only_in_a: u64,
        only_in_b: u64,
    },
    /// An acknowledged add is missing from a read that started after the add completed.
    LostAdd { id: u64, read: usize },
    /// A read saw `id` although it completed before the add of `id` was invoked.
    ReadFromFuture { id: u64, read: usize },
    /// `earlier` completed before `later` started, yet `later` saw less (missing `missing`).
    StaleRead {
        earlier: usize,
        later: usize,
        missing: u64,
    },
    /// `first` was acknowledged before `second` was invoked, yet a read saw `second` without
    /// `first`.
    AddOrder {
        first: u64,
        second: u64,
        read: usize,
    },
    /// The history itself is malformed (the harness recorded something impossible).
    Malformed(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NeverAdded { id, read } => {
                write!(f, "read #{read} returned id {id}, which no client added")
            }
            Violation::FailedAddSeen { id, read } => write!(
                f,
                "read #{read} returned id {id}, whose add never reached a server"
            ),
            Violation::Incomparable {
                a,
                b,
                only_in_a,
                only_in_b,
            } => write!(
                f,
                "reads #{a} and #{b} are not ordered by inclusion: #{a} has {only_in_a} but not \
                 {only_in_b}, #{b} the other way round"
            ),
            Violation::LostAdd { id, read } => write!(
                f,
                "add of {id} was acknowledged before read #{read} started, yet the read lacks it"
            ),
            Violation::ReadFromFuture { id, read } => write!(
                f,
                "read #{read} returned {id} although it completed before the add was invoked"
            ),
            Violation::StaleRead {
                earlier,
                later,
                missing,
            } => write!(
                f,
                "read #{earlier} completed before read #{later} started, yet #{later} lacks \
                 {missing}, which #{earlier} saw"
            ),
            Violation::AddOrder {
                first,
                second,
                read,
            } => write!(
                f,
                "add of {first} was acknowledged before add of {second} was invoked, yet read \
                 #{read} saw {second} without {first}"
            ),
            Violation::Malformed(m) => write!(f, "malformed history: {m}"),
        }
    }
}

/// An operation placed in the block sequence. Reads are numbered by their index in
/// `History::reads`.
#[derive(Debug, Clone, Copy)]
enum Op {
    Add(u64),
    Read(usize),
}

/// Checks that `history` (one object's) is linearizable for a grow-only set; see the module doc.
pub fn check(history: &History) -> Result<Checked, Violation> {
    let mut adds: BTreeMap<u64, &Add> = BTreeMap::new();
    for add in &history.adds {
        if add.complete < add.invoke {
            return Err(Violation::Malformed(format!(
                "add {} completes before it is invoked",
                add.id
            )));
        }
        if adds.insert(add.id, add).is_some() {
            return Err(Violation::Malformed(format!("id {} added twice", add.id)));
        }
    }
    for (i, read) in history.reads.iter().enumerate() {
        if read.complete < read.invoke {
            return Err(Violation::Malformed(format!(
                "read #{i} completes before it is invoked"
            )));
        }
    }

    // 1. The reads form a chain under inclusion; group equal sets.
    let mut order: Vec<usize> = (0..history.reads.len()).collect();
    order.sort_by_key(|&i| history.reads[i].set.len());
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        let set = &history.reads[i].set;
        match groups.last_mut() {
            Some(group) if history.reads[group[0]].set == *set => group.push(i),
            Some(group) => {
                let prev = group[0];
                let prev_set = &history.reads[prev].set;
                if let Some(&only_in_prev) = prev_set.difference(set).next() {
                    let only_in_this = *set
                        .difference(prev_set)
                        .next()
                        .expect("a larger set that does not contain a smaller one has its own ids");
                    return Err(Violation::Incomparable {
                        a: prev,
                        b: i,
                        only_in_a: only_in_prev,
                        only_in_b: only_in_this,
                    });
                }
                groups.push(vec![i]);
            }
            None => groups.push(vec![i]),
        }
    }

    // Every id a read returned was added, and not by an add that certainly failed.
    if let Some(group) = groups.last() {
        let read = group[0];
        for id in &history.reads[read].set {
            match adds.get(id) {
                None => return Err(Violation::NeverAdded { id: *id, read }),
                Some(a) if a.outcome == Outcome::Failed => {
                    return Err(Violation::FailedAddSeen { id: *id, read })
                }
                Some(_) => {}
            }
        }
    }

    // 2. The block sequence G_0, D_1, G_1, …, G_k, D_{k+1}.
    let mut blocks: Vec<Vec<Op>> = Vec::new();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    for group in &groups {
        let set = &history.reads[group[0]].set;
        let new: Vec<Op> = set.difference(&seen).map(|id| Op::Add(*id)).collect();
        if !new.is_empty() {
            blocks.push(new);
        }
        blocks.push(group.iter().map(|&r| Op::Read(r)).collect());
        seen.clone_from(set);
    }
    let unseen_acked: Vec<Op> = adds
        .values()
        .filter(|a| a.outcome == Outcome::Ok && !seen.contains(&a.id))
        .map(|a| Op::Add(a.id))
        .collect();
    if !unseen_acked.is_empty() {
        blocks.push(unseen_acked);
    }

    // 3. Sweep: no operation of a block completes before an operation of an earlier block was
    // invoked.
    let invoke = |op: Op| match op {
        Op::Add(id) => adds[&id].invoke,
        Op::Read(r) => history.reads[r].invoke,
    };
    let complete = |op: Op| match op {
        Op::Add(id) => match adds[&id].outcome {
            Outcome::Ok => adds[&id].complete,
            Outcome::Unknown | Outcome::Failed => Micros::MAX,
        },
        Op::Read(r) => history.reads[r].complete,
    };
    // The latest-invoked operation of all earlier blocks.
    let mut latest: Option<Op> = None;
    for block in &blocks {
        if let Some(a) = latest {
            let bound = invoke(a);
            if let Some(&b) = block.iter().find(|&&b| complete(b) < bound) {
                return Err(explain(history, a, b));
            }
        }
        for &op in block {
            if latest.is_none_or(|l| invoke(op) > invoke(l)) {
                latest = Some(op);
            }
        }
    }

    let acknowledged = adds.values().filter(|a| a.outcome == Outcome::Ok).count();
    let failed = adds
        .values()
        .filter(|a| a.outcome == Outcome::Failed)
        .count();
    let unknown_seen = adds
        .values()
        .filter(|a| a.outcome == Outcome::Unknown && seen.contains(&a.id))
        .count();
    Ok(Checked {
        adds: adds.len(),
        acknowledged,
        failed,
        unknown_seen,
        reads: history.reads.len(),
    })
}

/// Names the anomaly behind "`a` is linearized before `b`, but `b` completed before `a` was
/// invoked".
fn explain(history: &History, a: Op, b: Op) -> Violation {
    let reads = &history.reads;
    match (a, b) {
        // b's set strictly contains a's; b completed before a started.
        (Op::Read(earlier_block), Op::Read(later_block)) => Violation::StaleRead {
            earlier: later_block,
            later: earlier_block,
            missing: *reads[later_block]
                .set
                .difference(&reads[earlier_block].set)
                .next()
                .expect("later blocks hold larger sets"),
        },
        // The read lacks id, which was acknowledged before the read started.
        (Op::Read(read), Op::Add(id)) => Violation::LostAdd { id, read },
        // The read saw id but completed before its add was invoked.
        (Op::Add(id), Op::Read(read)) => Violation::ReadFromFuture { id, read },
        // `second` (earlier block) was invoked after `first` was acknowledged; some read saw
        // `second` without `first`.
        (Op::Add(second), Op::Add(first)) => {
            let read = reads
                .iter()
                .position(|r| r.set.contains(&second) && !r.set.contains(&first))
                .expect("adds in different blocks are told apart by some read");
            Violation::AddOrder {
                first,
                second,
                read,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: u64, invoke: Micros, complete: Micros, outcome: Outcome) -> Add {
        Add {
            id,
            invoke,
            complete,
            outcome,
        }
    }

    fn read(invoke: Micros, complete: Micros, ids: &[u64]) -> Read {
        Read {
            invoke,
            complete,
            set: ids.iter().copied().collect(),
        }
    }

    /// Overlapping adds and reads, an unknown add that took effect and one that did not.
    #[test]
    fn a_linearizable_history_passes() {
        let h = History {
            adds: vec![
                add(1, 0, 10, Outcome::Ok),
                add(2, 5, 30, Outcome::Ok),
                add(3, 12, 20, Outcome::Unknown),
                add(4, 40, 50, Outcome::Unknown),
                add(5, 41, 42, Outcome::Failed),
            ],
            reads: vec![
                read(1, 3, &[]),
                read(2, 11, &[1]),
                // Concurrent with add 2: may or may not see it.
                read(12, 14, &[1, 2]),
                read(13, 25, &[1]),
                // After 1 and 2 completed; 3 (unknown) shows up.
                read(31, 35, &[1, 2, 3]),
                read(60, 61, &[1, 2, 3]),
            ],
        };
        let checked = check(&h).unwrap();
        assert_eq!(
            checked,
            Checked {
                adds: 5,
                acknowledged: 2,
                failed: 1,
                unknown_seen: 1,
                reads: 6,
            }
        );
    }

    #[test]
    fn reads_overlapping_each_other_in_any_order_pass() {
        // r0 saw more than r1 although r0 started first: fine, they overlap.
        let h = History {
            adds: vec![add(1, 0, 100, Outcome::Ok)],
            reads: vec![read(10, 30, &[1]), read(20, 40, &[])],
        };
        check(&h).unwrap();
    }

    #[test]
    fn an_acknowledged_add_missing_from_a_later_read_is_lost() {
        let h = History {
            adds: vec![add(1, 0, 10, Outcome::Ok), add(2, 0, 10, Outcome::Ok)],
            reads: vec![read(20, 30, &[1])],
        };
        assert_eq!(check(&h), Err(Violation::LostAdd { id: 2, read: 0 }));
    }

    #[test]
    fn a_read_cannot_see_an_add_invoked_after_it_completed() {
        let h = History {
            adds: vec![add(1, 50, 60, Outcome::Unknown)],
            reads: vec![read(10, 20, &[1])],
        };
        assert_eq!(check(&h), Err(Violation::ReadFromFuture { id: 1, read: 0 }));
    }

    #[test]
    fn a_read_cannot_see_ids_never_added_or_failed() {
        let h = History {
            adds: vec![add(1, 0, 10, Outcome::Failed)],
            reads: vec![read(20, 30, &[7])],
        };
        assert_eq!(check(&h), Err(Violation::NeverAdded { id: 7, read: 0 }));
        let h = History {
            adds: vec![add(1, 0, 10, Outcome::Failed)],
            reads: vec![read(20, 30, &[1])],
        };
        assert_eq!(check(&h), Err(Violation::FailedAddSeen { id: 1, read: 0 }));
    }

    #[test]
    fn a_read_after_another_cannot_see_less() {
        // Add 1 is unknown, so no single read is wrong: only the pair is.
        let h = History {
            adds: vec![add(1, 0, 5, Outcome::Unknown)],
            reads: vec![read(10, 20, &[1]), read(30, 40, &[])],
        };
        assert_eq!(
            check(&h),
            Err(Violation::StaleRead {
                earlier: 0,
                later: 1,
                missing: 1
            })
        );
    }

    #[test]
    fn reads_must_be_ordered_by_inclusion() {
        let h = History {
            adds: vec![add(1, 0, 100, Outcome::Ok), add(2, 0, 100, Outcome::Ok)],
            reads: vec![read(10, 20, &[1]), read(10, 20, &[2])],
        };
        assert!(matches!(check(&h), Err(Violation::Incomparable { .. })));
    }

    /// Every acknowledged add is in every later read, no read sees the future, and the reads
    /// are ordered — yet it is not linearizable: 1 was acknowledged before 2 was invoked, so a
    /// read that sees 2 must see 1.
    #[test]
    fn adds_keep_their_real_time_order() {
        let h = History {
            adds: vec![add(1, 0, 10, Outcome::Ok), add(2, 20, 100, Outcome::Ok)],
            reads: vec![read(5, 30, &[2])],
        };
        assert_eq!(
            check(&h),
            Err(Violation::AddOrder {
                first: 1,
                second: 2,
                read: 0
            })
        );
    }

    #[test]
    fn malformed_histories_are_refused() {
        let h = History {
            adds: vec![add(1, 0, 10, Outcome::Ok), add(1, 20, 30, Outcome::Ok)],
            reads: vec![],
        };
        assert!(matches!(check(&h), Err(Violation::Malformed(_))));
    }
}
