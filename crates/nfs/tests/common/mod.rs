//! Helpers shared by the NF integration tests: generated traces, and one run of a chain
//! on the reference engine or on the parallel engine, returned as comparable outputs.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use streamnf_dag::chain_file::load_chain;
use streamnf_dag::LogicalDag;
use streamnf_nfs::builtin_registry;
use streamnf_packet::trace::RawRecord;
use streamnf_packet::LinkType;
use streamnf_runtime::compare::RunOutputs;
use streamnf_runtime::stats::TaskStats;
use streamnf_runtime::{Engine, EngineConfig, ParallelConfig, ParallelEngine};
use streamnf_store::{EmbeddedStore, StateStore};
use streamnf_tracegen::{GenConfig, Generator};

/// The frames of a generated trace.
pub fn generated(cfg: GenConfig) -> Vec<RawRecord> {
    Generator::new(cfg)
        .expect("generator")
        .map(|g| RawRecord {
            link: LinkType::Ethernet,
            ts_ns: g.ts_ns,
            orig_len: g.data.len() as u32,
            data: g.data,
        })
        .collect()
}

/// Keep sink packets and alerts for comparison.
pub fn keep() -> EngineConfig {
    EngineConfig { keep: true, ..EngineConfig::default() }
}

/// One single-instance (reference) run.
pub fn reference(dag: &Arc<LogicalDag>, input: &[RawRecord]) -> RunOutputs {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let mut e = Engine::new(Arc::clone(dag), Arc::clone(&store), keep()).expect("engine");
    for r in input {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    let rep = e.finish().expect("finish");
    RunOutputs::from_report(rep, store.snapshot(dag.id))
}

/// One parallel run with `workers` threads and `instances` tasks per vertex (by vertex
/// index), with small queues and log so back-pressure happens on every run.
pub fn parallel(dag: &Arc<LogicalDag>, input: &[RawRecord], workers: usize, instances: &[u32]) -> RunOutputs {
    parallel_on(Arc::new(EmbeddedStore::new()), dag, input, workers, instances).0
}

/// Like [`parallel`] on `store`, also returning the per-task counters by vertex name.
pub fn parallel_on(
    store: Arc<dyn StateStore>,
    dag: &Arc<LogicalDag>,
    input: &[RawRecord],
    workers: usize,
    instances: &[u32],
) -> (RunOutputs, BTreeMap<String, Vec<TaskStats>>) {
    let par = ParallelConfig {
        workers,
        instances: instances.to_vec(),
        queue_capacity: 64,
        log_capacity: 256,
        batch: 8,
        ..ParallelConfig::default()
    };
    let mut e = ParallelEngine::new(Arc::clone(dag), Arc::clone(&store), keep(), par).expect("engine");
    for r in input {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    let rep = e.finish().expect("finish");
    let tasks = rep.tasks.clone();
    (RunOutputs::from_report(rep, store.snapshot(dag.id)), tasks)
}

/// An example chain of the repository (`examples/NAME`).
pub fn example(name: &str) -> Arc<LogicalDag> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
    Arc::new(load_chain(&path, &builtin_registry()).expect("example chain"))
}

/// A chain from TOML text.
pub fn chain(toml_text: &str) -> Result<Arc<LogicalDag>, String> {
    streamnf_dag::chain_file::parse_chain(toml_text, "test.toml", &builtin_registry())
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Instance counts by vertex index from `name=count` pairs (others 1).
pub fn instances(dag: &LogicalDag, named: &[(&str, u32)]) -> Vec<u32> {
    let mut v = vec![1; dag.vertices.len()];
    for (name, n) in named {
        v[dag.vertex_id(name).expect("vertex")] = *n;
    }
    v
}

/// Runs parsed packets through `dag` on the reference engine (outputs kept) and returns
/// the report and the final state.
pub fn run_packets(
    dag: streamnf_dag::LogicalDag,
    pkts: Vec<streamnf_packet::Packet>,
) -> (streamnf_runtime::engine::EngineReport, std::collections::BTreeMap<String, streamnf_store::Value>) {
    let mut e = Engine::new(Arc::new(dag), Arc::new(EmbeddedStore::new()), keep()).expect("engine");
    for p in pkts {
        e.process(p).expect("process");
    }
    let state = e.final_state();
    (e.finish().expect("finish"), state)
}

/// One parallel run with churn `events` applied before the input packets they name (as
/// `streamnf run --event` does), fault tolerance on, `guarantees` on or off. Small queues
/// and log, so back-pressure and replays of many packets happen.
pub fn churn(
    dag: &Arc<LogicalDag>,
    input: &[RawRecord],
    workers: usize,
    instances: &[u32],
    events: &[streamnf_runtime::events::EventSpec],
    guarantees: bool,
) -> (RunOutputs, Vec<serde_json::Value>) {
    let shape = ChurnShape { workers, instances, events, guarantees, paced: false };
    let run = churn_on(Arc::new(EmbeddedStore::new()), dag, input, &shape);
    (run.outputs, run.events)
}

/// What a [`churn_on`] run left: its comparable outputs, its event records and the
/// per-task counters by vertex name.
pub struct Churned {
    pub outputs: RunOutputs,
    pub events: Vec<serde_json::Value>,
    pub tasks: BTreeMap<String, Vec<TaskStats>>,
}

/// The shape of a churn run: worker threads, starting instances per vertex, events,
/// guarantees, and whether the input is paced (the caller idles before every packet:
/// [`ParallelEngine::before_idle`], the root running the chain itself and waking the
/// workers only for what is left).
#[derive(Clone, Copy)]
pub struct ChurnShape<'a> {
    pub workers: usize,
    pub instances: &'a [u32],
    pub events: &'a [streamnf_runtime::events::EventSpec],
    pub guarantees: bool,
    pub paced: bool,
}

/// [`churn`] on the given store, shaped by `shape`.
pub fn churn_on(
    store: Arc<dyn StateStore>,
    dag: &Arc<LogicalDag>,
    input: &[RawRecord],
    shape: &ChurnShape,
) -> Churned {
    let ChurnShape { workers, instances, events, guarantees, paced } = *shape;
    let par = ParallelConfig {
        workers,
        instances: instances.to_vec(),
        slots: streamnf_runtime::run::event_slots(dag, instances, events),
        fault_tolerance: true,
        guarantees,
        queue_capacity: 64,
        log_capacity: 1024,
        batch: 8,
        ..ParallelConfig::default()
    };
    let mut e = ParallelEngine::new(Arc::clone(dag), Arc::clone(&store), keep(), par).expect("engine");
    e.set_replay_input(streamnf_runtime::parallel::replay_input(Arc::new(input.to_vec())));
    let n = input.len() as u64;
    let mut schedule = streamnf_runtime::events::Schedule::new(events, n, |i| input[i as usize].ts_ns);
    for (i, r) in input.iter().enumerate() {
        while let Some(ev) = schedule.next_before(i as u64) {
            e.apply_event(ev, i as u64).expect("event");
        }
        if paced {
            e.before_idle();
        }
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    while let Some(ev) = schedule.next_before(u64::MAX) {
        e.apply_event(ev, n).expect("event");
    }
    let rep = e.finish().expect("finish");
    let events = rep.events.clone();
    let tasks = rep.tasks.clone();
    Churned { outputs: RunOutputs::from_report(rep, store.snapshot(dag.id)), events, tasks }
}
