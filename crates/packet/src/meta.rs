//! Packet metadata: the fixed-size annotations the root splitter and the runtime attach
//! to every packet (logical clock, replay/last/first marks, target task).
//!
//! Kept small, `Copy` and serialisable into 16 bytes so a later issue can carry it in an
//! RFC 8300 NSH MD type 2 context header. This module never interprets the marks; the
//! runtime gives them meaning.

use serde::{Deserialize, Serialize};

/// Identifier of a task (an instance of a vertex) in the physical DAG.
pub type TaskId = u32;

/// Marker for "no target task chosen yet".
pub const NO_TASK: TaskId = u32::MAX;

/// Bit set of per-packet marks used by failover, handover and cloning (§5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Marks(pub u8);

impl Marks {
    /// The packet is a replay from the root splitter's packet log (§5.1).
    pub const REPLAYED: Marks = Marks(1);
    /// The last replayed packet, or the last packet of a moved flow sent to the old task (§5.3).
    pub const LAST: Marks = Marks(2);
    /// The first packet of a moved flow sent to the new task (§5.3).
    pub const FIRST: Marks = Marks(4);
    /// A duplicate produced by a straggler's clone (§5.2).
    pub const CLONE: Marks = Marks(8);

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Marks) -> bool {
        self.0 & other.0 == other.0
    }
    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Marks) {
        self.0 |= other.0;
    }
    /// Clears the bits of `other`.
    pub fn remove(&mut self, other: Marks) {
        self.0 &= !other.0;
    }
}

/// Metadata carried with a packet through the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    /// Logical clock assigned by the root splitter; unique and increasing per chain input.
    pub clock: u64,
    /// Replay / last / first / clone marks.
    pub marks: Marks,
    /// Task the packet is addressed to, or [`NO_TASK`].
    pub target_task: TaskId,
    /// Index of the packet in its input trace (0-based), for error messages and tests.
    pub ingress_index: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Meta { clock: 0, marks: Marks::default(), target_task: NO_TASK, ingress_index: 0 }
    }
}

impl Meta {
    /// Size of [`Meta::to_bytes`].
    pub const WIRE_LEN: usize = 24;

    /// Serialises the metadata into a fixed-size big-endian record.
    pub fn to_bytes(&self) -> [u8; Self::WIRE_LEN] {
        let mut out = [0u8; Self::WIRE_LEN];
        out[0..8].copy_from_slice(&self.clock.to_be_bytes());
        out[8] = self.marks.0;
        out[12..16].copy_from_slice(&self.target_task.to_be_bytes());
        out[16..24].copy_from_slice(&self.ingress_index.to_be_bytes());
        out
    }

    /// Inverse of [`Meta::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::WIRE_LEN]) -> Meta {
        let mut c = [0u8; 8];
        c.copy_from_slice(&b[0..8]);
        let mut t = [0u8; 4];
        t.copy_from_slice(&b[12..16]);
        let mut i = [0u8; 8];
        i.copy_from_slice(&b[16..24]);
        Meta {
            clock: u64::from_be_bytes(c),
            marks: Marks(b[8]),
            target_task: u32::from_be_bytes(t),
            ingress_index: u64::from_be_bytes(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn meta_roundtrips(clock: u64, marks: u8, task: u32, idx: u64) {
            let m = Meta { clock, marks: Marks(marks), target_task: task, ingress_index: idx };
            prop_assert_eq!(Meta::from_bytes(&m.to_bytes()), m);
        }
    }

    #[test]
    fn marks_insert_remove() {
        let mut m = Marks::default();
        m.insert(Marks::REPLAYED);
        m.insert(Marks::LAST);
        assert!(m.contains(Marks::REPLAYED) && m.contains(Marks::LAST));
        assert!(!m.contains(Marks::FIRST));
        m.remove(Marks::REPLAYED);
        assert!(!m.contains(Marks::REPLAYED) && m.contains(Marks::LAST));
    }
}
