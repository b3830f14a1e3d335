//! The "traditional NF" baseline backend: plain sharded maps with **no** clock log, **no**
//! ownership checks and **no** emulation (`execute` ignores tags and issuers).
//!
//! Used only by benchmarks to measure what clock logging and ownership checks cost. It
//! still implements the whole trait (custom ops, callbacks, timers), so the conformance
//! checks that do not involve tags or ownership pass on it too.

use std::collections::{hash_map, BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::embedded::{shard_count, BuildPassThrough, HashedKey, Padded, DEFAULT_SHARDS};
use crate::ops::{self, CustomOps, Subscriptions, TimerQueue};
use crate::types::{
    Clock, CustomOpFn, CustomOpId, KeyFilter, Notification, StateKey, StoreError, TaskId, Timer, Update,
    Value,
};
use crate::StateStore;

type Shard = HashMap<HashedKey, Option<Value>, BuildPassThrough>;

/// Baseline store without clock logs or ownership (benchmarks only).
pub struct LocalStore {
    shards: Box<[Padded<Mutex<Shard>>]>,
    mask: usize,
    customs: CustomOps,
    subs: Subscriptions,
    timers: TimerQueue,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl LocalStore {
    /// A store with the default shard count (same as [`crate::EmbeddedStore::new`]).
    pub fn new() -> Self {
        Self::with_shards(DEFAULT_SHARDS)
    }

    /// A store with `n` shards (rounded up to a power of two, clamped to `1..=65536`).
    pub fn with_shards(n: usize) -> Self {
        let n = shard_count(n);
        LocalStore {
            shards: (0..n)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
            mask: n - 1,
            customs: CustomOps::default(),
            subs: Subscriptions::default(),
            timers: TimerQueue::default(),
        }
    }

    #[inline]
    fn shard(&self, hk: &HashedKey) -> &Mutex<Shard> {
        &self.shards[hk.shard(self.mask)].0
    }

    /// A copy of every key and value, shard by shard: what a checkpointing framework
    /// (FTMB-style, the paper's Figure 12 baseline) saves of an NF's local state, for the
    /// benchmark that compares it with externalized state.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { shards: self.shards.iter().map(|s| s.0.lock().clone()).collect() }
    }
}

/// A copy of a [`LocalStore`]'s state taken by [`LocalStore::checkpoint`].
pub struct Checkpoint {
    shards: Vec<Shard>,
}

impl Checkpoint {
    /// Keys in the copy.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// True when the copy holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StateStore for LocalStore {
    #[inline]
    fn execute(&self, u: &Update) -> Result<Option<Value>, StoreError> {
        if u.op.is_read() {
            return self.get(&u.key);
        }
        let custom = self.customs.resolve(&u.op)?;
        let hk = HashedKey::new(&u.key);
        let mut shard = self.shard(&hk).lock();
        let (res, changed, after) = match shard.entry(hk) {
            hash_map::Entry::Occupied(mut o) => {
                let (res, changed) = ops::apply(o.get_mut(), &u.op, &u.key, custom.as_ref())?;
                let after = if o.get().is_none() {
                    o.remove();
                    None
                } else {
                    Some(o.into_mut())
                };
                (res, changed, after)
            }
            hash_map::Entry::Vacant(v) => {
                let mut val = None;
                let (res, changed) = ops::apply(&mut val, &u.op, &u.key, custom.as_ref())?;
                let after = if val.is_some() { Some(v.insert(val)) } else { None };
                (res, changed, after)
            }
        };
        if changed && self.subs.active() {
            let none = None;
            self.subs.notify(&u.key, after.map_or(&none, |v| &*v), u.tag);
        }
        Ok(res)
    }

    fn execute_nonblocking(&self, u: Update) -> Result<(), StoreError> {
        self.execute(&u).map(|_| ())
    }

    #[inline]
    fn get(&self, key: &StateKey) -> Result<Option<Value>, StoreError> {
        let hk = HashedKey::new(key);
        Ok(self.shard(&hk).lock().get(&hk).cloned().flatten())
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

    /// No clock log: nothing to forget.
    fn gc_below(&self, _watermark: Clock) {}

    /// Always 0 (no clock log).
    fn clock_log_len(&self) -> usize {
        0
    }

    fn snapshot(&self, dag: u32) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for s in self.shards.iter() {
            for (k, v) in s.0.lock().iter() {
                if let (true, Some(v)) = (k.key.dag == dag, v) {
                    out.insert(k.key.to_stable_string(), v.clone());
                }
            }
        }
        out
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{KeyBytes, Op, UpdateTag};

    #[test]
    fn a_checkpoint_is_a_copy_of_every_key() {
        let s = LocalStore::new();
        let key = |i: u64| StateKey::shared(1, 1, 0, KeyBytes::from_u64(i));
        for i in 0..3 {
            assert!(s.execute(&Update::new(key(i), Op::Incr(1), UpdateTag::new(i, 0), 0)).is_ok());
        }
        let c = s.checkpoint();
        assert_eq!(c.len(), 3);
        assert!(s.execute(&Update::new(key(9), Op::Incr(1), UpdateTag::new(9, 0), 0)).is_ok());
        assert_eq!(c.len(), 3, "later updates do not reach the copy");
        assert_eq!(s.checkpoint().len(), 4);
        assert!(LocalStore::new().checkpoint().is_empty());
    }
}
