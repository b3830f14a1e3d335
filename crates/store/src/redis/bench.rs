//! Throughput of the Redis backend from one process against one server: any of increment,
//! get, set and conditional increment, pipelined or one round trip each.
//!
//! Owns: the measurement only. Never starts a server (callers pass a URL, e.g. of a
//! [`crate::redis_server::RedisServer`]) and never touches keys outside its own fresh
//! namespace, which it deletes afterwards.

use std::fmt;
use std::time::Instant;

use super::{RedisOptions, RedisStore};
use crate::types::{KeyBytes, Op, StateKey, StoreError, Update, UpdateTag, Value};
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
    let store = open_fresh(url, &format!("bench{}", std::process::id()), opts)?;
    Ok(RedisBenchReport {
        ops,
        nonblocking_incr_per_s: redis_op_rate(&store, BenchOp::Incr, ops, true)?,
        blocking_incr_per_s: redis_op_rate(&store, BenchOp::Incr, ops, false)?,
        blocking_get_per_s: redis_op_rate(&store, BenchOp::Get, ops, false)?,
    })
}

/// A store on `url` under namespace `ns`, emptied first and deleted when it is dropped (for
/// benchmarks on a private server).
pub fn open_fresh(url: &str, ns: &str, opts: RedisOptions) -> Result<RedisStore, StoreError> {
    let store = RedisStore::open(url, ns, RedisOptions { drop_namespace_on_drop: true, ..opts })?;
    store.clear_namespace()?;
    Ok(store)
}

/// An operation [`redis_op_rate`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    /// `Incr(1)`.
    Incr,
    /// A plain read.
    Get,
    /// `Set(Int(i))`.
    Set,
    /// The conditional increment `IncrIf { delta: 1, min: 0, max: i64::MAX }`.
    IncrIf,
}

impl BenchOp {
    fn op(self, i: usize) -> Op {
        match self {
            BenchOp::Incr => Op::Incr(1),
            BenchOp::Get => Op::Get,
            BenchOp::Set => Op::Set(Value::Int(i as i64)),
            BenchOp::IncrIf => Op::IncrIf { delta: 1, min: 0, max: i64::MAX },
        }
    }
}

/// Operations per second of `ops` operations `op` over 1024 keys of `store`, from one
/// thread: `pipelined` sends updates as non-blocking (pipelined) updates and reads in
/// batches of 512 (`execute_reads`); otherwise each waits for its answer (one round trip).
pub fn redis_op_rate(
    store: &RedisStore,
    op: BenchOp,
    ops: usize,
    pipelined: bool,
) -> Result<f64, StoreError> {
    let key = |i: usize| StateKey::shared(1, 1, 1, KeyBytes::from_u64((i % 1024) as u64));
    // Like the runtime, forget clock logs regularly (keeps each key's log short).
    let gc_every = 16_384;
    store.gc_below(u64::MAX);
    let mut reads = Vec::with_capacity(512);
    let mut results = Vec::with_capacity(512);
    let t = Instant::now();
    for i in 0..ops {
        if i % gc_every == gc_every - 1 {
            store.gc_below(i as u64);
        }
        let u = Update::new(key(i), op.op(i), UpdateTag::new(i as u64 + 1, 0), 0);
        match (op, pipelined) {
            (BenchOp::Get, true) => {
                reads.push(u);
                if reads.len() == 512 || i + 1 == ops {
                    results.clear();
                    store.execute_reads(&reads, &mut results);
                    reads.clear();
                    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                        return Err(e.clone());
                    }
                }
            }
            (BenchOp::Get, false) => {
                store.get(&u.key)?;
            }
            (_, true) => store.execute_nonblocking(u)?,
            (_, false) => {
                store.execute(&u)?;
            }
        }
    }
    store.flush()?;
    let rate = ops as f64 / t.elapsed().as_secs_f64().max(1e-9);
    store.gc_below(u64::MAX);
    Ok(rate)
}
