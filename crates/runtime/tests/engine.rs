//! Engine behaviour with small test NFs: clocks, routing, filters, malformed policy,
//! errors and panics, timers, context messages, emulated repeats, outputs and alerts.

mod common;

use etherparse::PacketBuilder;
use proptest::prelude::*;
use std::sync::Arc;
use streamnf_dag::{
    Alert, ChainBuilder, ContextMsg, LogicalDag, NetworkFunction, NfContext, NfError, NfSpec, PortSpec,
    ReadSet, StateExt, StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, LinkType, MalformedPolicy, Packet};
use streamnf_runtime::context::{CallSite, TaskContext};
use streamnf_runtime::engine::EngineReport;
use streamnf_runtime::prefetch::{PrefetchSite, Prefetched, Prefetcher};
use streamnf_runtime::{Engine, EngineConfig, ParallelConfig, ParallelEngine};
use streamnf_store::{EmbeddedStore, LocalStore, Op, StateStore, Update, Value};

fn tcp(src: [u8; 4], sport: u16, ts: u64) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, [192, 0, 2, 1], 64)
        .tcp(sport, 80, 1, 1000)
        .write(&mut v, b"data")
        .expect("build");
    Packet::new(LinkType::Ethernet, v, ts)
}

fn udp(src: [u8; 4], ts: u64) -> Packet {
    common::udp(src, [192, 0, 2, 1], 5000, 53, b"q", ts)
}

/// Counts packets per source (per-flow) and in total (shared); alerts with the clock on
/// every packet whose payload says "alert"; panics on "panic"; errors on "error";
/// schedules a timer 1 s later on "timer".
struct Counter;

const PER_SRC: usize = 0;
const TOTAL: usize = 1;

impl NetworkFunction for Counter {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out"), PortSpec::context("seen", "seen")],
            state: vec![
                StateObjectSpec::per_flow("per_src", Flowspace(vec![Field::SrcIp])),
                StateObjectSpec::shared("total"),
            ],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let src = pkt.hdr.ip.map(|i| i.src.to_string()).unwrap_or_default();
        let n = ctx.incr(PER_SRC, src.as_bytes(), 1)?;
        ctx.incr_nb(TOTAL, b"", 1)?;
        match pkt.payload() {
            b"alert" => ctx.alert(Alert::new("seen").with("src_ip", src.clone()).with("n", n)),
            b"panic" => panic!("test NF panics on purpose"),
            b"error" => return Err(NfError::BadInput("error payload".into())),
            b"timer" => ctx.schedule_timer(ctx.now_ns() + 1_000_000_000, src.clone().into_bytes()),
            _ => {}
        }
        ctx.emit_context(1, serde_json::json!({"src_ip": src, "n": n}));
        ctx.forward(0);
        Ok(())
    }

    fn on_timer(&self, payload: &[u8], ctx: &mut dyn NfContext) -> Result<(), NfError> {
        ctx.alert(Alert::new("timer").with("src_ip", String::from_utf8_lossy(payload).to_string()));
        Ok(())
    }
}

/// Alerts on every context message it receives.
struct Listener;

impl NetworkFunction for Listener {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::context("seen", "seen")],
            outputs: vec![],
            state: vec![StateObjectSpec::shared("msgs")],
            connection_terminating: false,
        }
    }
    fn on_packet(&self, _: usize, _: &mut Packet, _: &mut dyn NfContext) -> Result<(), NfError> {
        Err(NfError::BadInput("listener takes no packets".into()))
    }
    fn on_context(&self, _: usize, msg: &ContextMsg, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        ctx.incr(0, b"", 1)?;
        ctx.alert(Alert::new("context").with("msg", msg.clone()));
        Ok(())
    }
}

fn payload_packet(payload: &[u8], ts: u64) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 9], [192, 0, 2, 1], 64)
        .tcp(1234, 80, 1, 1000)
        .write(&mut v, payload)
        .expect("build");
    Packet::new(LinkType::Ethernet, v, ts)
}

fn chain(policy: MalformedPolicy) -> Arc<LogicalDag> {
    Arc::new(
        ChainBuilder::new("engine-test")
            .vertex("count", Arc::new(Counter))
            .vertex("listen", Arc::new(Listener))
            .edge_filtered("input", "count.in", "tcp")
            .edge("count.seen", "listen.seen")
            .edge("count.out", "output.all")
            .edge_filtered("count.out", "output.from_a", "src host 10.0.0.1")
            .malformed(policy)
            .build()
            .expect("valid chain"),
    )
}

fn engine(policy: MalformedPolicy, store: Arc<dyn StateStore>) -> Engine {
    Engine::new(chain(policy), store, EngineConfig { keep: true, ..EngineConfig::default() }).expect("engine")
}

/// `input` through the single-instance engine on `store`, outputs kept.
fn reference_run(dag: &Arc<LogicalDag>, store: Arc<dyn StateStore>, input: &[Packet]) -> EngineReport {
    let cfg = EngineConfig { keep: true, ..EngineConfig::default() };
    let mut e = Engine::new(Arc::clone(dag), store, cfg).expect("engine");
    for p in input {
        e.process(p.clone()).expect("process");
    }
    e.finish().expect("finish")
}

/// `input` through the parallel engine shaped by `par` on `store`, outputs kept; with
/// `replay`, the engine can replay logged packets from `input` (fault tolerance).
fn parallel_run(
    dag: &Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    par: ParallelConfig,
    input: &[Packet],
    replay: bool,
) -> EngineReport {
    let cfg = EngineConfig { keep: true, ..EngineConfig::default() };
    let mut e = ParallelEngine::new(Arc::clone(dag), store, cfg, par).expect("parallel engine");
    if replay {
        let frames = Arc::new(input.to_vec());
        e.set_replay_input(Arc::new(move |i| frames.get(i as usize).cloned()));
    }
    for p in input {
        e.process(p.clone()).expect("process");
    }
    e.finish().expect("finish")
}

#[test]
fn routes_filters_counts_and_assigns_clocks() {
    let mut e = engine(MalformedPolicy::Drop, Arc::new(EmbeddedStore::new()));
    for (i, src) in [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 1]].into_iter().enumerate() {
        e.process(tcp(src, 1000 + i as u16, i as u64)).expect("process");
    }
    e.process(udp([10, 0, 0, 1], 10)).expect("udp");
    let state = e.final_state();
    let r = e.finish().expect("finish");
    assert_eq!(r.chain.packets_in, 4);
    assert_eq!(r.chain.packets_out.get("all"), Some(&3));
    assert_eq!(r.chain.packets_out.get("from_a"), Some(&2));
    assert_eq!(r.chain.unmatched_input, 1, "the UDP packet matches no input edge");
    assert_eq!(r.chain.dropped, 1);
    let clocks: Vec<u64> = r.sink_records["all"].iter().map(|s| s.clock).collect();
    assert_eq!(clocks, vec![1, 2, 3]);
    // Per-flow state is keyed with its owner task; shared is not.
    let per_src: Vec<(&String, &Value)> = state.iter().filter(|(k, _)| k.contains("/0/0/")).collect();
    assert_eq!(per_src.len(), 2, "{state:?}");
    assert!(state.values().any(|v| *v == Value::Int(2)), "10.0.0.1 counted twice: {state:?}");
    // Context messages reached the listener, one per counted packet.
    assert_eq!(r.alerts.get("context"), Some(&3));
    assert_eq!(r.tasks["count"][0].contexts_out, 3);
}

#[test]
fn malformed_packets_are_counted_and_dropped_or_passed() {
    let mut good = tcp([10, 0, 0, 1], 1, 0);
    let mut bad = good.clone();
    bad.data.truncate(40); // cut inside the TCP header
    bad.reparse();
    assert!(bad.malformed.is_some());
    good.reparse();
    for (policy, expect_out) in [(MalformedPolicy::Drop, 1u64), (MalformedPolicy::Pass, 2)] {
        let mut e = engine(policy, Arc::new(EmbeddedStore::new()));
        e.process(good.clone()).expect("good");
        e.process(bad.clone()).expect("bad");
        let r = e.finish().expect("finish");
        assert_eq!(r.chain.malformed.get("truncated_tcp"), Some(&1), "{policy:?}");
        // A truncated TCP header still has IP proto 6, so `tcp` admits it when passed.
        assert_eq!(r.chain.packets_out["all"], expect_out, "{policy:?}");
    }
}

#[test]
fn nf_errors_and_panics_are_isolated_and_counted() {
    let mut e = engine(MalformedPolicy::Drop, Arc::new(EmbeddedStore::new()));
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    e.process(payload_packet(b"panic", 1)).expect("panic isolated");
    std::panic::set_hook(prev);
    e.process(payload_packet(b"error", 2)).expect("error isolated");
    e.process(payload_packet(b"fine", 3)).expect("fine");
    let r = e.finish().expect("finish");
    let t = &r.tasks["count"][0];
    assert_eq!((t.nf_panics, t.nf_errors), (1, 1));
    assert_eq!(r.chain.packets_out["all"], 1);
    assert_eq!(r.chain.dropped, 2);
}

#[test]
fn timers_fire_in_trace_time_without_a_clock_of_their_own() {
    let mut e = engine(MalformedPolicy::Drop, Arc::new(EmbeddedStore::new()));
    e.process(payload_packet(b"timer", 1_000)).expect("p1");
    e.process(payload_packet(b"x", 500_000_000)).expect("p2");
    assert_eq!(e.finish().expect("finish").alerts.get("timer"), None, "not due yet");
    let mut e = engine(MalformedPolicy::Drop, Arc::new(EmbeddedStore::new()));
    e.process(payload_packet(b"timer", 1_000)).expect("p1");
    e.process(payload_packet(b"x", 2_000_000_000)).expect("p2");
    let r = e.finish().expect("finish");
    let timer = r.alert_records.iter().find(|a| a.kind == "timer").expect("timer fired");
    assert_eq!(timer.ts_ns, 1_000_001_000);
    assert_eq!(timer.clock, 1, "the timer runs at the clock of the last packet before it");
    let p2 = r.sink_records["all"].last().expect("p2 out");
    assert_eq!(p2.clock, 2, "a timer never renumbers the packets after it");
}

#[test]
fn alerts_carry_kind_vertex_clock_ts_and_subject() {
    let mut e = engine(MalformedPolicy::Drop, Arc::new(EmbeddedStore::new()));
    e.process(payload_packet(b"x", 5)).expect("p1");
    e.process(payload_packet(b"alert", 7_000_000_123)).expect("p2");
    let r = e.finish().expect("finish");
    let a = r.alert_records.iter().find(|a| a.kind == "seen").expect("alert");
    let j = a.to_json();
    assert_eq!(j["kind"], "seen");
    assert_eq!(j["vertex"], "count");
    assert_eq!(j["clock"], 2);
    assert_eq!(j["ts_ns"], 7_000_000_123u64);
    assert_eq!(j["src_ip"], "10.0.0.9");
    assert_eq!(j["n"], 2);
}

/// Runs `f` with a task context of vertex 0, task 0 of DAG 7 at `clock`.
fn with_ctx<T>(
    store: &dyn StateStore,
    per_flow: &[bool],
    clock: u64,
    f: impl FnOnce(&mut TaskContext) -> T,
) -> T {
    with_prefetched(store, per_flow, clock, None, f)
}

/// Like [`with_ctx`], with reads served from `prefetched` (asynchronous mode).
fn with_prefetched<T>(
    store: &dyn StateStore,
    per_flow: &[bool],
    clock: u64,
    prefetched: Option<&Prefetched>,
    f: impl FnOnce(&mut TaskContext) -> T,
) -> T {
    let (mut emits, mut alerts, mut timers) = (Vec::new(), Vec::new(), Vec::new());
    let site = CallSite {
        store,
        dag_id: 7,
        vertex: 0,
        task: 0,
        slot: 0,
        per_flow,
        clock,
        now_ns: 0,
        first_seq: 0,
        log_reads: false,
        untagged: None,
        prefetched,
        declared: &[],
    };
    let mut ctx = TaskContext {
        site,
        seq: 0,
        emits: &mut emits,
        alerts: &mut alerts,
        timers: &mut timers,
        state_ops: 0,
        declared_updated: 0,
    };
    f(&mut ctx)
}

/// Names one read, `k` of object 0, for any packet (asynchronous mode).
struct ReadsK;

impl NetworkFunction for ReadsK {
    fn spec(&self) -> NfSpec {
        NfSpec::default()
    }
    fn on_packet(&self, _: usize, _: &mut Packet, _: &mut dyn NfContext) -> Result<(), NfError> {
        Ok(())
    }
    fn prefetch(&self, _: usize, _: &Packet, reads: &mut ReadSet<'_>) {
        reads.read(0, b"k");
    }
}

#[test]
fn a_prefetched_read_is_served_until_the_task_updates_its_key() {
    let store = EmbeddedStore::new();
    let per_flow = [true];
    with_ctx(&store, &per_flow, 1, |ctx| ctx.set(0, b"k", Value::Int(40))).expect("set");
    let prefetched = Prefetched::default();
    let site = PrefetchSite { dag_id: 7, vertex: 0, slot: 0, per_flow: &per_flow };
    let pkt = Packet::new(LinkType::Ethernet, vec![0; 60], 0);
    let fetched = Prefetcher::default().run(&ReadsK, &site, &[(0, 0, &pkt)], &store, &prefetched);
    assert_eq!(fetched, 1);
    // Another writer changes the key behind the prefetch: the batch still sees what arrived.
    store
        .execute(&Update::new(
            streamnf_runtime::context::state_key(7, 0, 0, &per_flow, 0, b"k").expect("key"),
            Op::Set(Value::Int(1)),
            streamnf_store::UpdateTag::new(2, 0),
            0,
        ))
        .expect("set behind");
    let (first, seq, after) = with_prefetched(&store, &per_flow, 3, Some(&prefetched), |ctx| {
        let first = ctx.get_int(0, b"k").expect("read");
        let seq = ctx.seq;
        ctx.incr(0, b"k", 1).expect("incr");
        (first, seq, ctx.get_int(0, b"k").expect("read after the update"))
    });
    assert_eq!(first, 40, "served from the prefetch");
    assert_eq!(seq, 1, "a served read numbers the input's updates as a store read does");
    assert_eq!(after, 2, "after its own update the task reads the store");
    assert_eq!(prefetched.end_batch(), 1);
}

#[test]
fn repeated_clock_is_emulated_through_the_nf_api() {
    // The same input processed twice with the same clock (a replay) must not count twice.
    let store = EmbeddedStore::new();
    let per_flow = [true, false];
    let run = |clock: u64| -> i64 {
        with_ctx(&store, &per_flow, clock, |ctx| {
            let a = ctx.incr(PER_SRC, b"k", 1).expect("incr");
            let b = ctx.incr(PER_SRC, b"k", 1).expect("incr again in the same input");
            assert_eq!(b, a + 1, "two updates of one input are distinct");
            b
        })
    };
    assert_eq!(run(1), 2);
    assert_eq!(run(1), 2, "replay of clock 1 is emulated");
    assert_eq!(run(2), 4, "a new clock applies");
    let snap = store.snapshot(7);
    assert_eq!(snap.values().next(), Some(&Value::Int(4)));
}

#[test]
fn recorded_random_values_replay_identically() {
    // Appendix: a replayed input (same clock, same order of calls) sees the same random
    // values and wall-clock times; a new input sees new ones.
    let store = EmbeddedStore::new();
    store
        .register_custom_op(streamnf_runtime::context::RECORD_OP, streamnf_runtime::context::record_op())
        .expect("register");
    let per_flow = [false];
    let run = |clock: u64| -> (u64, u64, u64) {
        with_ctx(&store, &per_flow, clock, |ctx| {
            let a = ctx.random().expect("random");
            let b = ctx.random().expect("random again");
            let t = ctx.wall_clock_ns().expect("wall clock");
            (a, b, t)
        })
    };
    let first = run(5);
    assert_ne!(first.0, first.1, "two calls in one input differ");
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(run(5), first, "the replay of clock 5 sees the recorded values");
    let other = run(6);
    assert_ne!((other.0, other.1), (first.0, first.1), "a new input gets new values");
    assert!(other.2 > first.2, "and the time now");
    assert!(store.snapshot(7).is_empty(), "recorded values live in the clock log only");
    store.gc_below(7);
    assert_eq!(store.clock_log_len(), 0, "and go with it");
}

#[test]
fn other_tasks_cannot_update_per_flow_state() {
    let store = EmbeddedStore::new();
    with_ctx(&store, &[true], 1, |owner| owner.incr(0, b"flow", 1)).expect("owner updates");
    // Task 1 writes its own key space: per-flow keys carry the owner, so task 1 cannot
    // even address task 0's object through the NF API; the store refuses a forged update.
    let key = streamnf_store::StateKey::per_flow(7, 0, 0, 0, streamnf_store::KeyBytes::new(b"flow"));
    let forged = streamnf_store::Update::new(key, Op::Incr(1), streamnf_store::UpdateTag::new(9, 0), 1);
    assert!(matches!(store.execute(&forged), Err(streamnf_store::StoreError::NotOwner { .. })));
    assert_eq!(store.get(&key).expect("read"), Some(Value::Int(1)));
}

#[test]
fn outputs_are_written_as_captures() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = EngineConfig { out_dir: Some(dir.path().to_path_buf()), ..EngineConfig::default() };
    let mut e =
        Engine::new(chain(MalformedPolicy::Drop), Arc::new(EmbeddedStore::new()), cfg).expect("engine");
    for i in 0..10u8 {
        e.process(tcp([10, 0, 0, 1 + i % 2], 2000 + u16::from(i), u64::from(i) * 1000)).expect("p");
    }
    let r = e.finish().expect("finish");
    assert_eq!(r.output_files.len(), 2);
    for (name, want) in [("all", 10usize), ("from_a", 5)] {
        let (recs, err) =
            streamnf_packet::trace::read_all(dir.path().join(format!("{name}.pcap"))).expect("read back");
        assert!(err.is_none());
        assert_eq!(recs.len(), want, "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Externalized and local state give the same outputs, alerts and counters.
    #[test]
    fn externalized_equals_local(srcs in proptest::collection::vec((1u8..6, any::<bool>()), 1..60)) {
        let run = |store: Arc<dyn StateStore>| {
            let mut e = engine(MalformedPolicy::Drop, Arc::clone(&store));
            for (i, (s, alert)) in srcs.iter().enumerate() {
                let mut p = payload_packet(if *alert { b"alert" } else { b"x" }, i as u64);
                p.data[14 + 15] = *s; // last octet of the source address
                p.reparse();
                e.process(p).expect("process");
            }
            let r = e.finish().expect("finish");
            let alerts: Vec<serde_json::Value> = r.alert_records.iter().map(|a| a.to_json()).collect();
            (r.sink_records, alerts, store.snapshot(LogicalDag::id_of("engine-test")))
        };
        let (out_e, alerts_e, state_e) = run(Arc::new(EmbeddedStore::new()));
        let (out_l, alerts_l, state_l) = run(Arc::new(LocalStore::new()));
        prop_assert_eq!(out_e, out_l);
        prop_assert_eq!(alerts_e, alerts_l);
        prop_assert_eq!(state_e, state_l);
    }
}

fn from(src: [u8; 4], payload: &[u8], ts: u64) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, [192, 0, 2, 1], 64)
        .tcp(1000 + u16::from(src[3]), 80, 1, 1000)
        .write(&mut v, payload)
        .expect("build");
    Packet::new(LinkType::Ethernet, v, ts)
}

/// Errors, panics, context messages, filters and malformed frames behave in the parallel
/// engine exactly as in the reference run, for several shapes. (Timers are not in this
/// input: the parallel engine fires a timer when the root learns of it, which can be after
/// the packet the reference fires it before; see `parallel_timers_fire_late_not_never`.)
#[test]
fn parallel_engine_matches_the_reference_on_every_kind_of_input() {
    use streamnf_runtime::compare::{differences, RunOutputs};
    let payloads: [&[u8]; 5] = [b"", b"alert", b"panic", b"error", b"x"];
    let mut input = Vec::new();
    for i in 0..600u64 {
        let ts = 1_000 + i * 50_000_000; // 50 ms apart: timers (1 s) fire mid-run
        let src = [10, 0, 0, (i % 5) as u8 + 1];
        let p = match i % 13 {
            7 => udp(src, ts),
            11 => {
                let mut p = from(src, b"", ts);
                p.data.truncate(20); // malformed: cut in the IPv4 header
                Packet::new(LinkType::Ethernet, p.data, ts)
            }
            _ => from(src, payloads[(i as usize / 3) % payloads.len()], ts),
        };
        input.push(p);
    }
    for policy in [MalformedPolicy::Drop, MalformedPolicy::Pass] {
        let dag = chain(policy);
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
        let r = reference_run(&dag, Arc::clone(&store), &input);
        assert!(r.alerts.get("context").copied().unwrap_or(0) > 100, "{:?}", r.alerts);
        let want_errors: (u64, u64) = (r.tasks["count"][0].nf_errors, r.tasks["count"][0].nf_panics);
        assert!(want_errors.0 > 0 && want_errors.1 > 0);
        let want = RunOutputs::from_report(r, store.snapshot(dag.id));
        for (workers, n) in [(1, 3u32), (2, 1), (2, 4)] {
            let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
            let par =
                ParallelConfig { workers, instances: vec![n, 2], batch: 4, ..ParallelConfig::default() };
            let r = parallel_run(&dag, Arc::clone(&store), par, &input, false);
            let errors = r.tasks["count"].iter().fold((0, 0), |a, t| (a.0 + t.nf_errors, a.1 + t.nf_panics));
            assert_eq!(errors, want_errors, "{workers} workers, {n} instances");
            let got = RunOutputs::from_report(r, store.snapshot(dag.id));
            let d = differences(&want, &got, 12);
            assert!(d.is_empty(), "{policy:?}, {workers} workers, {n} instances:\n{}", d.join("\n"));
        }
    }
}

/// With fault tolerance, an NF panic is a task failure (§5.1): the task is replaced and the
/// log replayed; the replay hits the same panic, which is then only isolated. The outputs,
/// alerts and state equal the reference run's, and every panicking input is listed once.
#[test]
fn a_panic_fails_the_task_over_and_the_run_stays_equivalent() {
    use streamnf_runtime::compare::{differences, RunOutputs};
    let payloads: [&[u8]; 4] = [b"", b"alert", b"x", b"y"];
    let input: Vec<Packet> = (0..800u64)
        .map(|i| {
            let src = [10, 0, 0, (i % 7) as u8 + 1];
            let payload: &[u8] = if i % 97 == 50 { b"panic" } else { payloads[i as usize % 4] };
            from(src, payload, 1_000 + i * 1_000)
        })
        .collect();
    let dag = chain(MalformedPolicy::Drop);
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let r = reference_run(&dag, Arc::clone(&store), &input);
    let panics = r.tasks["count"][0].nf_panics;
    assert_eq!(panics, 8);
    let want = RunOutputs::from_report(r, store.snapshot(dag.id));
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let par = ParallelConfig {
        workers: 2,
        instances: vec![2, 2],
        fault_tolerance: true,
        batch: 4,
        ..ParallelConfig::default()
    };
    let r = parallel_run(&dag, Arc::clone(&store), par, &input, true);
    let failed: Vec<&serde_json::Value> = r.events.iter().filter(|v| v["kind"] == "panic").collect();
    assert_eq!(failed.len() as u64, panics, "{:?}", r.events);
    assert!(
        failed.iter().all(|v| v["outcome"].as_str().unwrap_or("").contains("replayed")),
        "{:?}",
        r.events
    );
    let got = RunOutputs::from_report(r, store.snapshot(dag.id));
    let d = differences(&want, &got, 12);
    assert!(d.is_empty(), "{}", d.join("\n"));
}

/// Timers in the parallel engine: every timer the reference run fires also fires, at the
/// same trace time and with the same payload; its logical clock may be later (the root
/// learns of a timer only once the packet that set it has been processed), which is the
/// documented limit of timers under parallelism.
#[test]
fn parallel_timers_fire_late_not_never() {
    let input: Vec<Packet> = (0..400u64)
        .map(|i| {
            from(
                [10, 0, 0, (i % 4) as u8 + 1],
                if i % 7 == 0 { b"timer" } else { b"" },
                1_000 + i * 20_000_000,
            )
        })
        .collect();
    let dag = chain(MalformedPolicy::Drop);
    let reference = reference_run(&dag, Arc::new(EmbeddedStore::new()), &input);
    let timers = |alerts: &[streamnf_runtime::alerts::AlertRecord]| {
        let mut v: Vec<(u64, String)> = alerts
            .iter()
            .filter(|a| a.kind == "timer")
            .map(|a| (a.ts_ns, a.fields.get("src_ip").map(|x| x.to_string()).unwrap_or_default()))
            .collect();
        v.sort();
        v
    };
    let want = timers(&reference.alert_records);
    assert!(want.len() > 40, "{}", want.len());
    for workers in 1..=2 {
        let par = ParallelConfig { workers, instances: vec![3, 1], ..ParallelConfig::default() };
        let r = parallel_run(&dag, Arc::new(EmbeddedStore::new()), par, &input, false);
        let got = timers(&r.alert_records);
        assert_eq!(got, want, "{workers} workers");
    }
}

/// An output that cannot be written ends a parallel run with one error, and dropping the
/// engine afterwards returns (its workers stop).
#[test]
fn parallel_output_error_is_reported_and_the_engine_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let cfg = EngineConfig { out_dir: Some(not_a_dir), ..EngineConfig::default() };
    let par =
        ParallelConfig { workers: 2, instances: vec![2, 1], queue_capacity: 8, ..ParallelConfig::default() };
    let mut e = ParallelEngine::new(chain(MalformedPolicy::Drop), Arc::new(EmbeddedStore::new()), cfg, par)
        .expect("parallel engine");
    let mut failed = None;
    for i in 0..20_000u64 {
        if let Err(err) = e.process(from([10, 0, 0, (i % 3) as u8 + 1], b"", 1_000 + i)) {
            failed = Some(err);
            break;
        }
    }
    let err = match failed {
        Some(err) => err,
        None => match e.finish() {
            Err(err) => err,
            Ok(_) => panic!("writing into a file as a directory must fail"),
        },
    };
    assert!(err.to_string().contains("out") || err.kind() == std::io::ErrorKind::NotADirectory, "{err}");
}

/// A parallel run on a store that an earlier run used resumes its clocks after the
/// persisted value plus the persist interval: no clock is handed out twice across runs.
#[test]
fn a_restarted_root_never_reuses_a_clock() {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let dag = chain(MalformedPolicy::Drop);
    let run = |n: u64| {
        let par = ParallelConfig {
            workers: 2,
            instances: vec![2, 1],
            persist_every: 100,
            ..ParallelConfig::default()
        };
        let cfg = EngineConfig { keep: true, ..EngineConfig::default() };
        let mut e = ParallelEngine::new(Arc::clone(&dag), Arc::clone(&store), cfg, par).expect("engine");
        for i in 0..n {
            e.process(from([10, 0, 0, (i % 3) as u8 + 1], b"", 1_000 + i)).expect("process");
        }
        let r = e.finish().expect("finish");
        let clocks: Vec<u64> = r.sink_records["all"].iter().map(|s| s.clock).collect();
        (clocks.iter().copied().min().unwrap_or(0), clocks.iter().copied().max().unwrap_or(0), clocks.len())
    };
    let (first_min, first_max, n1) = run(1_050);
    assert_eq!((first_min, first_max, n1), (1, 1_050, 1_050));
    // The first run persisted 1001 last (every 100 clocks, before handing it out), so the
    // second run starts at 1001 + 100.
    let (second_min, _, n2) = run(10);
    assert_eq!(n2, 10);
    assert_eq!(second_min, 1_101, "resumes at the last persisted clock + the interval");
    assert!(second_min > first_max);
}
