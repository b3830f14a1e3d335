//! Client-side caching of per-flow state at its owning task (§4.4, "caching"): a
//! [`CachedStore`] wraps any [`StateStore`] (the embedded store or Redis) and keeps the
//! per-flow keys its tasks own in process.
//!
//! Only the owner task may update a per-flow key, so the owner's copy is always the latest:
//! the owner's reads are served from the cache, and its updates are applied to the cached
//! value at once (the result returned from it) and sent to the wrapped store as
//! non-blocking updates, which the store applies and logs under their clock tags as usual.
//! Everyone else — other tasks reading the key, shared keys, timers, callbacks — goes to the
//! wrapped store, which applies pending non-blocking updates of a key before any later read
//! of it. So what other tasks see, the final state and the clock logs are those of the
//! uncached store.
//!
//! Shared objects declared *read-heavy* ([`CachedStore::with_read_heavy`], from the NFs'
//! `StateObjectSpec::read_heavy`) are cached too, with invalidation: their updates still go
//! to the store and wait for it (the store serialises them), and drop the cached copy; a
//! change made through another store instance (another process on the same Redis) reaches
//! this one as a store notification and drops the copy as well.
//!
//! What this module never does: answer a read of a shared key that is not read-heavy, or
//! hide an update from the store. Limits: a replayed update (a repeated clock
//! tag, after a failover) would be applied to the cache twice, so a run that replays must
//! call [`CachedStore::invalidate`] first; each shard holds at most [`MAX_PER_SHARD`] keys
//! and forgets all of them when full (the store still has them).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustc_hash::{FxHashMap, FxHasher};

use crate::types::{
    Clock, CustomOpFn, CustomOpId, KeyFilter, Notification, Op, StateKey, StoreError, TaskId, Timer, Update,
    Value,
};
use crate::{ops, StateStore};

/// Shards of the cache (a power of two).
const SHARDS: usize = 64;
/// Keys one shard holds before it forgets them all.
pub const MAX_PER_SHARD: usize = 1 << 16;

/// A [`StateStore`] that caches per-flow keys at their owner (see the module docs).
pub struct CachedStore {
    inner: Arc<dyn StateStore>,
    shards: Vec<Mutex<FxHashMap<StateKey, Option<Value>>>>,
    customs: RwLock<FxHashMap<u16, CustomOpFn>>,
    /// Read-heavy shared objects: (dag, vertex, object).
    read_heavy: Vec<(u32, u32, u16)>,
    /// Invalidations from the store's notifications (read-heavy objects only).
    invalidations: Option<crossbeam_channel::Receiver<Notification>>,
    subscriptions: Vec<u64>,
}

impl CachedStore {
    /// Caches per-flow keys in front of `inner`.
    pub fn new(inner: Arc<dyn StateStore>) -> CachedStore {
        CachedStore {
            inner,
            shards: (0..SHARDS).map(|_| Mutex::new(FxHashMap::default())).collect(),
            customs: RwLock::new(FxHashMap::default()),
            read_heavy: Vec::new(),
            invalidations: None,
            subscriptions: Vec::new(),
        }
    }

    /// Like [`CachedStore::new`], also caching the shared objects `(dag, vertex, object)`
    /// listed in `read_heavy`, invalidated on every change the store reports.
    pub fn with_read_heavy(inner: Arc<dyn StateStore>, read_heavy: Vec<(u32, u32, u16)>) -> CachedStore {
        let mut s = CachedStore::new(inner);
        if !read_heavy.is_empty() {
            let (tx, rx) = crossbeam_channel::unbounded();
            s.subscriptions = read_heavy
                .iter()
                .map(|&(dag, vertex, object)| {
                    s.inner.subscribe(KeyFilter::object(dag, vertex, object), tx.clone())
                })
                .collect();
            s.invalidations = Some(rx);
            s.read_heavy = read_heavy;
        }
        s
    }

    fn is_read_heavy(&self, key: &StateKey) -> bool {
        key.owner.is_none() && self.read_heavy.contains(&(key.dag, key.vertex, key.object))
    }

    /// Drops the cached copies of read-heavy keys the store reported changed.
    fn apply_invalidations(&self) {
        if let Some(rx) = &self.invalidations {
            for n in rx.try_iter() {
                self.shard(&n.key).lock().remove(&n.key);
            }
        }
    }

    /// A read of a read-heavy shared key: the cached copy, else the store's (then cached).
    fn read_heavy_get(&self, key: &StateKey) -> Result<Option<Value>, StoreError> {
        self.apply_invalidations();
        let mut shard = self.shard(key).lock();
        if let Some(v) = shard.get(key) {
            return Ok(v.clone());
        }
        let v = self.inner.get(key)?;
        if shard.len() >= MAX_PER_SHARD {
            shard.clear();
        }
        shard.insert(*key, v.clone());
        Ok(v)
    }

    /// An update of a read-heavy shared key: through the store, waiting for it; the cached
    /// copy is dropped.
    fn read_heavy_update(&self, u: &Update) -> Result<Option<Value>, StoreError> {
        let r = self.inner.execute(u);
        self.shard(&u.key).lock().remove(&u.key);
        r
    }

    /// Forgets every cached key (before replaying updates, or after another process
    /// changed owned keys).
    pub fn invalidate(&self) {
        for s in &self.shards {
            s.lock().clear();
        }
    }

    /// Number of cached keys.
    pub fn cached_keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn shard(&self, key: &StateKey) -> &Mutex<FxHashMap<StateKey, Option<Value>>> {
        let mut h = FxHasher::default();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) & (SHARDS - 1)]
    }

    /// The owner's update of a per-flow key: applied to the cached value, sent on without
    /// waiting. Returns the op's result.
    fn owner_update(&self, u: Update) -> Result<Option<Value>, StoreError> {
        let custom = match &u.op {
            Op::Custom { op, .. } => {
                Some(self.customs.read().get(&op.0).cloned().ok_or(StoreError::UnknownCustomOp(op.0))?)
            }
            _ => None,
        };
        let mut shard = self.shard(&u.key).lock();
        let mut value = match shard.get(&u.key) {
            Some(v) => v.clone(),
            None => self.inner.get(&u.key)?,
        };
        let (res, _changed) = ops::apply(&mut value, &u.op, &u.key, custom.as_ref())?;
        if shard.len() >= MAX_PER_SHARD {
            shard.clear();
        }
        // A deleted key is remembered as missing until the shard is cleared.
        shard.insert(u.key, value);
        drop(shard);
        self.inner.execute_nonblocking(u)?;
        Ok(res)
    }

    fn is_owned_by_issuer(u: &Update) -> bool {
        u.key.owner == Some(u.issuer)
    }
}

impl Drop for CachedStore {
    fn drop(&mut self) {
        for &id in &self.subscriptions {
            self.inner.unsubscribe(id);
        }
    }
}

impl StateStore for CachedStore {
    fn execute(&self, u: &Update) -> Result<Option<Value>, StoreError> {
        if self.is_read_heavy(&u.key) {
            return if u.op.is_read() { self.read_heavy_get(&u.key) } else { self.read_heavy_update(u) };
        }
        if !Self::is_owned_by_issuer(u) {
            return self.inner.execute(u);
        }
        if u.op.is_read() {
            let mut shard = self.shard(&u.key).lock();
            if let Some(v) = shard.get(&u.key) {
                return Ok(v.clone());
            }
            let v = self.inner.get(&u.key)?;
            if shard.len() >= MAX_PER_SHARD {
                shard.clear();
            }
            shard.insert(u.key, v.clone());
            return Ok(v);
        }
        self.owner_update(u.clone())
    }

    fn execute_nonblocking(&self, u: Update) -> Result<(), StoreError> {
        if self.is_read_heavy(&u.key) {
            return self.read_heavy_update(&u).map(|_| ());
        }
        if Self::is_owned_by_issuer(&u) && !u.op.is_read() {
            return self.owner_update(u).map(|_| ());
        }
        self.inner.execute_nonblocking(u)
    }

    /// Cached keys (owned per-flow keys read by their owner, read-heavy shared keys) come
    /// from the cache; the rest go to the wrapped store in one batch, and the cacheable ones
    /// among them are cached. Logged reads take [`StateStore::execute`]'s path one by one.
    fn execute_reads(&self, reads: &[Update], out: &mut Vec<Result<Option<Value>, StoreError>>) {
        self.apply_invalidations();
        let start = out.len();
        let mut misses: Vec<Update> = Vec::new();
        let mut miss_at: Vec<usize> = Vec::new();
        for (i, u) in reads.iter().enumerate() {
            if u.op == Op::LoggedGet {
                // Logged reads keep their own path (applied to the cache, logged in the store).
                out.push(self.execute(u));
                continue;
            }
            let cacheable = self.is_read_heavy(&u.key) || Self::is_owned_by_issuer(u);
            let hit = if cacheable && u.op.is_read() {
                self.shard(&u.key).lock().get(&u.key).cloned()
            } else {
                None
            };
            match hit {
                Some(v) => out.push(Ok(v)),
                None => {
                    out.push(Ok(None));
                    misses.push(u.clone());
                    miss_at.push(start + i);
                }
            }
        }
        if misses.is_empty() {
            return;
        }
        let mut fetched = Vec::with_capacity(misses.len());
        self.inner.execute_reads(&misses, &mut fetched);
        for ((u, at), r) in misses.iter().zip(miss_at).zip(fetched) {
            if let Ok(v) = &r {
                if self.is_read_heavy(&u.key) || Self::is_owned_by_issuer(u) {
                    let mut shard = self.shard(&u.key).lock();
                    if shard.len() >= MAX_PER_SHARD {
                        shard.clear();
                    }
                    // Another read may have cached it meanwhile: keep the first copy.
                    shard.entry(u.key).or_insert_with(|| v.clone());
                }
            }
            out[at] = r;
        }
    }

    fn get(&self, key: &StateKey) -> Result<Option<Value>, StoreError> {
        if self.is_read_heavy(key) {
            return self.read_heavy_get(key);
        }
        self.inner.get(key)
    }

    fn register_custom_op(&self, name: &str, f: CustomOpFn) -> Result<CustomOpId, StoreError> {
        let id = self.inner.register_custom_op(name, Arc::clone(&f))?;
        self.customs.write().entry(id.0).or_insert(f);
        Ok(id)
    }

    fn custom_op_id(&self, name: &str) -> Option<CustomOpId> {
        self.inner.custom_op_id(name)
    }

    fn subscribe(&self, filter: KeyFilter, sink: crossbeam_channel::Sender<Notification>) -> u64 {
        self.inner.subscribe(filter, sink)
    }

    fn unsubscribe(&self, id: u64) {
        self.inner.unsubscribe(id)
    }

    fn schedule_timer(
        &self,
        at_ns: u64,
        dag: u32,
        vertex: u32,
        task: Option<TaskId>,
        payload: Vec<u8>,
    ) -> u64 {
        self.inner.schedule_timer(at_ns, dag, vertex, task, payload)
    }

    fn cancel_timer(&self, id: u64) -> bool {
        self.inner.cancel_timer(id)
    }

    fn due_timers(&self, now_ns: u64) -> Vec<Timer> {
        self.inner.due_timers(now_ns)
    }

    fn gc_below(&self, watermark: Clock) {
        self.inner.gc_below(watermark)
    }

    fn clock_log_len(&self) -> usize {
        self.inner.clock_log_len()
    }

    fn snapshot(&self, dag: u32) -> BTreeMap<String, Value> {
        let _ = self.inner.flush();
        self.inner.snapshot(dag)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{KeyBytes, UpdateTag};
    use crate::EmbeddedStore;
    use proptest::prelude::*;

    fn cached() -> CachedStore {
        CachedStore::new(Arc::new(EmbeddedStore::new()))
    }

    #[test]
    fn conformance_without_replays() {
        crate::conformance::run_untagged(&cached);
    }

    #[test]
    fn the_owner_reads_its_cache_and_everyone_else_the_store() {
        let s = cached();
        let k = StateKey::per_flow(1, 2, 3, 0, KeyBytes::new(b"flow"));
        let incr = |clock| Update::new(k, Op::Incr(5), UpdateTag::new(clock, 0), 3);
        assert_eq!(s.execute(&incr(1)), Ok(Some(Value::Int(5))));
        assert_eq!(s.execute(&incr(2)), Ok(Some(Value::Int(10))));
        assert_eq!(s.cached_keys(), 1);
        // Another task reads through the store, which has every update.
        assert_eq!(s.execute(&Update::new(k, Op::Get, UpdateTag::new(3, 0), 4)), Ok(Some(Value::Int(10))));
        assert_eq!(s.inner.get(&k), Ok(Some(Value::Int(10))));
        // Another task may not update it; the store says so.
        assert!(matches!(
            s.execute(&Update::new(k, Op::Incr(1), UpdateTag::new(4, 0), 4)),
            Err(StoreError::NotOwner { .. })
        ));
        // The clock log is the store's: the updates are logged there.
        assert!(s.clock_log_len() >= 2);
    }

    #[test]
    fn read_heavy_shared_keys_are_cached_and_dropped_on_any_change() {
        let inner: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
        let s = CachedStore::with_read_heavy(Arc::clone(&inner), vec![(1, 2, 0)]);
        let k = StateKey::shared(1, 2, 0, KeyBytes::new(b"port"));
        let set = |v, clock| Update::new(k, Op::Set(Value::Int(v)), UpdateTag::new(clock, 0), 0);
        s.execute(&set(7, 1)).expect("set");
        assert_eq!(s.get(&k), Ok(Some(Value::Int(7))));
        assert_eq!(s.cached_keys(), 1, "cached after the first read");
        // Through this store: the copy is dropped at once.
        s.execute(&set(8, 2)).expect("set");
        assert_eq!(s.get(&k), Ok(Some(Value::Int(8))));
        // Behind its back (another instance on the same store): the notification drops it.
        inner.execute(&set(9, 3)).expect("set");
        assert_eq!(s.get(&k), Ok(Some(Value::Int(9))));
        // Other shared objects are never cached.
        let other = StateKey::shared(1, 2, 1, KeyBytes::new(b"n"));
        s.execute(&Update::new(other, Op::Incr(1), UpdateTag::new(4, 0), 0)).expect("incr");
        inner.execute(&Update::new(other, Op::Incr(1), UpdateTag::new(5, 0), 0)).expect("incr");
        assert_eq!(s.get(&other), Ok(Some(Value::Int(2))));
    }

    #[derive(Clone, Debug)]
    enum Step {
        Incr(u8, i64),
        Set(u8, i64),
        Delete(u8),
        Push(u8),
        Pop(u8),
        Get(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..4u8, -5..5i64).prop_map(|(k, d)| Step::Incr(k, d)),
            (0..4u8, -5..5i64).prop_map(|(k, v)| Step::Set(k, v)),
            (0..4u8).prop_map(Step::Delete),
            (4..6u8).prop_map(Step::Push),
            (4..6u8).prop_map(Step::Pop),
            (0..6u8).prop_map(Step::Get),
        ]
    }

    proptest! {
        /// Any sequence of owner updates and reads gives the same results, final snapshot
        /// and clock log with the cache as without: no update lost or doubled.
        #[test]
        fn caching_changes_nothing_but_speed(steps in prop::collection::vec((step(), any::<bool>()), 1..60)) {
            let plain = EmbeddedStore::new();
            let c = cached();
            for (i, (st, nonblocking)) in steps.into_iter().enumerate() {
                let (key, op) = match st {
                    Step::Incr(k, d) => (k, Op::Incr(d)),
                    Step::Set(k, v) => (k, Op::Set(Value::Int(v))),
                    Step::Delete(k) => (k, Op::Delete),
                    Step::Push(k) => (k, Op::Push { back: true, item: vec![k] }),
                    Step::Pop(k) => (k, Op::Pop { back: false }),
                    Step::Get(k) => (k, Op::Get),
                };
                let u = Update::new(
                    StateKey::per_flow(1, 1, 7, 0, KeyBytes::new(&[key])),
                    op,
                    UpdateTag::new(i as u64 + 1, 0),
                    7,
                );
                if nonblocking && !u.op.is_read() {
                    prop_assert_eq!(plain.execute_nonblocking(u.clone()).is_ok(), c.execute_nonblocking(u).is_ok());
                } else {
                    prop_assert_eq!(plain.execute(&u), c.execute(&u));
                }
            }
            prop_assert_eq!(plain.snapshot(1), c.snapshot(1));
            prop_assert_eq!(plain.clock_log_len(), c.clock_log_len());
        }
    }
}
