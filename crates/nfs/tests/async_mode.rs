//! Asynchronous processing (paper appendix, issue 5): an NF in asynchronous mode has the
//! reads of a whole batch of packets fetched at once, and its packets answered from what
//! arrived. The chain must still write the same packets, raise the same alerts and leave
//! the same final state as the synchronous single-instance reference run — on the embedded
//! store, on a real Redis (one pipelined round trip per batch), with client-side caching in
//! front, and under churn (reads logged for replay) — and the prefetch must actually answer
//! reads (or this would test the synchronous path twice).

mod common;

use common::{chain, churn_on, generated, parallel_on, reference, ChurnShape};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use streamnf_dag::{
    Alert, ChainBuilder, LogicalDag, NetworkFunction, NfContext, NfError, NfSpec, PortSpec, ProcessingMode,
    ReadSet, StateExt, StateObjectSpec,
};
use streamnf_nfs::nat::Nat;
use streamnf_packet::trace::RawRecord;
use streamnf_packet::{Flowspace, Packet};
use streamnf_runtime::compare::differences;
use streamnf_runtime::events::EventSpec;
use streamnf_runtime::stats::TaskStats;
use streamnf_store::redis_server::RedisServer;
use streamnf_store::{CachedStore, EmbeddedStore, Op, RedisOptions, RedisStore, StateStore, Value};
use streamnf_tracegen::GenConfig;

/// A NAT in `mode` followed by a light IDS (the NAT rewrites headers, so the IDS merges its
/// senders in clock order when the NAT has several instances).
fn nat_chain(mode: &str) -> Arc<LogicalDag> {
    chain(&format!(
        r#"
name = "async-nat"
[[vertex]]
name = "nat"
nf = "nat"
[vertex.params]
mode = "{mode}"
port_min = 20000
port_max = 20400
[[vertex]]
name = "ids"
nf = "light_ids"
[[edge]]
from = "input"
to = "nat.in"
[[edge]]
from = "nat.out"
to = "ids.in"
[[edge]]
from = "ids.out"
to = "output.out"
"#
    ))
    .expect("chain")
}

fn trace(packets: u64, flows: u32, seed: u64) -> Vec<RawRecord> {
    generated(GenConfig { packets, flows, seed, ..GenConfig::default() })
}

fn sum(tasks: &BTreeMap<String, Vec<TaskStats>>, vertex: &str, f: fn(&TaskStats) -> u64) -> u64 {
    tasks.get(vertex).map_or(0, |ts| ts.iter().map(f).sum())
}

/// Runs the async chain on `store` with `workers` and `nat` instances of the NAT and checks
/// it against the synchronous reference; returns the NAT's (prefetched reads, hits).
fn check(store: Arc<dyn StateStore>, input: &[RawRecord], workers: usize, nat: u32) -> (u64, u64) {
    let want = reference(&nat_chain("sync"), input);
    let sent: usize = want.sinks.values().map(Vec::len).sum();
    assert!(sent > input.len() / 2, "the reference must translate most packets ({sent})");
    let dag = nat_chain("async");
    let (got, tasks) = parallel_on(store, &dag, input, workers, &[nat, 1]);
    let d = differences(&want, &got, 12);
    assert!(d.is_empty(), "async NAT, {workers} workers, {nat} instances:\n{}", d.join("\n"));
    (sum(&tasks, "nat", |t| t.prefetched_reads), sum(&tasks, "nat", |t| t.prefetch_hits))
}

#[test]
fn an_async_nat_gives_the_reference_outputs_and_answers_reads_from_the_prefetch() {
    let input = trace(4_000, 120, 3);
    for (workers, nat) in [(1, 1), (2, 1), (2, 3)] {
        let (fetched, hits) = check(Arc::new(EmbeddedStore::new()), &input, workers, nat);
        // Every translated packet makes at least one read; most come from the prefetch.
        assert!(fetched > 1_000, "{workers} workers, {nat} NATs: only {fetched} reads prefetched");
        assert!(hits > 1_000, "{workers} workers, {nat} NATs: only {hits} reads served from the prefetch");
    }
}

#[test]
fn a_sync_nat_prefetches_nothing() {
    let input = trace(1_000, 40, 4);
    let (_, tasks) = parallel_on(Arc::new(EmbeddedStore::new()), &nat_chain("sync"), &input, 1, &[1, 1]);
    assert_eq!(sum(&tasks, "nat", |t| t.prefetched_reads), 0);
    assert_eq!(sum(&tasks, "nat", |t| t.prefetch_hits), 0);
    assert!(sum(&tasks, "nat", |t| t.state_ops) > 1_000, "the NAT must have used the store");
}

#[test]
fn an_async_nat_on_redis_with_and_without_caching_gives_the_reference_outputs() {
    let srv = RedisServer::start().expect("redis-server (Debian redis-server; .ci/run installs it)");
    let input = trace(3_000, 90, 5);
    for cached in [false, true] {
        let redis = RedisStore::open(
            &srv.url(),
            if cached { "async-cached" } else { "async" },
            RedisOptions { drop_namespace_on_drop: true, ..RedisOptions::default() },
        )
        .expect("open redis");
        redis.clear_namespace().expect("clear");
        let redis: Arc<dyn StateStore> = Arc::new(redis);
        let store: Arc<dyn StateStore> =
            if cached { Arc::new(CachedStore::new(Arc::clone(&redis))) } else { Arc::clone(&redis) };
        let (fetched, hits) = check(store, &input, 2, 2);
        assert!(hits > 500, "cached {cached}: only {hits} of {fetched} prefetched reads served");
    }
}

/// Counts each flow's packets with a read and a non-blocking write (the pattern a stale
/// read turns into lost updates), alerting on a flow's third packet. Asynchronous.
struct FlowCounter;

impl NetworkFunction for FlowCounter {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out")],
            state: vec![StateObjectSpec::per_flow("count", Flowspace::five_tuple())],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let key = Flowspace::five_tuple().key(pkt);
        let n = ctx.get_int(0, key.as_bytes())? + 1;
        ctx.state_nonblocking(0, key.as_bytes(), Op::Set(Value::Int(n)))?;
        if n == 3 {
            ctx.alert(Alert::new("third").with("clock", ctx.clock()));
        }
        ctx.forward(0);
        Ok(())
    }

    fn mode(&self) -> ProcessingMode {
        ProcessingMode::Asynchronous
    }

    fn prefetch(&self, _port: usize, pkt: &Packet, reads: &mut ReadSet<'_>) {
        reads.read(0, Flowspace::five_tuple().key(pkt).as_bytes());
    }
}

/// Behind a NAT (it rewrites headers), the counter's tasks merge their senders in clock
/// order; the messages due in one turn are prefetched together there, and no count is lost
/// or doubled.
#[test]
fn an_async_nf_behind_a_rewriting_nf_merges_prefetches_and_loses_no_update() {
    let dag = Arc::new(
        ChainBuilder::new("nat-counter")
            .vertex("nat", Arc::new(Nat::default()))
            .vertex("counter", Arc::new(FlowCounter))
            .edge("input", "nat.in")
            .edge("nat.out", "counter.in")
            .edge("counter.out", "output.out")
            .build()
            .expect("chain"),
    );
    let input = trace(3_000, 60, 8);
    let want = reference(&dag, &input);
    assert!(!want.alerts.is_empty(), "flows must reach a third packet, or alerts are not compared");
    for (workers, nat, counter) in [(2, 2, 1), (2, 3, 2), (1, 2, 3)] {
        let (got, tasks) =
            parallel_on(Arc::new(EmbeddedStore::new()), &dag, &input, workers, &[nat, counter]);
        let d = differences(&want, &got, 12);
        assert!(d.is_empty(), "NAT x{nat} -> async counter x{counter}:\n{}", d.join("\n"));
        let hits = sum(&tasks, "counter", |t| t.prefetch_hits);
        let fetched = sum(&tasks, "counter", |t| t.prefetched_reads);
        assert!(hits > 1_000, "only {hits} of {fetched} prefetched reads served in the merged path");
    }
}

/// Under churn (fault tolerance: reads logged for replay) an asynchronous NAT prefetches
/// its packets' per-flow reads as logged reads, round by round: failover, scaling and a
/// clone still give the reference outputs, and reads are still served from the prefetch.
#[test]
fn an_async_nat_under_churn_gives_the_reference_outputs_and_still_prefetches() {
    let input = trace(4_000, 120, 9);
    let want = reference(&nat_chain("sync"), &input);
    let dag = nat_chain("async");
    let schedules: [&[&str]; 4] = [
        &["at=30% fail nat/0"],
        &["at=20% scale nat to 3", "at=60% scale nat to 1"],
        &["at=10% straggle nat/1 delay=20us", "at=25% clone nat/1"],
        &["at=40% kill nat/0", "at=70% fail nat/1"],
    ];
    for events in schedules {
        let specs: Vec<EventSpec> = events.iter().map(|e| e.parse().expect("event")).collect();
        let shape =
            ChurnShape { workers: 2, instances: &[2, 1], events: &specs, guarantees: true, paced: false };
        let run = churn_on(Arc::new(EmbeddedStore::new()), &dag, &input, &shape);
        let d = differences(&want, &run.outputs, 12);
        assert!(d.is_empty(), "async NAT under {events:?}:\n{}", d.join("\n"));
        let hits = sum(&run.tasks, "nat", |t| t.prefetch_hits);
        let fetched = sum(&run.tasks, "nat", |t| t.prefetched_reads);
        assert!(hits > 500, "{events:?}: only {hits} of {fetched} logged prefetched reads served");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]
    /// Any trace (few flows: many packets of one flow in one batch, so prefetched values
    /// are invalidated by the batch's own updates), any shape: the reference outputs.
    #[test]
    fn async_equals_sync_for_any_trace_and_shape(
        seed in 0u64..10_000,
        flows in 2u32..200,
        workers in 1usize..=2,
        nat in 1u32..=3,
    ) {
        check(Arc::new(EmbeddedStore::new()), &trace(1_200, flows, seed), workers, nat);
    }
}
