//! `streamnf bench async`: what asynchronous processing (paper appendix) buys. The same NAT
//! runs in synchronous mode (each read waits for the store) and in asynchronous mode (the
//! reads of a batch of packets are fetched at once, see `streamnf_dag::ProcessingMode`), on
//! the parallel engine with one worker, alternating rounds, on a private `redis-server` in
//! three store set-ups and with fault tolerance on (reads logged for replay), and on the
//! embedded store (where a read costs no round trip, so the ratio shows the prefetch's own
//! cost).

use std::sync::Arc;

use streamnf_dag::{LogicalDag, ProcessingMode};
use streamnf_nfs::nat::Nat;
use streamnf_packet::trace::RawRecord;
use streamnf_store::redis_server::RedisServer;
use streamnf_store::{CachedStore, EmbeddedStore, RedisOptions, StateStore};

use crate::bench::{best, fresh_redis, parallel_round_on, single, RoundResult};

type MakeStore<'a> = Box<dyn Fn() -> Result<Arc<dyn StateStore>, String> + 'a>;

/// Runs the sync/async comparison on every store set-up and prints one line per set-up.
pub(crate) fn sync_vs_async(pkts: &[RawRecord], rounds: u32) -> Result<(), String> {
    let sync = Arc::new(single(Arc::new(Nat::default()))?);
    let asynchronous = Arc::new(single(Arc::new(Nat::default().with_mode(ProcessingMode::Asynchronous)))?);
    let read_heavy = sync.read_heavy_objects();
    println!(
        "bench async: NAT, {} packets, parallel engine (1 worker, 1 instance), best of {} rounds, \
         sync and async alternating",
        pkts.len(),
        rounds.max(1)
    );
    let srv = RedisServer::start()?;
    let url = srv.url();
    let redis =
        |batch: usize| fresh_redis(&url, "bench-async", RedisOptions { batch, ..RedisOptions::default() });
    let cached = |inner: Arc<dyn StateStore>| -> Arc<dyn StateStore> {
        Arc::new(CachedStore::with_read_heavy(inner, read_heavy.clone()))
    };
    // (name, store, fault tolerance on)
    let setups: Vec<(String, MakeStore, bool)> = vec![
        ("redis, externalized (every update waits)".into(), Box::new(|| redis(1)), false),
        ("redis, externalized + non-blocking updates".into(), Box::new(|| redis(512)), false),
        ("redis, + caching + non-blocking (all)".into(), Box::new(|| Ok(cached(redis(512)?))), false),
        ("redis, non-blocking, fault tolerance on".into(), Box::new(|| redis(512)), true),
        (
            "embedded store".into(),
            Box::new(|| Ok(Arc::new(EmbeddedStore::new()) as Arc<dyn StateStore>)),
            false,
        ),
    ];
    println!("  (redis-server {url}, private)");
    for (name, make, ft) in &setups {
        let (s, a) = compare(&sync, &asynchronous, pkts, rounds, make, *ft)?;
        println!(
            "  {name:<44} sync {:>8.1} kpps p50 {:>8} ns p99 {:>9} ns | async {:>8.1} kpps p50 {:>8} ns p99 {:>9} ns | \
             async/sync throughput {:.2}x",
            s.pps / 1e3,
            s.p50,
            s.p99,
            a.pps / 1e3,
            a.p50,
            a.p99,
            a.pps / s.pps.max(1e-9)
        );
    }
    Ok(())
}

/// Best sync and best async round, alternating.
fn compare(
    sync: &Arc<LogicalDag>,
    asynchronous: &Arc<LogicalDag>,
    pkts: &[RawRecord],
    rounds: u32,
    make: &MakeStore,
    fault_tolerance: bool,
) -> Result<(RoundResult, RoundResult), String> {
    let (mut s, mut a) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        s.push(parallel_round_on(sync, make()?, pkts, 1, vec![1], fault_tolerance)?);
        a.push(parallel_round_on(asynchronous, make()?, pkts, 1, vec![1], fault_tolerance)?);
    }
    Ok((best(&s).clone(), best(&a).clone()))
}
