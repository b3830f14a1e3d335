//! Throughput measurements of a [`StateStore`], used by the criterion bench and the
//! `streamnf bench store` CLI command.
//!
//! Every function pre-populates `keys` shared keys (DAG [`BENCH_DAG`], vertex 0, object 0,
//! sub-key = index, value `Int(0)`), then runs `threads` threads, each issuing
//! `ops_per_thread` operations on pseudo-randomly chosen keys, and returns the aggregate
//! rate in operations per second (wall time from a common start barrier to the last thread's
//! end). Each thread is its own issuer (task id = thread index) and uses fresh tags
//! `(clock = 1, 2, ..., seq = thread index)`, so no update is emulated. To bound memory the
//! way the runtime would, every thread calls `gc_below(its clock)` every [`gc_interval`]
//! operations; that cost is included.

use std::sync::Barrier;
use std::time::Instant;

use crate::types::{KeyBytes, Op, StateKey, StoreError, Update, UpdateTag, Value};
use crate::StateStore;

/// DAG id used for benchmark keys.
pub const BENCH_DAG: u32 = 0xbe;
/// Minimum interval, in operations per thread, between `gc_below` calls.
pub const GC_EVERY: u64 = 1 << 12;

/// GC interval used for `keys` keys: `max(GC_EVERY, 2 * keys)` operations per thread, so
/// the GC walk (linear in the key count) costs a small constant per operation and each
/// key holds about two log entries per thread between collections, like a runtime whose
/// watermark trails the packets in flight.
pub fn gc_interval(keys: u32) -> u64 {
    GC_EVERY.max(2 * u64::from(keys))
}

/// Benchmark key number `i` (shared, DAG [`BENCH_DAG`], sub-key = `i` as 8 bytes). Built on
/// the fly by the measuring loops, so no key array competes with the store for cache.
#[inline]
pub fn bench_key(i: u32) -> StateKey {
    StateKey::shared(BENCH_DAG, 0, 0, KeyBytes::from_u64(u64::from(i)))
}

/// The `n` benchmark keys.
pub fn bench_keys(n: u32) -> Vec<StateKey> {
    (0..n.max(1)).map(bench_key).collect()
}

/// Clears all clock logs (`gc_below(u64::MAX)`, so tags of earlier runs are not emulated),
/// sets every benchmark key to `Int(0)` and returns the keys.
pub fn populate(store: &dyn StateStore, n: u32) -> Result<Vec<StateKey>, StoreError> {
    let keys = bench_keys(n);
    store.gc_below(u64::MAX);
    for (i, k) in keys.iter().enumerate() {
        let tag = UpdateTag::new(0, i as u32);
        store.execute(&Update::new(*k, Op::Set(Value::Int(0)), tag, 0))?;
    }
    store.gc_below(u64::MAX);
    Ok(keys)
}

/// Small, fast PRNG (xorshift64*) for key choice.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    #[inline]
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        ((r * n as u64) >> 32) as usize
    }
}

/// Runs `body(thread, keys)` on `threads` threads after a common barrier; returns ops/s.
fn run<F>(store: &dyn StateStore, threads: usize, ops_per_thread: u64, keys: u32, body: F) -> f64
where
    F: Fn(usize, &[StateKey]) + Sync,
{
    let threads = threads.max(1);
    let keys = match populate(store, keys) {
        Ok(k) => k,
        Err(_) => return 0.0,
    };
    let barrier = Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|s| {
        for t in 0..threads {
            let (barrier, keys, body) = (&barrier, &keys, &body);
            s.spawn(move || {
                barrier.wait();
                body(t, keys);
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Scope end joins all threads.
        start
    })
    .elapsed();
    let total = ops_per_thread as f64 * threads as f64;
    total / elapsed.as_secs_f64().max(1e-9)
}

#[inline]
fn maybe_gc(store: &dyn StateStore, clock: u64, every: u64) {
    if clock % every == 0 {
        store.gc_below(clock);
    }
}

/// Throughput of the updates `op_at(clock)` on random existing shared keys, fresh tags.
fn update_throughput(
    store: &dyn StateStore,
    threads: usize,
    ops_per_thread: u64,
    keys: u32,
    op_at: fn(u64) -> Op,
) -> f64 {
    let every = gc_interval(keys);
    run(store, threads, ops_per_thread, keys, |t, keys| {
        let mut rng = Rng::new(t as u64 + 1);
        for clock in 1..=ops_per_thread {
            let k = bench_key(rng.below(keys.len()) as u32);
            let u = Update::new(k, op_at(clock), UpdateTag::new(clock, t as u32), t as u32);
            let _ = std::hint::black_box(store.execute(&u));
            maybe_gc(store, clock, every);
        }
    })
}

/// Throughput of `Incr(1)` on random existing shared keys, fresh tags.
pub fn incr_throughput(store: &dyn StateStore, threads: usize, ops_per_thread: u64, keys: u32) -> f64 {
    update_throughput(store, threads, ops_per_thread, keys, |_| Op::Incr(1))
}

/// Throughput of the conditional increment `IncrIf { delta: 1, min: 0, max: i64::MAX }`
/// (applied: the keys start at 0 and only grow) on random existing shared keys.
pub fn incr_if_throughput(store: &dyn StateStore, threads: usize, ops_per_thread: u64, keys: u32) -> f64 {
    update_throughput(store, threads, ops_per_thread, keys, |_| Op::IncrIf {
        delta: 1,
        min: 0,
        max: i64::MAX,
    })
}

/// Throughput of untagged `get` on random existing keys.
pub fn get_throughput(store: &dyn StateStore, threads: usize, ops_per_thread: u64, keys: u32) -> f64 {
    run(store, threads, ops_per_thread, keys, |t, keys| {
        let mut rng = Rng::new(t as u64 + 1);
        for _ in 0..ops_per_thread {
            let k = &bench_key(rng.below(keys.len()) as u32);
            let _ = std::hint::black_box(store.get(k));
        }
    })
}

/// Throughput of `Set(Int(_))` on random existing shared keys, fresh tags.
pub fn set_throughput(store: &dyn StateStore, threads: usize, ops_per_thread: u64, keys: u32) -> f64 {
    update_throughput(store, threads, ops_per_thread, keys, |clock| Op::Set(Value::Int(clock as i64)))
}

/// Throughput of successful `CompareAndSet(Int(v) -> Int(v+1))`: thread `t` uses the keys
/// whose index is `t` modulo `threads` and tracks their values locally, so every CAS
/// succeeds (needs `keys >= threads`).
pub fn cas_throughput(store: &dyn StateStore, threads: usize, ops_per_thread: u64, keys: u32) -> f64 {
    let threads = threads.max(1);
    let keys = keys.max(threads as u32);
    let every = gc_interval(keys);
    run(store, threads, ops_per_thread, keys, |t, keys| {
        let mine: Vec<StateKey> = keys.iter().skip(t).step_by(threads).copied().collect();
        let mut vals = vec![0i64; mine.len()];
        let mut rng = Rng::new(t as u64 + 1);
        for clock in 1..=ops_per_thread {
            let i = rng.below(mine.len());
            let op =
                Op::CompareAndSet { expected: Some(Value::Int(vals[i])), new: Some(Value::Int(vals[i] + 1)) };
            let u = Update::new(mine[i], op, UpdateTag::new(clock, t as u32), t as u32);
            if let Ok(Some(Value::Int(1))) = store.execute(&u) {
                vals[i] += 1;
            }
            maybe_gc(store, clock, every);
        }
    })
}
