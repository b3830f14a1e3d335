//! Duplicate suppression by lineage (§5.1, §5.2).
//!
//! Every message in the parallel engine carries a *lineage*: a hash of its logical clock
//! and of the path of emits and routes it took from the root. A replayed input, or the
//! copy a cloned task sends, takes the same path and so gets the same lineage as the
//! original. Sinks, the alert sink, timer scheduling and the receivers of a cloned task's
//! output keep the lineages they have seen at clocks not yet finished and let only the
//! first of each through. This module owns those sets; it never decides what is replayed.

use rustc_hash::FxHashMap;

/// The lineage of the `copy`-th copy (broadcast) of emit `emit` of a message of lineage
/// `parent`, sent along route `route`.
#[inline]
pub fn child_lineage(parent: u64, emit: u32, route: u32, copy: u32) -> u64 {
    mix(parent ^ (u64::from(emit) << 42) ^ (u64::from(route) << 21) ^ u64::from(copy))
}

/// The lineage of an input packet at `clock`.
#[inline]
pub fn root_lineage(clock: u64) -> u64 {
    mix(clock ^ 0x5bd1_e995_0000_0000)
}

/// A derived key for the `k`-th item of kind `kind` (alerts, timers) raised by a message
/// of lineage `lineage`.
#[inline]
pub fn item_key(lineage: u64, kind: u64, k: u32) -> u64 {
    mix(lineage ^ (kind << 56) ^ u64::from(k).rotate_left(24))
}

/// splitmix64's finaliser: a full avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Lineages seen at clocks not yet finished, with the clock each was seen at. Keys are also
/// kept in arrival order, so forgetting finished clocks pops from the front instead of
/// scanning the set (arrival is nearly clock order; a key behind a later clock just waits).
/// A set that suppresses (guarantees on) refuses a repeat; one that does not (guarantees
/// off, the naive baseline) lets it through and counts it.
#[derive(Default)]
pub struct Dedupe {
    /// Refuse repeats (else count them as leaked and let them through).
    suppress: bool,
    seen: FxHashMap<u64, u64>,
    order: std::collections::VecDeque<(u64, u64)>,
    /// Duplicates refused so far.
    pub suppressed: u64,
    /// Duplicates seen while not suppressing (guarantees off): counted, let through.
    pub leaked: u64,
}

impl Dedupe {
    /// An empty set; `suppress`: refuse repeats.
    pub fn new(suppress: bool) -> Dedupe {
        Dedupe { suppress, ..Dedupe::default() }
    }

    /// Records `key` seen at `clock`; true when it may go through: the first time, or any
    /// time in a set that does not suppress (a repeat is then counted as leaked).
    #[inline]
    pub fn admit(&mut self, key: u64, clock: u64) -> bool {
        if self.suppress {
            self.first(key, clock)
        } else {
            self.count(key, clock)
        }
    }

    /// Records `key` seen at `clock`; true the first time.
    #[inline]
    fn first(&mut self, key: u64, clock: u64) -> bool {
        match self.seen.insert(key, clock) {
            None => {
                self.order.push_back((clock, key));
                true
            }
            Some(_) => {
                self.suppressed += 1;
                false
            }
        }
    }

    /// Records `key` without suppressing: counts a repeat as leaked. Returns true.
    #[inline]
    fn count(&mut self, key: u64, clock: u64) -> bool {
        if self.seen.insert(key, clock).is_some() {
            self.leaked += 1;
        } else {
            self.order.push_back((clock, key));
        }
        true
    }

    /// Forgets keys seen below `watermark` (those clocks are finished: nothing can repeat
    /// them), oldest first, stopping at the first key of an unfinished clock.
    pub fn prune_below(&mut self, watermark: u64) {
        while let Some(&(clock, key)) = self.order.front() {
            if clock >= watermark {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&key).is_some_and(|&c| c < watermark) {
                self.seen.remove(&key);
            }
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_passes_and_pruning_keeps_unfinished_clocks() {
        let mut d = Dedupe::default();
        for c in 0..3000u64 {
            assert!(d.first(root_lineage(c), c));
        }
        assert!(!d.first(root_lineage(7), 7));
        assert_eq!(d.suppressed, 1);
        d.prune_below(2000);
        assert_eq!(d.len(), 1000);
        assert!(d.first(root_lineage(7), 7), "a finished clock is forgotten");
        assert!(!d.first(root_lineage(2500), 2500), "an unfinished one is not");
    }

    #[test]
    fn lineages_of_different_paths_differ() {
        let r = root_lineage(42);
        let a = child_lineage(r, 0, 0, 0);
        assert_ne!(a, child_lineage(r, 1, 0, 0));
        assert_ne!(a, child_lineage(r, 0, 1, 0));
        assert_ne!(a, child_lineage(r, 0, 0, 1));
        assert_ne!(a, child_lineage(root_lineage(43), 0, 0, 0));
        assert_eq!(a, child_lineage(root_lineage(42), 0, 0, 0));
    }
}
