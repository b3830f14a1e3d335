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

/// Lineages seen at clocks not yet finished, in two generations: the keys admitted since
/// the last prune, and those admitted before it. A prune drops the older generation whole
/// once the watermark has passed the highest clock in it (nothing can repeat those clocks
/// any more), so forgetting costs no per-key work on the path of the packets; a key is kept
/// at most two prunes longer than it must be, which is safe (a repeat is only refused).
/// A set that suppresses (guarantees on) refuses a repeat; one that does not (guarantees
/// off, the naive baseline) lets it through and counts it.
#[derive(Default)]
pub struct Dedupe {
    /// Refuse repeats (else count them as leaked and let them through).
    suppress: bool,
    /// Keys admitted since the last prune, and the highest clock among them.
    young: FxHashMap<u64, u64>,
    young_max: u64,
    /// Keys admitted before the last prune, and the highest clock among them.
    old: FxHashMap<u64, u64>,
    old_max: u64,
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
        let repeat = self.old.contains_key(&key) || self.young.insert(key, clock).is_some();
        if !repeat {
            self.young_max = self.young_max.max(clock);
            return true;
        }
        if self.suppress {
            self.suppressed += 1;
            false
        } else {
            self.leaked += 1;
            true
        }
    }

    /// Forgets keys seen below `watermark` (those clocks are finished: nothing can repeat
    /// them), a generation at a time: the older one goes once every clock in it is below
    /// `watermark`, and the younger one then becomes the older.
    pub fn prune_below(&mut self, watermark: u64) {
        if self.old.is_empty() || self.old_max < watermark {
            self.old.clear();
            if self.young.is_empty() {
                return;
            }
            std::mem::swap(&mut self.old, &mut self.young);
            self.old_max = std::mem::take(&mut self.young_max);
            if self.old_max < watermark {
                self.old.clear();
            }
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.young.is_empty() && self.old.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_passes_and_pruning_keeps_unfinished_clocks() {
        let mut d = Dedupe::new(true);
        for c in 0..1000u64 {
            assert!(d.admit(root_lineage(c), c));
        }
        assert!(!d.admit(root_lineage(7), 7));
        assert_eq!(d.suppressed, 1);
        // Clock 999 is not finished: nothing is forgotten yet.
        d.prune_below(500);
        assert_eq!(d.len(), 1000);
        assert!(!d.admit(root_lineage(7), 7), "a generation goes whole or not at all");
        for c in 1000..2000u64 {
            assert!(d.admit(root_lineage(c), c));
        }
        d.prune_below(1500);
        assert_eq!(d.len(), 1000, "clocks 0..1000 are forgotten, 1000..2000 kept");
        assert!(d.admit(root_lineage(7), 7), "a finished clock is forgotten");
        assert!(!d.admit(root_lineage(1700), 1700), "an unfinished one is not");
        // Once the watermark passes everything, everything goes.
        d.prune_below(5000);
        d.prune_below(5000);
        assert!(d.is_empty(), "{} left", d.len());
    }

    #[test]
    fn without_suppression_repeats_pass_and_are_counted() {
        let mut d = Dedupe::new(false);
        assert!(d.admit(1, 10));
        assert!(d.admit(1, 10));
        d.prune_below(5);
        assert!(d.admit(1, 10), "kept across a prune below its clock");
        assert_eq!((d.leaked, d.suppressed), (2, 0));
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
