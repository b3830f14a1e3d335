//! Partition tables (§5.3): which task of a vertex owns each flow partition, from which
//! logical clock on.
//!
//! A splitter hashes a flow onto one of [`PARTITIONS`] partitions of the downstream vertex
//! ([`crate::splitter::SplitRule::packet_partition`]); per-flow state is keyed by that
//! partition, so moving a partition to another task moves no state. Each vertex keeps the
//! history of its assignments as epochs, each valid from a clock on: a message is routed by
//! the epoch of *its* clock, so every sender — however far behind — sends the messages of
//! one clock to the same task, and a scale event is a new epoch starting at the next clock
//! the root hands out. A partition may also have a replica (a cloned straggler, §5.2) that
//! gets a copy of every message.
//!
//! This module only answers "who owns partition p at clock c" and computes rebalanced
//! assignments; it never moves messages and never touches state.

use crate::splitter::PARTITIONS;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// No replica.
pub const NO_REPLICA: u16 = u16::MAX;

/// One assignment of a vertex's partitions, valid from clock `from` until the next epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Epoch {
    /// First clock routed by this epoch.
    pub from: u64,
    /// Owner task (index within the vertex) of each partition.
    pub owner: Vec<u16>,
    /// Replica task of each partition, [`NO_REPLICA`] if none.
    pub replica: Vec<u16>,
    /// Tasks that get broadcast copies (the vertex's active tasks), ascending.
    pub active: Vec<u16>,
}

impl Epoch {
    /// The first epoch of a vertex with `tasks` tasks: contiguous ranges of partitions.
    pub fn initial(tasks: usize) -> Epoch {
        let tasks = tasks.max(1);
        Epoch {
            from: 0,
            owner: (0..PARTITIONS).map(|p| crate::splitter::initial_owner(p, tasks) as u16).collect(),
            replica: vec![NO_REPLICA; PARTITIONS],
            active: (0..tasks as u16).collect(),
        }
    }

    /// Partitions each task owns, by task index (`slots` entries).
    pub fn load(&self, slots: usize) -> Vec<usize> {
        let mut n = vec![0; slots];
        for &o in &self.owner {
            if let Some(x) = n.get_mut(usize::from(o)) {
                *x += 1;
            }
        }
        n
    }

    /// True when task `t` owns or replicates a partition or gets broadcast copies.
    pub fn uses(&self, t: u16) -> bool {
        self.active.contains(&t) || self.owner.contains(&t) || self.replica.contains(&t)
    }
}

/// The partition history of one vertex.
pub struct VertexTable {
    /// The epoch before any change (read without a lock until the first change).
    initial: Arc<Epoch>,
    changed: AtomicBool,
    /// Every epoch, ascending by `from` (the first is `initial`).
    history: RwLock<Vec<Arc<Epoch>>>,
}

impl VertexTable {
    /// A vertex with `tasks` active tasks.
    pub fn new(tasks: usize) -> VertexTable {
        let initial = Arc::new(Epoch::initial(tasks));
        VertexTable {
            history: RwLock::new(vec![Arc::clone(&initial)]),
            initial,
            changed: AtomicBool::new(false),
        }
    }

    /// Calls `f` with the epoch that routes `clock`.
    #[inline]
    pub fn with_epoch<R>(&self, clock: u64, f: impl FnOnce(&Epoch) -> R) -> R {
        if !self.changed.load(Ordering::Acquire) {
            return f(&self.initial);
        }
        let h = self.history.read();
        let i = h.partition_point(|e| e.from <= clock).saturating_sub(1);
        f(&h[i])
    }

    /// The latest epoch.
    pub fn current(&self) -> Arc<Epoch> {
        let h = self.history.read();
        Arc::clone(&h[h.len() - 1])
    }

    /// Adds an epoch; its `from` must not be below the latest one's (an epoch starting at
    /// the same clock replaces it).
    pub fn push(&self, epoch: Epoch) {
        let mut h = self.history.write();
        while h.len() > 1 && h[h.len() - 1].from >= epoch.from {
            h.pop();
        }
        h.push(Arc::new(epoch));
        self.changed.store(true, Ordering::Release);
    }

    /// Applies `f` to the assignment of every clock from `clock` on: the epoch in force at
    /// `clock` is split there, later ones are changed in place.
    pub fn rewrite_from(&self, clock: u64, f: impl Fn(&mut Epoch)) {
        let mut h = self.history.write();
        let i = h.partition_point(|e| e.from <= clock).saturating_sub(1);
        let mut split = (*h[i]).clone();
        f(&mut split);
        let later: Vec<Arc<Epoch>> = h.drain(i + 1..).collect();
        if h[i].from == clock {
            h[i] = Arc::new(split);
        } else {
            split.from = clock;
            h.push(Arc::new(split));
        }
        for e in later {
            let mut e = (*e).clone();
            f(&mut e);
            h.push(Arc::new(e));
        }
        self.changed.store(true, Ordering::Release);
    }

    /// Which of `slots` task slots some epoch routing clocks from `clock` on uses.
    pub fn slots_in_use_from(&self, clock: u64, slots: usize) -> Vec<bool> {
        let h = self.history.read();
        let first = h.partition_point(|e| e.from <= clock).saturating_sub(1);
        let mut used = vec![false; slots];
        for e in &h[first..] {
            for (t, u) in used.iter_mut().enumerate() {
                *u |= e.uses(t as u16);
            }
        }
        used
    }

    /// True when some epoch routing clocks from `clock` on gives a partition a replica.
    pub fn replicas_from(&self, clock: u64) -> bool {
        let h = self.history.read();
        let first = h.partition_point(|e| e.from <= clock).saturating_sub(1);
        h[first..].iter().any(|e| e.replica.iter().any(|&r| r != NO_REPLICA))
    }

    /// Forgets epochs no clock at or above `watermark` can be routed by.
    pub fn forget_below(&self, watermark: u64) {
        let mut h = self.history.write();
        let keep_from = h.partition_point(|e| e.from <= watermark).saturating_sub(1);
        if keep_from > 0 {
            h.drain(..keep_from);
        }
    }
}

/// A moved partition range: the old owner keeps the partitions' messages below `clock`,
/// the new owner gets those from `clock` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// Old owner task.
    pub from: u16,
    /// New owner task.
    pub to: u16,
    /// Partitions moved.
    pub partitions: Vec<u16>,
}

/// Reassigns the partitions of `epoch` so that exactly the tasks in `keep` (a subset of
/// the slots) own them, moving as few partitions as possible: a task that leaves gives its
/// partitions to the least loaded tasks that stay; a task that joins takes partitions from
/// the most loaded. Returns the new owner table and the moves. Replicas are dropped.
pub fn rebalance(epoch: &Epoch, keep: &[u16]) -> (Vec<u16>, Vec<Move>) {
    let mut owner = epoch.owner.clone();
    if keep.is_empty() {
        return (owner, Vec::new());
    }
    let slots = keep.iter().chain(owner.iter()).map(|&t| usize::from(t) + 1).max().unwrap_or(1);
    let mut load = vec![0usize; slots];
    for &o in &owner {
        load[usize::from(o)] += 1;
    }
    // Target loads: an even share each, the remainder going to the tasks that hold the
    // most already (so they give away as little as possible); leaving tasks get 0.
    let mut target = vec![0usize; slots];
    let (share, extra) = (owner.len() / keep.len(), owner.len() % keep.len());
    let mut by_load: Vec<u16> = keep.to_vec();
    by_load.sort_by_key(|&t| (std::cmp::Reverse(load[usize::from(t)]), t));
    for (i, &t) in by_load.iter().enumerate() {
        target[usize::from(t)] = share + usize::from(i < extra);
    }
    // One pass from the last partition: a partition whose owner holds more than its
    // target goes to the staying task furthest below its own (lowest id on ties).
    let mut below: Vec<u16> =
        keep.iter().copied().filter(|&t| load[usize::from(t)] < target[usize::from(t)]).collect();
    for o in owner.iter_mut().rev() {
        let from = usize::from(*o);
        if load[from] <= target[from] {
            continue;
        }
        let Some(i) = (0..below.len()).min_by_key(|&i| {
            (load[usize::from(below[i])] as isize - target[usize::from(below[i])] as isize, below[i])
        }) else {
            break;
        };
        let to = below[i];
        load[from] -= 1;
        load[usize::from(to)] += 1;
        *o = to;
        if load[usize::from(to)] >= target[usize::from(to)] {
            below.swap_remove(i);
        }
    }
    let mut moves: Vec<Move> = Vec::new();
    for (p, (&from, &to)) in epoch.owner.iter().zip(&owner).enumerate() {
        if from == to {
            continue;
        }
        match moves.iter_mut().find(|m| m.from == from && m.to == to) {
            Some(m) => m.partitions.push(p as u16),
            None => moves.push(Move { from, to, partitions: vec![p as u16] }),
        }
    }
    (owner, moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(owner: &[u16], slots: usize) -> Vec<usize> {
        let mut n = vec![0; slots];
        for &o in owner {
            n[usize::from(o)] += 1;
        }
        n
    }

    #[test]
    fn epochs_route_by_clock() {
        let t = VertexTable::new(2);
        assert_eq!(t.with_epoch(5, |e| e.owner[0]), 0);
        let (owner, moves) = rebalance(&t.current(), &[0, 1, 2]);
        assert!(!moves.is_empty());
        let mut e = Epoch { from: 100, owner: owner.clone(), ..Epoch::initial(2) };
        e.active = vec![0, 1, 2];
        t.push(e);
        let moved = moves[0].partitions[0] as usize;
        assert_eq!(t.with_epoch(99, |e| e.owner[moved]), moves[0].from);
        assert_eq!(t.with_epoch(100, |e| e.owner[moved]), moves[0].to);
        t.forget_below(150);
        assert_eq!(t.with_epoch(150, |e| e.owner[moved]), moves[0].to);
    }

    proptest::proptest! {
        /// Any scale from n to m tasks leaves every partition owned by a kept task, the
        /// load within one partition of even, and moves nothing between two kept tasks
        /// that were already balanced.
        #[test]
        fn rebalance_is_even_and_total(n in 1usize..9, m in 1usize..9) {
            let e = Epoch::initial(n);
            let keep: Vec<u16> = (0..m as u16).collect();
            let (owner, moves) = rebalance(&e, &keep);
            let c = counts(&owner, n.max(m));
            for (t, &k) in c.iter().enumerate() {
                if t < m { proptest::prop_assert!(k + 1 >= PARTITIONS / m, "{c:?}"); }
                else { proptest::prop_assert_eq!(k, 0); }
            }
            let moved: usize = moves.iter().map(|mv| mv.partitions.len()).sum();
            let changed = (0..PARTITIONS).filter(|&p| owner[p] != e.owner[p]).count();
            proptest::prop_assert_eq!(moved, changed);
            if n == m { proptest::prop_assert_eq!(moved, 0); }
        }

        /// From any owner table to any set of staying tasks: every partition ends at a
        /// staying task, loads differ by at most one, and only tasks that end with fewer
        /// partitions than they had give any away (no partition moves needlessly).
        #[test]
        fn rebalance_from_any_table_moves_only_what_it_must(
            owners in proptest::collection::vec(0u16..8, PARTITIONS),
            keep_mask in 1u8..=255,
        ) {
            let e = Epoch { owner: owners.clone(), ..Epoch::initial(1) };
            let keep: Vec<u16> = (0..8u16).filter(|t| keep_mask & (1 << t) != 0).collect();
            let (owner, moves) = rebalance(&e, &keep);
            let (before, after) = (counts(&owners, 8), counts(&owner, 8));
            proptest::prop_assert!(owner.iter().all(|o| keep.contains(o)), "{owner:?}");
            let kept: Vec<usize> = keep.iter().map(|&t| after[usize::from(t)]).collect();
            let (lo, hi) = (kept.iter().min().copied().unwrap_or(0), kept.iter().max().copied().unwrap_or(0));
            proptest::prop_assert!(hi - lo <= 1, "{kept:?}");
            let given: usize = (0..8).map(|t| before[t].saturating_sub(after[t])).sum();
            let changed = (0..PARTITIONS).filter(|&p| owner[p] != owners[p]).count();
            proptest::prop_assert_eq!(changed, given, "before {:?} after {:?}", before, after);
            let moved: usize = moves.iter().map(|mv| mv.partitions.len()).sum();
            proptest::prop_assert_eq!(moved, changed);
        }
    }
}
