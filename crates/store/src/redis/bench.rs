//! Throughput of the Redis backend from one process: pipelined non-blocking increments,
//! blocking increments and blocking reads against one server.
//!
//! Owns: the measurement only. Never starts a server (callers pass a URL, e.g. of a
//! [`crate::redis_server::RedisServer`]) and never touches keys outside its own fresh
//! namespace, which it deletes afterwards.

use std::fmt;
use std::time::Instant;

use super::{RedisOptions, RedisStore};
use crate::types::{KeyBytes, Op, StateKey, StoreError, Update, UpdateTag};
use crate::StateStore;

/// Figures of [`bench_redis_ops`], in operations per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RedisBenchReport {
    /// Operations per phase.
    pub ops: usize,
    /// Non-blocking `Incr`, pipelined (including the final flush).
    pub nonblocking_incr_per_s: f64,
    /// Blocking `Incr`, one round trip each.
    pub blocking_incr_per_s: f64,
    /// Blocking `get`, one round trip each.
    pub blocking_get_per_s: f64,
}

impl fmt::Display for RedisBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "redis store, {} ops per phase, one thread:", self.ops)?;
        writeln!(f, "  non-blocking incr (pipelined): {:>10.0} ops/s", self.nonblocking_incr_per_s)?;
        writeln!(f, "  blocking incr:                 {:>10.0} ops/s", self.blocking_incr_per_s)?;
        write!(f, "  blocking get:                  {:>10.0} ops/s", self.blocking_get_per_s)
    }
}

/// Runs the three phases with `ops` operations each over 1024 keys on `url`.
pub fn bench_redis_ops(url: &str, ops: usize, opts: RedisOptions) -> Result<RedisBenchReport, StoreError> {
    let ns = format!("bench{}", std::process::id());
    let store = RedisStore::open(url, &ns, RedisOptions { drop_namespace_on_drop: true, ..opts })?;
    store.clear_namespace()?;
    let key = |i: usize| StateKey::shared(1, 1, 1, KeyBytes::from_u64((i % 1024) as u64));
    let rate = |n: usize, t: Instant| n as f64 / t.elapsed().as_secs_f64().max(1e-9);

    // Like the runtime, forget clock logs regularly (keeps each key's log short).
    let gc_every = 16_384;
    let t = Instant::now();
    for i in 0..ops {
        if i % gc_every == gc_every - 1 {
            store.gc_below(i as u64);
        }
        store.execute_nonblocking(Update::new(key(i), Op::Incr(1), UpdateTag::new(i as u64 + 1, 0), 0))?;
    }
    store.flush()?;
    let nonblocking_incr_per_s = rate(ops, t);

    store.gc_below(u64::MAX);
    let t = Instant::now();
    for i in 0..ops {
        if i % gc_every == gc_every - 1 {
            store.gc_below(i as u64);
        }
        store.execute(&Update::new(key(i), Op::Incr(1), UpdateTag::new(i as u64 + 1, 1), 0))?;
    }
    let blocking_incr_per_s = rate(ops, t);

    let t = Instant::now();
    for i in 0..ops {
        store.get(&key(i))?;
    }
    let blocking_get_per_s = rate(ops, t);
    store.gc_below(u64::MAX);
    Ok(RedisBenchReport { ops, nonblocking_incr_per_s, blocking_incr_per_s, blocking_get_per_s })
}
