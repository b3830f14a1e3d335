//! The example chains on a real Redis (issue 5): each gives the same outputs and final
//! state on a private `redis-server` as on the embedded store, one also on a 3-node Redis
//! Cluster and on the parallel engine; a Redis restarted in the middle of a run leaves the
//! same final state (nothing lost, nothing doubled); a Redis gone for good ends the run with
//! one clear error instead of a hang.
//!
//! Needs `redis-server` (Debian `redis-server`; `.ci/run` installs it). Without it these
//! tests fail with a message saying so.

mod common;

use common::{example, generated, reference};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamnf_dag::LogicalDag;
use streamnf_packet::trace::RawRecord;
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::{Engine, EngineConfig, ParallelConfig, ParallelEngine};
use streamnf_store::redis_server::{RedisCluster, RedisServer};
use streamnf_store::{RedisOptions, RedisStore, StateStore};
use streamnf_tracegen::{GenConfig, ScanConfig, TrojanConfig};

fn input(packets: u64) -> Vec<RawRecord> {
    generated(GenConfig {
        packets,
        flows: 60,
        seed: 5,
        http_fraction: 0.5,
        xss_fraction: 0.2,
        scan: Some(ScanConfig { scanners: 1, ports_per_scanner: 40, targets: 1, open_fraction: 0.1 }),
        trojan: Some(TrojanConfig { hosts: 1, decoys: 1 }),
        ..GenConfig::default()
    })
}

fn open(url: &str, ns: &str, opts: RedisOptions) -> Arc<dyn StateStore> {
    let s =
        RedisStore::open(url, ns, RedisOptions { drop_namespace_on_drop: true, ..opts }).expect("open redis");
    s.clear_namespace().expect("clear");
    Arc::new(s)
}

fn run_on(dag: &Arc<LogicalDag>, store: Arc<dyn StateStore>, input: &[RawRecord]) -> RunOutputs {
    let mut e = Engine::new(Arc::clone(dag), Arc::clone(&store), common::keep()).expect("engine");
    for r in input {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    let rep = e.finish().expect("finish");
    RunOutputs::from_report(rep, store.snapshot(dag.id))
}

fn assert_same(what: &str, want: &RunOutputs, got: &RunOutputs) {
    let d = differences(want, got, 8);
    assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
}

#[test]
fn every_example_chain_is_the_same_on_redis_as_on_the_embedded_store() {
    let srv = RedisServer::start().expect("redis-server");
    let input = input(1500);
    for name in ["figure1.toml", "nat.toml", "port_scan.toml", "trojan.toml", "acl.toml", "http_proxy.toml"] {
        let dag = example(name);
        let want = reference(&dag, &input);
        let got = run_on(&dag, open(&srv.url(), "chains", RedisOptions::default()), &input);
        assert_same(&format!("{name} on redis"), &want, &got);
    }
}

#[test]
fn a_redis_cluster_and_the_parallel_engine_give_the_same_outputs() {
    let cluster = RedisCluster::start(3).expect("redis cluster");
    let input = input(1200);
    let dag = example("figure1.toml");
    let want = reference(&dag, &input);
    let got = run_on(&dag, open(&cluster.url(), "cluster", RedisOptions::default()), &input);
    assert_same("figure1 on a 3-node cluster", &want, &got);

    let srv = RedisServer::start().expect("redis-server");
    let store = open(&srv.url(), "parallel", RedisOptions::default());
    let par =
        ParallelConfig { workers: 2, instances: vec![2; dag.vertices.len()], ..ParallelConfig::default() };
    let mut e =
        ParallelEngine::new(Arc::clone(&dag), Arc::clone(&store), common::keep(), par).expect("engine");
    for r in &input {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    let got = RunOutputs::from_report(e.finish().expect("finish"), store.snapshot(dag.id));
    assert_same("figure1 on redis, 2 workers x 2 instances", &want, &got);
}

/// Churn on Redis: a scale, a clone (whose copies' non-blocking updates reach Redis late)
/// and a failover with replay leave the reference outputs and state: the store emulates
/// every repeated update, also one that arrives after the original's clock finished.
#[test]
fn churn_on_redis_keeps_the_reference_outputs_and_state() {
    let srv = RedisServer::start().expect("redis-server");
    let input = input(3000);
    for name in ["nat.toml", "figure1.toml"] {
        let dag = example(name);
        let want = reference(&dag, &input);
        let first = dag.vertices[0].name.clone();
        let events: Vec<streamnf_runtime::events::EventSpec> = [
            format!("at=20% scale {first} to 2"),
            format!("at=40% clone {first}/0"),
            format!("at=70% fail {first}/1"),
        ]
        .iter()
        .map(|s| {
            let mut e: streamnf_runtime::events::EventSpec = s.parse().expect("spec");
            e.relative = true;
            e
        })
        .collect();
        let store = open(&srv.url(), "churn", RedisOptions::default());
        let instances = vec![1; dag.vertices.len()];
        let shape = common::ChurnShape {
            workers: 2,
            instances: &instances,
            events: &events,
            guarantees: true,
            paced: false,
        };
        let run = common::churn_on(store, &dag, &input, &shape);
        let (got, records) = (run.outputs, run.events);
        assert_eq!(records.len(), 3, "{records:?}");
        assert_same(&format!("{name} on redis with churn"), &want, &got);
    }
}

#[test]
fn a_redis_restarted_mid_run_leaves_the_reference_state() {
    // Append-only file so the data outlives the restart, as a production Redis would keep it.
    let mut srv =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).expect("redis-server");
    let input = input(1500);
    let dag = example("nat.toml");
    let want = reference(&dag, &input);
    let store = open(&srv.url(), "restart", RedisOptions { batch: 64, ..RedisOptions::default() });
    let mut e = Engine::new(Arc::clone(&dag), Arc::clone(&store), common::keep()).expect("engine");
    for (i, r) in input.iter().enumerate() {
        if i == input.len() / 2 {
            srv.restart().expect("restart redis");
        }
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process across the restart");
    }
    let got = RunOutputs::from_report(e.finish().expect("finish"), store.snapshot(dag.id));
    assert_same("nat across a redis restart", &want, &got);
}

#[test]
fn a_redis_gone_for_good_ends_the_run_with_one_clear_error() {
    let mut srv = RedisServer::start().expect("redis-server");
    let url = srv.url();
    let input = input(400);
    let dag = example("figure1.toml");
    let opts = RedisOptions {
        reconnect_timeout: Duration::from_millis(600),
        io_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let store = open(&url, "gone", opts);
    let mut e = Engine::new(Arc::clone(&dag), Arc::clone(&store), EngineConfig::default()).expect("engine");
    let t = Instant::now();
    for r in &input[..100] {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    srv.stop();
    for r in &input[100..] {
        let _ = e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len);
    }
    let report = e.finish();
    assert!(t.elapsed() < Duration::from_secs(30), "no hang: {:?}", t.elapsed());
    // The NFs' state calls fail (counted as NF errors) and flushing at the end reports it.
    let errors: u64 =
        report.as_ref().map(|r| r.tasks.values().flatten().map(|s| s.nf_errors).sum()).unwrap_or(u64::MAX);
    assert!(errors > 0 || report.is_err(), "the lost store must show");
    let e = store.flush().expect_err("the store reports the lost server");
    assert!(e.to_string().contains(&url), "the error names the server: {e}");
}
