//! State callbacks (`NetworkFunction::watches` / `on_state_change`) on both engines: every
//! change reaches the watcher once, in clock order, at the clock of the update that made
//! it; a callback's own updates never collide with other inputs' tags (none is lost as a
//! repeat); what a callback emits is discarded and counted; unknown watches are chain
//! errors; and a parallel run leaves the reference run's state and alerts.

mod common;

use std::sync::Arc;
use streamnf_dag::{
    Alert, ChainBuilder, LogicalDag, NetworkFunction, NfContext, NfError, NfSpec, PortSpec, StateChange,
    StateExt, StateObjectSpec, StateWatch,
};
use streamnf_packet::Packet;
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::engine::EngineReport;
use streamnf_runtime::{Engine, EngineConfig, ParallelConfig, ParallelEngine};
use streamnf_store::{EmbeddedStore, Op, StateStore, Value};

fn udp(src: [u8; 4], ts: u64) -> Packet {
    common::udp(src, [192, 0, 2, 1], 5000, 53, b"q", ts)
}

/// Two updates of its shared `hits` per packet, at the same clock: one per source, one
/// for everybody.
struct Writer;

impl NetworkFunction for Writer {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out")],
            state: vec![StateObjectSpec::shared("hits")],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let src = pkt.hdr.ip.map(|i| i.src.to_string()).unwrap_or_default();
        ctx.incr(0, src.as_bytes(), 1)?;
        ctx.incr_nb(0, b"all", 1)?;
        ctx.forward(0);
        Ok(())
    }
}

/// Watches the writer's `hits` and its own `flags`. Per change of `hits`: counts it, logs
/// its clock, emits a packet (must be discarded); when a source reaches 3 hits, sets its
/// own flag. Per change of its flags: alerts.
struct Watcher;

const SEEN: usize = 0;
const CLOCKS: usize = 1;
const FLAGS: usize = 2;

impl NetworkFunction for Watcher {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![],
            outputs: vec![PortSpec::optional_packets("out")],
            state: vec![
                StateObjectSpec::shared("seen"),
                StateObjectSpec::shared("clocks"),
                StateObjectSpec::shared("flags"),
            ],
            connection_terminating: false,
        }
    }

    fn watches(&self) -> Vec<StateWatch> {
        vec![StateWatch::new("writer", "hits"), StateWatch::new("", "flags")]
    }

    fn on_packet(&self, _: usize, _: &mut Packet, _: &mut dyn NfContext) -> Result<(), NfError> {
        Ok(())
    }

    fn on_state_change(&self, change: &StateChange, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        assert_eq!(change.clock, ctx.clock(), "a callback runs at its change's clock");
        match change.watch {
            0 => {
                ctx.incr(SEEN, b"changes", 1)?;
                ctx.state(CLOCKS, b"", Op::Push { back: true, item: change.clock.to_be_bytes().to_vec() })?;
                ctx.forward(0);
                if change.key != b"all" && change.value == Some(Value::Int(3)) {
                    ctx.set(FLAGS, &change.key, Value::Int(1))?;
                }
            }
            _ => ctx.alert(
                Alert::new("third_hit").with("src", String::from_utf8_lossy(&change.key).into_owned()),
            ),
        }
        Ok(())
    }
}

fn dag() -> Arc<LogicalDag> {
    Arc::new(
        ChainBuilder::new("callbacks")
            .vertex("writer", Arc::new(Writer))
            .vertex("watcher", Arc::new(Watcher))
            .edge("input", "writer.in")
            .edge("writer.out", "output.out")
            .build()
            .expect("chain"),
    )
}

fn input() -> Vec<Packet> {
    (0..300u64).map(|i| udp([10, 0, (i % 7) as u8, (i % 5) as u8], 1_000 * i)).collect()
}

fn cfg() -> EngineConfig {
    EngineConfig { keep: true, ..EngineConfig::default() }
}

fn reference(dag: &Arc<LogicalDag>) -> (EngineReport, Arc<dyn StateStore>) {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let mut e = Engine::new(Arc::clone(dag), Arc::clone(&store), cfg()).expect("engine");
    for p in input() {
        e.process(p).expect("process");
    }
    (e.finish().expect("finish"), store)
}

fn get(store: &dyn StateStore, dag: &LogicalDag, vertex: &str, object: u16, key: &[u8]) -> Option<Value> {
    let v = dag.vertex_id(vertex).expect("vertex") as u32;
    store
        .get(&streamnf_store::StateKey::shared(dag.id, v, object, streamnf_store::KeyBytes::new(key)))
        .expect("get")
}

#[test]
fn every_change_reaches_the_watcher_once_in_clock_order() {
    let dag = dag();
    let (report, store) = reference(&dag);
    let changes = 2 * input().len() as i64;
    assert_eq!(
        get(&*store, &dag, "watcher", SEEN as u16, b"changes"),
        Some(Value::Int(changes)),
        "two changes per packet, each counted once (no callback update lost as a repeat)"
    );
    let Some(Value::List(clocks)) = get(&*store, &dag, "watcher", CLOCKS as u16, b"") else {
        panic!("clock log missing")
    };
    let clocks: Vec<u64> =
        clocks.iter().map(|b| u64::from_be_bytes(b.as_slice().try_into().expect("8 bytes"))).collect();
    assert_eq!(clocks.len() as i64, changes);
    assert!(clocks.windows(2).all(|w| w[0] <= w[1]), "clock order");
    assert_eq!(clocks.first(), Some(&1));
    // 35 sources (7 × 5 address combinations) each reach 3 hits: one flag and one alert each.
    assert_eq!(report.alerts.get("third_hit").copied(), Some(35));
    let w = &report.tasks["watcher"][0];
    assert_eq!(w.callbacks as i64, changes + 35);
    assert_eq!(w.discarded_emits as i64, changes, "emits from callbacks are discarded, counted");
    assert_eq!(report.chain.packets_out.get("out").copied(), Some(input().len() as u64));
}

#[test]
fn a_parallel_run_leaves_the_same_state_and_alerts() {
    let dag = dag();
    let (rep, store) = reference(&dag);
    let want = RunOutputs::from_report(rep, store.snapshot(dag.id));
    for (workers, writer, watcher) in [(2, 1, 1), (2, 3, 2), (1, 2, 3)] {
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
        let mut inst = vec![1; 2];
        inst[dag.vertex_id("writer").expect("w")] = writer;
        inst[dag.vertex_id("watcher").expect("w")] = watcher;
        let par = ParallelConfig {
            workers,
            instances: inst,
            queue_capacity: 64,
            log_capacity: 64,
            batch: 8,
            ..ParallelConfig::default()
        };
        let mut e = ParallelEngine::new(Arc::clone(&dag), Arc::clone(&store), cfg(), par).expect("engine");
        for p in input() {
            e.process(p).expect("process");
        }
        let got = RunOutputs::from_report(e.finish().expect("finish"), store.snapshot(dag.id));
        let d = differences(&want, &got, 8);
        assert!(d.is_empty(), "{workers} workers, writer ×{writer}, watcher ×{watcher}:\n{}", d.join("\n"));
    }
}

#[test]
fn an_unknown_watch_is_a_chain_error_naming_the_vertex() {
    struct Bad(&'static str, &'static str);
    impl NetworkFunction for Bad {
        fn spec(&self) -> NfSpec {
            NfSpec { inputs: vec![PortSpec::packets("in")], ..NfSpec::default() }
        }
        fn watches(&self) -> Vec<StateWatch> {
            vec![StateWatch::new(self.0, self.1)]
        }
        fn on_packet(&self, _: usize, _: &mut Packet, _: &mut dyn NfContext) -> Result<(), NfError> {
            Ok(())
        }
    }
    for (vertex, object, needle) in
        [("nobody", "hits", "unknown vertex `nobody`"), ("writer", "misses", "`misses`")]
    {
        let e = ChainBuilder::new("bad")
            .vertex("writer", Arc::new(Writer))
            .vertex("bad", Arc::new(Bad(vertex, object)))
            .edge("input", "writer.in")
            .edge("writer.out", "bad.in")
            .build()
            .expect_err("must not build")
            .to_string();
        assert!(e.contains("vertex \"bad\"") && e.contains(needle), "{e}");
    }
}
