//! The embedded (in-process) backend: a sharded hash map with per-key clock logs.
//!
//! Design:
//! - Keys are hashed once (FxHash); bits 40.. of the hash pick one of N shards (power of
//!   two), each a `parking_lot::Mutex` around a hash map keyed by the pre-hashed key (the
//!   map's hasher passes the stored hash through, so nothing is hashed twice). There is no
//!   global lock; one key's operations are serialised by its shard lock.
//! - Each key's entry holds its value and its clock log: a `Vec` of `(UpdateTag, result)`
//!   sorted by tag. Tags normally arrive in increasing order, so the emulation check is one
//!   comparison with the last entry and logging is a `push` into a reused buffer (no
//!   allocation once the buffer has grown; integer and empty results are stored inline,
//!   other results boxed). Out-of-order tags (other tasks on a shared key, replays) use a
//!   binary search.
//! - Non-blocking updates are applied synchronously by [`StateStore::execute_nonblocking`]:
//!   a shard-locked in-memory apply costs about as much as queueing would, and it trivially
//!   satisfies the contract (applied before any later read). Its errors are returned.
//!   [`StateStore::flush`] therefore has nothing to do.
//! - Notifications are sent while the shard lock is held (so per-key notification order is
//!   the apply order) with `try_send`: use unbounded channels; a full bounded channel drops
//!   the notification (counted by [`EmbeddedStore::dropped_notifications`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

use parking_lot::Mutex;
use rustc_hash::FxHasher;

use crate::ops::{self, CustomOps, Subscriptions, TimerQueue};
use crate::types::{
    Clock, CustomOpFn, CustomOpId, KeyFilter, Notification, StateKey, StoreError, TaskId, Timer,
    Update, UpdateTag, Value,
};
use crate::StateStore;

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 64;
const MAX_SHARDS: usize = 1 << 16;
const SHARD_SHIFT: u32 = 40;

/// A key together with its precomputed hash.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HashedKey {
    pub(crate) hash: u64,
    pub(crate) key: StateKey,
}

impl PartialEq for HashedKey {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        self.hash == o.hash && self.key == o.key
    }
}
impl Eq for HashedKey {}

impl Hash for HashedKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl HashedKey {
    #[inline]
    pub(crate) fn new(key: &StateKey) -> HashedKey {
        let mut h = FxHasher::default();
        key.hash(&mut h);
        HashedKey {
            hash: h.finish(),
            key: *key,
        }
    }

    #[inline]
    pub(crate) fn shard(&self, mask: usize) -> usize {
        (self.hash >> SHARD_SHIFT) as usize & mask
    }
}

/// Hasher that passes a precomputed `u64` through.
#[derive(Default, Clone, Copy)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by HashedKey; fold anything else in, FNV style.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// `BuildHasher` for [`PassThrough`].
#[derive(Default, Clone, Copy)]
pub(crate) struct BuildPassThrough;

impl BuildHasher for BuildPassThrough {
    type Hasher = PassThrough;
    #[inline]
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// Cache-line aligned wrapper (avoids false sharing between shard locks).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// Shard count rounded to a power of two in `1..=65536`.
pub(crate) fn shard_count(n: usize) -> usize {
    n.clamp(1, MAX_SHARDS).next_power_of_two()
}

/// Logged result of one update; integers and "no result" are stored inline.
#[derive(Debug)]
enum LogResult {
    Nil,
    Int(i64),
    Boxed(Box<Value>),
}

impl LogResult {
    #[inline]
    fn of(v: &Option<Value>) -> LogResult {
        match v {
            None => LogResult::Nil,
            Some(Value::Int(i)) => LogResult::Int(*i),
            Some(other) => LogResult::Boxed(Box::new(other.clone())),
        }
    }

    #[inline]
    fn to_value(&self) -> Option<Value> {
        match self {
            LogResult::Nil => None,
            LogResult::Int(i) => Some(Value::Int(*i)),
            LogResult::Boxed(b) => Some((**b).clone()),
        }
    }
}

#[derive(Debug)]
struct LogEntry {
    tag: UpdateTag,
    res: LogResult,
}

/// One key's state: value (`None` = missing but log still held) and clock log sorted by tag.
#[derive(Debug, Default)]
struct Entry {
    value: Option<Value>,
    log: Vec<LogEntry>,
}

impl Entry {
    #[inline]
    fn logged(&self, tag: UpdateTag) -> Option<&LogEntry> {
        match self.log.last() {
            Some(last) if tag <= last.tag => self
                .log
                .binary_search_by(|e| e.tag.cmp(&tag))
                .ok()
                .map(|i| &self.log[i]),
            _ => None,
        }
    }

    #[inline]
    fn log(&mut self, tag: UpdateTag, res: LogResult) {
        match self.log.last() {
            Some(last) if last.tag > tag => {
                let pos = self.log.partition_point(|e| e.tag < tag);
                self.log.insert(pos, LogEntry { tag, res });
            }
            _ => self.log.push(LogEntry { tag, res }),
        }
    }

    /// Drops log entries below `watermark`; true when the entry can be removed.
    fn gc(&mut self, watermark: Clock) -> bool {
        let n = self.log.partition_point(|e| e.tag.clock < watermark);
        if n > 0 {
            self.log.drain(..n);
            if self.log.capacity() > 256 && self.log.len() * 8 < self.log.capacity() {
                self.log.shrink_to(self.log.len() * 2);
            }
        }
        self.value.is_none() && self.log.is_empty()
    }
}

type Shard = HashMap<HashedKey, Entry, BuildPassThrough>;

/// Sharded in-process state store with per-key clock logs (the default backend).
///
/// See the [module documentation](self) for the design. Safe to share between any number
/// of threads (`Arc<EmbeddedStore>` or `&EmbeddedStore`).
pub struct EmbeddedStore {
    shards: Box<[Padded<Mutex<Shard>>]>,
    mask: usize,
    customs: CustomOps,
    subs: Subscriptions,
    timers: TimerQueue,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// A store with [`DEFAULT_SHARDS`] shards.
    pub fn new() -> Self {
        Self::with_shards(DEFAULT_SHARDS)
    }

    /// A store with `n` shards, rounded up to a power of two and clamped to `1..=65536`.
    pub fn with_shards(n: usize) -> Self {
        let n = shard_count(n);
        let shards = (0..n)
            .map(|_| Padded(Mutex::new(Shard::default())))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        EmbeddedStore {
            shards,
            mask: n - 1,
            customs: CustomOps::default(),
            subs: Subscriptions::default(),
            timers: TimerQueue::default(),
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Number of keys held (including keys whose value was deleted but whose clock log is
    /// still held).
    pub fn key_count(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// Notifications dropped because a bounded subscriber channel was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.subs.dropped()
    }

    #[inline]
    fn shard(&self, hk: &HashedKey) -> &Mutex<Shard> {
        &self.shards[hk.shard(self.mask)].0
    }
}

/// Refuses an update of a per-flow key by a task other than its owner.
#[inline]
pub(crate) fn check_owner(u: &Update) -> Result<(), StoreError> {
    match u.key.owner {
        Some(owner) if owner != u.issuer => Err(StoreError::NotOwner {
            key: u.key.to_string(),
            owner,
            issuer: u.issuer,
        }),
        _ => Ok(()),
    }
}

impl StateStore for EmbeddedStore {
    #[inline]
    fn execute(&self, u: &Update) -> Result<Option<Value>, StoreError> {
        if u.op.is_read() {
            return self.get(&u.key);
        }
        check_owner(u)?;
        let custom = self.customs.resolve(&u.op)?;
        let hk = HashedKey::new(&u.key);
        let mut shard = self.shard(&hk).lock();
        let entry = shard.entry(hk).or_default();
        if let Some(done) = entry.logged(u.tag) {
            return Ok(done.res.to_value());
        }
        let (res, changed) = match ops::apply(&mut entry.value, &u.op, &u.key, custom.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                if entry.value.is_none() && entry.log.is_empty() {
                    shard.remove(&hk);
                }
                return Err(e);
            }
        };
        entry.log(u.tag, LogResult::of(&res));
        if changed && self.subs.active() {
            self.subs.notify(&u.key, &entry.value, u.tag);
        }
        Ok(res)
    }

    fn execute_nonblocking(&self, u: Update) -> Result<(), StoreError> {
        self.execute(&u).map(|_| ())
    }

    #[inline]
    fn get(&self, key: &StateKey) -> Result<Option<Value>, StoreError> {
        let hk = HashedKey::new(key);
        let shard = self.shard(&hk).lock();
        Ok(shard.get(&hk).and_then(|e| e.value.clone()))
    }

    fn register_custom_op(&self, name: &str, f: CustomOpFn) -> Result<CustomOpId, StoreError> {
        self.customs.register(name, f)
    }

    fn custom_op_id(&self, name: &str) -> Option<CustomOpId> {
        self.customs.id(name)
    }

    fn subscribe(&self, filter: KeyFilter, sink: crossbeam_channel::Sender<Notification>) -> u64 {
        self.subs.subscribe(filter, sink)
    }

    fn unsubscribe(&self, id: u64) {
        self.subs.unsubscribe(id)
    }

    fn schedule_timer(
        &self,
        at_ns: u64,
        dag: u32,
        vertex: u32,
        task: Option<TaskId>,
        payload: Vec<u8>,
    ) -> u64 {
        self.timers.schedule(at_ns, dag, vertex, task, payload)
    }

    fn cancel_timer(&self, id: u64) -> bool {
        self.timers.cancel(id)
    }

    fn due_timers(&self, now_ns: u64) -> Vec<Timer> {
        self.timers.due(now_ns)
    }

    fn gc_below(&self, watermark: Clock) {
        for s in self.shards.iter() {
            s.0.lock().retain(|_, e| !e.gc(watermark));
        }
    }

    fn clock_log_len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().values().map(|e| e.log.len()).sum::<usize>())
            .sum()
    }

    fn snapshot(&self, dag: u32) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for s in self.shards.iter() {
            let g = s.0.lock();
            for (k, e) in g.iter() {
                if k.key.dag == dag {
                    if let Some(v) = &e.value {
                        out.insert(k.key.to_stable_string(), v.clone());
                    }
                }
            }
        }
        out
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}

