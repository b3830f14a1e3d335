//! §7 "Datastore benchmarks": state operations per second by operation (increment, get,
//! set, conditional increment) on the embedded store and from one process against Redis,
//! with `redis-benchmark -P 16` on the same server in the same run as the reference.

use indicatif::ProgressBar;
use streamnf_store::bench::{get_throughput, incr_if_throughput, incr_throughput, set_throughput};
use streamnf_store::redis::bench::{open_fresh, redis_op_rate, BenchOp};
use streamnf_store::{EmbeddedStore, RedisOptions, StateStore};

use super::report::Section;
use super::Ctx;
use crate::bench::redis_benchmark;

/// One row: the operation, its embedded and Redis measurements, the paper's figure.
struct OpRow {
    name: &'static str,
    embedded: fn(&dyn StateStore, usize, u64, u32) -> f64,
    redis: BenchOp,
    /// `redis-benchmark -t` test of the same command, if it has one.
    reference: Option<&'static str>,
    paper: &'static str,
}

const OPS: [OpRow; 4] = [
    OpRow {
        name: "increment",
        embedded: incr_throughput,
        redis: BenchOp::Incr,
        reference: Some("incr"),
        paper: "129K",
    },
    OpRow {
        name: "get",
        embedded: get_throughput,
        redis: BenchOp::Get,
        reference: Some("get"),
        paper: "155K",
    },
    OpRow {
        name: "set",
        embedded: set_throughput,
        redis: BenchOp::Set,
        reference: Some("set"),
        paper: "121K",
    },
    OpRow {
        name: "conditional increment",
        embedded: incr_if_throughput,
        redis: BenchOp::IncrIf,
        reference: None,
        paper: "111K (a custom op there)",
    },
];

fn k(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else {
        format!("{:.0}K", x / 1e3)
    }
}

/// Measures every operation on both stores and runs `redis-benchmark` beside them.
pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let (embedded_ops, redis_ops, blocking_ops): (u64, usize, usize) =
        if ctx.quick { (1_000_000, 50_000, 3_000) } else { (5_000_000, 200_000, 10_000) };
    bar.set_length(OPS.len() as u64 * 4);
    let store = open_fresh(&ctx.redis.url(), "paper-datastore", RedisOptions::default())
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut headline = Vec::new();
    for op in &OPS {
        bar.set_message(op.name);
        let embedded = (op.embedded)(&EmbeddedStore::new(), 1, embedded_ops, 10_000);
        bar.inc(1);
        let pipelined = redis_op_rate(&store, op.redis, redis_ops, true).map_err(|e| e.to_string())?;
        bar.inc(1);
        let blocking = redis_op_rate(&store, op.redis, blocking_ops, false).map_err(|e| e.to_string())?;
        bar.inc(1);
        let reference = match op.reference {
            Some(t) => Some(redis_benchmark(ctx.redis.port(), t, redis_ops as u64)?),
            None => None,
        };
        bar.inc(1);
        headline.push(format!("{} {}", op.name, k(pipelined)));
        rows.push(vec![
            op.name.to_string(),
            k(embedded),
            k(pipelined),
            k(blocking),
            reference.map_or("—".into(), k),
            reference.map_or("—".into(), |r| format!("{:.2}", pipelined / r)),
            op.paper.to_string(),
        ]);
    }
    let mut sec = Section::new("Datastore operations per second (§7)");
    sec.text(&format!(
        "Operations per second from one thread. *Embedded*: the in-process store, {embedded_ops} ops over \
         10,000 keys, every update clock-tagged and logged. *Redis, pipelined*: {redis_ops} ops over 1,024 keys \
         from one process through the Redis backend (each update is a call of the `streamnf_v1` function: \
         ownership check, clock-log lookup, the op, the log write, a publish), updates sent without waiting, \
         reads 512 per round trip. *Redis, one round trip each*: {blocking_ops} ops, each waiting for its \
         answer. *redis-benchmark -P 16*: plain Redis commands from the same tool on the same server in the \
         same run, the upper bound of what the server can do (no clock log, no ownership)."
    ));
    sec.table(
        &[
            "operation",
            "embedded",
            "Redis, pipelined",
            "Redis, one round trip each",
            "redis-benchmark -P 16",
            "pipelined / redis-benchmark",
            "paper (ops/s)",
        ],
        &rows,
    );
    sec.headline(
        "datastore ops/s on Redis from one process, pipelined",
        headline.join(", "),
        "~120K (129K / 155K / 121K / 111K)",
    );
    Ok(sec)
}
