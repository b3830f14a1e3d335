//! State-change callbacks (§2.1, §4.4): delivers changes of watched state objects to the
//! vertices that declared [`streamnf_dag::NetworkFunction::watches`].
//!
//! [`Watchers`] owns the store subscriptions of one run and turns the store's
//! [`Notification`]s into [`Delivery`]s: which vertex gets which [`StateChange`], at which
//! clock, and with which first update sequence number. Both engines run the deliveries;
//! this module never calls an NF, routes a packet or touches NF state itself.
//!
//! Timers use the same care ([`TimerSeq`]); this module numbers them, the engines run them.
//!
//! Ordering and tags. A callback runs at the clock of the update that caused it. Its own
//! updates must not reuse a tag the watcher's packet inputs use at that clock (the store
//! would emulate them, i.e. drop them), so a callback's sequence numbers start at
//! [`CALLBACK_SEQ_BASE`] + 65 536 × *k*, where *k* counts the callbacks one vertex received
//! at that clock. Each drained batch is delivered in update-tag order, so a
//! single-instance run delivers the same changes in the same order every time.

use crossbeam_channel::{Receiver, Sender};
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::collections::BinaryHeap;
use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use streamnf_dag::{LogicalDag, StateChange, VertexId};
use streamnf_store::{KeyFilter, Notification, StateStore};

/// First update sequence number of callbacks (packet and context inputs count from 0).
pub const CALLBACK_SEQ_BASE: u32 = 0x8000_0000;

/// First update sequence number of timer handlers, which run at the clock of the last
/// packet before them: the *k*-th timer a vertex fires at one clock numbers its updates
/// from `TIMER_SEQ_BASE + 65 536 × k`, clear of that packet's own (from 0) and of callbacks.
pub const TIMER_SEQ_BASE: u32 = 0x4000_0000;

/// Due times of the timers the NFs scheduled and the engine has not fired yet, so the
/// engine asks the store for due timers only when one is due (on Redis that question is a
/// round trip). Shared by the tasks that schedule timers and the root that fires them.
#[derive(Debug)]
pub struct DueTimes {
    heap: parking_lot::Mutex<BinaryHeap<Reverse<u64>>>,
    /// The earliest due time in `heap` (`u64::MAX` when empty), readable without the lock.
    earliest: AtomicU64,
}

impl Default for DueTimes {
    fn default() -> Self {
        DueTimes { heap: parking_lot::Mutex::new(BinaryHeap::new()), earliest: AtomicU64::new(u64::MAX) }
    }
}

impl DueTimes {
    /// Records a timer due at `at_ns`.
    pub fn note(&self, at_ns: u64) {
        self.heap.lock().push(Reverse(at_ns));
        self.earliest.fetch_min(at_ns, Ordering::AcqRel);
    }

    /// True when some recorded timer is due at or before `now_ns`.
    #[inline]
    pub fn any_due(&self, now_ns: u64) -> bool {
        self.earliest.load(Ordering::Acquire) <= now_ns
    }

    /// True when no timer is recorded.
    pub fn is_empty(&self) -> bool {
        self.earliest.load(Ordering::Acquire) == u64::MAX
    }

    /// Forgets the timers due at or before `now_ns` (the store has just handed them out).
    pub fn forget_through(&self, now_ns: u64) {
        let mut heap = self.heap.lock();
        while heap.peek().is_some_and(|Reverse(at)| *at <= now_ns) {
            heap.pop();
        }
        self.earliest.store(heap.peek().map_or(u64::MAX, |Reverse(at)| *at), Ordering::Release);
    }
}

/// Numbers the packet and context inputs one task runs at one clock, per flow partition:
/// two inputs at one clock (a packet and the verdict about it, copies from a broadcast)
/// must not share update tags, or the store would emulate the second one's updates. The
/// `k`-th input of partition `p` at a clock numbers its updates from `p × 2²² + k × 2¹⁶`,
/// below [`TIMER_SEQ_BASE`]. A replay or a clone runs the same inputs of a partition in
/// the same order, so it reissues the same tags.
#[derive(Default)]
pub struct MessageSeq {
    recent: [(u64, u16, u32); 8],
    next: usize,
}

impl MessageSeq {
    /// True when the next input of partition `part` at `clock` is its first one here (its
    /// first sequence number is then `part × 2²²`, whatever other inputs run before it).
    pub fn is_first(&self, clock: u64, part: u16) -> bool {
        !self.recent.iter().any(|e| e.0 == clock && e.1 == part && e.2 > 0)
    }

    /// First sequence number of the next input of partition `part` at `clock`.
    pub fn next(&mut self, clock: u64, part: u16) -> u32 {
        let k = match self.recent.iter_mut().find(|e| e.0 == clock && e.1 == part) {
            Some(e) => {
                e.2 += 1;
                e.2 - 1
            }
            None => {
                self.recent[self.next] = (clock, part, 1);
                self.next = (self.next + 1) % self.recent.len();
                0
            }
        };
        first_input_seq(part) | ((k & 0x3f) << 16)
    }
}

/// Offset, within an input's block of 2¹⁶ sequence numbers, of the logged reads of the keys
/// an asynchronous NF names for it (`NetworkFunction::prefetch`): the `i`-th named key's
/// first read is tagged `first_seq + DECLARED_READ_SEQ + i`, whether it was prefetched or
/// is read when the NF asks, so a replay or a clone reads it under the same tag.
pub const DECLARED_READ_SEQ: u32 = 0x8000;

/// Most keys one input's declared reads may name (the rest are read the ordinary way).
pub const DECLARED_READS_MAX: usize = 64;

/// First sequence number of the first input of partition `part` at a clock (see
/// [`MessageSeq`]).
pub fn first_input_seq(part: u16) -> u32 {
    (u32::from(part) & 0xff) << 22
}

/// Numbers the timers fired at one clock, per vertex (see [`TIMER_SEQ_BASE`]).
#[derive(Default)]
pub struct TimerSeq {
    clock: u64,
    fired: HashMap<VertexId, u32>,
}

impl TimerSeq {
    /// First sequence number of the next timer of `vertex` fired at `clock` (clocks only
    /// grow: a new clock starts the count again).
    pub fn next(&mut self, clock: u64, vertex: VertexId) -> u32 {
        if clock != self.clock {
            self.clock = clock;
            self.fired.clear();
        }
        let k = self.fired.entry(vertex).or_insert(0);
        let first = TIMER_SEQ_BASE.wrapping_add((*k % 0x4000).wrapping_mul(SEQ_PER_CALLBACK));
        *k += 1;
        first
    }
}

/// Sequence numbers one callback may use.
const SEQ_PER_CALLBACK: u32 = 0x1_0000;

/// Per-(vertex, clock) callback counters kept before the oldest are forgotten.
const COUNTERS_KEPT: usize = 1 << 16;

/// One change to hand to one watching vertex.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The watching vertex.
    pub vertex: VertexId,
    /// A hash of the changed key (picks the watcher's task when it has several).
    pub key_hash: u64,
    /// The change.
    pub change: StateChange,
    /// First update sequence number of the callback.
    pub first_seq: u32,
}

/// The subscriptions of one run and the bookkeeping of their deliveries.
pub struct Watchers {
    rx: Receiver<Notification>,
    // Kept so the subscriptions stay alive while the run lasts.
    _tx: Sender<Notification>,
    subscriptions: Vec<u64>,
    /// (watched vertex, object) → (watching vertex, watch index).
    targets: HashMap<(u32, u16), Vec<(VertexId, usize)>>,
    /// Callbacks delivered per (watching vertex, clock).
    counters: BTreeMap<(u64, VertexId), u32>,
}

impl Watchers {
    /// Subscribes to every watched object of `dag`; `None` when no vertex watches anything.
    pub fn subscribe(dag: &LogicalDag, store: &dyn StateStore) -> Option<Watchers> {
        let mut targets: HashMap<(u32, u16), Vec<(VertexId, usize)>> = HashMap::new();
        for (vid, v) in dag.vertices.iter().enumerate() {
            for (i, w) in v.watches.iter().enumerate() {
                targets.entry((w.vertex as u32, w.object)).or_default().push((vid, i));
            }
        }
        if targets.is_empty() {
            return None;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut keys: Vec<&(u32, u16)> = targets.keys().collect();
        keys.sort();
        let subscriptions = keys
            .into_iter()
            .map(|&(vertex, object)| store.subscribe(KeyFilter::object(dag.id, vertex, object), tx.clone()))
            .collect();
        Some(Watchers { rx, _tx: tx, subscriptions, targets, counters: BTreeMap::new() })
    }

    /// Removes the subscriptions from `store`.
    pub fn unsubscribe(&self, store: &dyn StateStore) {
        for &id in &self.subscriptions {
            store.unsubscribe(id);
        }
    }

    /// Takes every notification received so far and returns its deliveries, in update-tag
    /// order (then key order), one per watching vertex.
    pub fn drain(&mut self) -> Vec<Delivery> {
        let mut notes: Vec<Notification> = self.rx.try_iter().collect();
        if notes.is_empty() {
            return Vec::new();
        }
        notes.sort_by(|a, b| a.tag.cmp(&b.tag).then_with(|| a.key.cmp(&b.key)));
        let mut out = Vec::with_capacity(notes.len());
        for n in notes {
            let Some(list) = self.targets.get(&(n.key.vertex, n.key.object)) else { continue };
            let key = n.key.sub.as_bytes().to_vec();
            let key_hash = {
                let mut h = DefaultHasher::new();
                h.write(&key);
                h.finish()
            };
            for &(vertex, watch) in list {
                let k = self.counters.entry((n.tag.clock, vertex)).or_insert(0);
                let first_seq = CALLBACK_SEQ_BASE.wrapping_add(k.wrapping_mul(SEQ_PER_CALLBACK));
                *k = k.wrapping_add(1);
                out.push(Delivery {
                    vertex,
                    key_hash,
                    change: StateChange {
                        watch,
                        key: key.clone(),
                        value: n.value.clone(),
                        clock: n.tag.clock,
                    },
                    first_seq,
                });
            }
        }
        while self.counters.len() > COUNTERS_KEPT {
            self.counters.pop_first();
        }
        out
    }
}
