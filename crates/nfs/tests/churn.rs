//! Chain-wide guarantees under churn (§5): every example chain, with random schedules of
//! scale up/down, fail, kill, clone and straggle events, gives the single-instance run's
//! packets, alerts and final state; with guarantees off, a failover and a clone do not.

mod common;

use common::{churn, churn_on, example, generated, reference, ChurnShape};
use std::sync::{Arc, OnceLock};
use streamnf_dag::LogicalDag;
use streamnf_packet::trace::RawRecord;
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::events::{random_events, EventSpec};
use streamnf_store::EmbeddedStore;
use streamnf_tracegen::{GenConfig, ScanConfig, TrojanConfig};

/// The example chains, the port-scan one in detect-only mode (with blocking, its
/// equivalence relation is looser: see docs/nfs/port_scan.md), and the NAT in asynchronous
/// mode (its reads logged under declared tags and prefetched round by round).
const CHAINS: [&str; 7] = [
    "figure1.toml",
    "nat.toml",
    "acl.toml",
    "http_proxy.toml",
    "trojan.toml",
    "port_scan.toml",
    "nat_async.toml",
];

fn chain(name: &str) -> Arc<LogicalDag> {
    if name == "nat_async.toml" {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nat.toml");
        let text = std::fs::read_to_string(path).expect("example");
        let text = text.replace("[vertex.params]", "[vertex.params]\nmode = \"async\"");
        return common::chain(&text).expect("async nat");
    }
    if name == "port_scan.toml" {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/port_scan.toml");
        let text = std::fs::read_to_string(path).expect("example");
        let detect_only: String =
            text.lines().filter(|l| !l.trim_start().starts_with("analyzer =")).collect::<Vec<_>>().join("\n");
        return common::chain(&detect_only).expect("detect-only port_scan");
    }
    example(name)
}

/// One generated trace with every kind of traffic the example chains react to.
fn trace() -> &'static [RawRecord] {
    static T: OnceLock<Vec<RawRecord>> = OnceLock::new();
    T.get_or_init(|| {
        generated(GenConfig {
            packets: 3000,
            flows: 150,
            seed: 11,
            http_fraction: 0.5,
            http_servers: 4,
            url_pool: 20,
            xss_fraction: 0.1,
            scan: Some(ScanConfig { scanners: 2, ports_per_scanner: 40, ..ScanConfig::default() }),
            trojan: Some(TrojanConfig::default()),
            ..GenConfig::default()
        })
    })
}

/// The reference outputs of each chain over [`trace`], computed once.
fn reference_of(i: usize) -> &'static (Arc<LogicalDag>, RunOutputs) {
    static R: OnceLock<Vec<(Arc<LogicalDag>, RunOutputs)>> = OnceLock::new();
    &R.get_or_init(|| {
        CHAINS
            .iter()
            .map(|c| {
                let dag = chain(c);
                let out = reference(&dag, trace());
                (dag, out)
            })
            .collect()
    })[i]
}

/// Parsed specs whose instance numbers count running instances (after a clone, which of the
/// two survives depends on speed).
fn parse(specs: &[&str]) -> Vec<EventSpec> {
    specs
        .iter()
        .map(|s| {
            let mut e: EventSpec = s.parse().expect("event spec");
            e.relative = true;
            e
        })
        .collect()
}

fn check(i: usize, workers: usize, instances: &[u32], events: &[EventSpec], guarantees: bool) -> Vec<String> {
    let (dag, want) = reference_of(i);
    let (got, _) = churn(dag, trace(), workers, instances, events, guarantees);
    differences(want, &got, 8)
}

#[test]
fn every_event_kind_on_every_chain_is_equivalent() {
    for (i, c) in CHAINS.iter().enumerate() {
        let (dag, want) = reference_of(i);
        let sent: usize = want.sinks.values().map(Vec::len).sum();
        assert!(sent > 0, "{c}: the reference must output something");
        let first = &dag.vertices[0].name;
        let last = &dag.vertices[dag.vertices.len() - 1].name;
        for specs in [
            vec![format!("at=30% scale {first} to 3"), format!("at=70% scale {first} to 1")],
            vec![format!("at=40% fail {last}/0")],
            vec![format!("at=25% kill {first}/1")],
            vec![format!("at=20% straggle {first}/0 delay=2us"), format!("at=50% clone {first}/0")],
            vec![format!("at=35% clone {last}/0"), format!("at=60% fail {first}/0")],
            // A clone right after a scale-down, while the retired task's clocks may still be
            // in flight (its slot must not become the clone: found on a real capture).
            vec![
                format!("at=5% kill {last}/0"),
                format!("at=12% scale {first} to 1"),
                format!("at=17% clone {first}/0"),
            ],
        ] {
            let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
            let events = parse(&refs);
            let d = check(i, 2, &vec![2; dag.vertices.len()], &events, true);
            assert!(d.is_empty(), "{c} with {specs:?}:\n{}", d.join("\n"));
        }
    }
}

/// A vertex scaled up, down and up again: the second scale-up's new task holds its input
/// while the handover back is still pending, and must still run what comes before it
/// (this hung once). Events close together, on a short trace, one and two workers.
/// A paced input (the root runs the chain itself while it would wait for the next packet,
/// and wakes the workers only for what is left) under every kind of event.
#[test]
fn paced_runs_under_churn_are_equivalent() {
    const SCHEDULE: [&str; 6] = [
        "at=10% scale V to 3",
        "at=25% fail V/1",
        "at=40% clone V/0",
        "at=55% straggle V/0 delay=20us",
        "at=70% kill V/1",
        "at=85% scale V to 1",
    ];
    for (i, name) in CHAINS.iter().enumerate() {
        let (dag, want) = reference_of(i);
        let vertex = &dag.vertices[0].name;
        let specs: Vec<String> = SCHEDULE.iter().map(|s| s.replace(" V", &format!(" {vertex}"))).collect();
        let events = parse(&specs.iter().map(String::as_str).collect::<Vec<_>>());
        let instances = vec![2; dag.vertices.len()];
        let shape =
            ChurnShape { workers: 2, instances: &instances, events: &events, guarantees: true, paced: true };
        let run = churn_on(Arc::new(EmbeddedStore::new()), dag, trace(), &shape);
        let (got, record) = (run.outputs, run.events);
        let diff = differences(want, &got, 8);
        assert!(diff.is_empty(), "{name} paced, events {specs:?}: {diff:#?}");
        assert!(record.len() >= events.len(), "{name}: events not all applied: {record:?}");
    }
}

#[test]
fn scale_up_down_up_does_not_hang() {
    let dag = chain("nat.toml");
    let input = &trace()[..300];
    let want = reference(&dag, input);
    for workers in [1, 2] {
        for gap in [1u64, 5, 40] {
            let specs = [
                format!("at={} scale nat to 2", 2),
                format!("at={} scale nat to 1", 2 + gap),
                format!("at={} scale nat to 2", 2 + 2 * gap),
                format!("at={} fail nat/1", 3 + 2 * gap),
                format!("at={} scale nat to 3", 4 + 3 * gap),
            ];
            let refs: Vec<&str> = specs.iter().map(String::as_str).collect();
            let (got, records) = churn(&dag, input, workers, &[1], &parse(&refs), true);
            assert_eq!(records.len(), specs.len());
            let d = differences(&want, &got, 8);
            assert!(d.is_empty(), "{workers} workers, {specs:?}:\n{}", d.join("\n"));
        }
    }
}

#[test]
fn events_are_reported_with_what_happened() {
    let (dag, _) = reference_of(1);
    // The clone is decided 2048 clocks after its replay, before the trace's 3000 packets end.
    let events = parse(&["at=10% scale nat to 3", "at=15% fail nat/2", "at=25% clone nat/0"]);
    let (_, records) = churn(dag, trace(), 2, &[1], &events, true);
    assert_eq!(records.len(), 3);
    let field = |i: usize, k: &str| records[i].get(k).cloned().unwrap_or_default();
    assert_eq!(field(0, "kind"), "scale");
    assert!(field(0, "moved_partitions").as_u64().unwrap_or(0) > 0, "{records:?}");
    assert!(field(0, "handover_us").as_f64().is_some(), "a handover that completed has a time: {records:?}");
    assert_eq!(field(1, "kind"), "fail");
    assert!(field(1, "replayed").as_u64().unwrap_or(0) > 0, "{records:?}");
    assert!(field(1, "recovery_us").as_f64().is_some(), "{records:?}");
    assert!(field(2, "outcome").as_str().unwrap_or("").contains("kept nat/"), "{records:?}");
}

#[test]
fn a_bad_instance_is_a_clear_error() {
    let (dag, _) = reference_of(1);
    let store: Arc<dyn streamnf_store::StateStore> = Arc::new(streamnf_store::EmbeddedStore::new());
    let par = streamnf_runtime::ParallelConfig {
        workers: 1,
        fault_tolerance: true,
        ..streamnf_runtime::ParallelConfig::default()
    };
    let mut e =
        streamnf_runtime::ParallelEngine::new(Arc::clone(dag), store, common::keep(), par).expect("engine");
    let ev: EventSpec = "at=5 fail nat/3".parse().expect("spec");
    let err = e.apply_event(&ev, 5).expect_err("nat has one instance");
    assert!(err.to_string().contains("`nat` has no instance 3 now (running: 0)"), "{err}");
    let ev: EventSpec = "at=5 scale nat to 4".parse().expect("spec");
    let err = e.apply_event(&ev, 5).expect_err("no slots");
    assert!(err.to_string().contains("task slots"), "{err}");
}

/// The checker can fail: without guarantees, a failover mid-flow loses packets and a
/// cloned straggler's copies go through twice. The same events with guarantees are
/// equivalent.
#[test]
fn without_guarantees_failover_and_clones_are_not_equivalent() {
    for (i, spec) in [
        (0, "at=40% fail ids/0"),
        (1, "at=40% fail nat/0"),
        (0, "at=50% clone ids/0"),
        (1, "at=30% clone nat/0"),
    ] {
        let events = parse(&[spec]);
        let off = check(i, 2, &[1, 1, 1][..reference_of(i).0.vertices.len()], &events, false);
        assert!(!off.is_empty(), "{spec} without guarantees should differ from the reference");
        let on = check(i, 2, &[1, 1, 1][..reference_of(i).0.vertices.len()], &events, true);
        assert!(on.is_empty(), "{spec} with guarantees:\n{}", on.join("\n"));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 100, ..Default::default() })]
    /// ≥ 100 random schedules (scale up/down, fail, kill, clone, straggle, mixed) over the
    /// example chains, random starting instances and 1–2 workers: all equivalent.
    #[test]
    fn random_schedules_are_equivalent(
        which in 0usize..CHAINS.len(),
        seed in proptest::prelude::any::<u64>(),
        k in 1u32..7,
        workers in 1usize..3,
        start in proptest::collection::vec(1u32..4, 3),
    ) {
        let (dag, _) = reference_of(which);
        let instances: Vec<u32> = (0..dag.vertices.len()).map(|v| start[v % start.len()]).collect();
        let events = random_events(dag, &instances, k, seed, trace().len() as u64, 4);
        proptest::prop_assert_eq!(events.len(), k as usize);
        let (_, want) = reference_of(which);
        let (got, applied) = churn(dag, trace(), workers, &instances, &events, true);
        proptest::prop_assert_eq!(applied.len(), events.len(), "every event is applied and reported");
        let d = differences(want, &got, 8);
        let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
        proptest::prop_assert!(d.is_empty(), "{} {instances:?} on {workers} workers, {texts:?}:\n{}", CHAINS[which], d.join("\n"));
    }
}

/// A policy that finds the first vertex's task 0 overloaded in every window, then (from
/// window 4 on) underloaded: automatic churn must scale it up to the limit and back down,
/// and the run stay equivalent.
struct Scripted;

impl streamnf_runtime::manager::Policy for Scripted {
    fn hints(&self, view: &streamnf_runtime::manager::VertexView) -> Vec<streamnf_runtime::manager::Hint> {
        use streamnf_runtime::manager::Hint;
        if view.vertex != "nat" {
            return Vec::new();
        }
        let (vertex, task, reason) = (view.vertex.clone(), 0, "scripted".to_string());
        vec![if view.window < 6 {
            Hint::Overloaded { vertex, task, reason }
        } else {
            Hint::Underloaded { vertex, task, reason }
        }]
    }
}

#[test]
fn manager_hints_scale_automatically_and_stay_equivalent() {
    let dag = chain("nat.toml");
    let input = generated(GenConfig { packets: 120_000, flows: 2000, seed: 5, ..GenConfig::default() });
    let want = reference(&dag, &input);
    let store: Arc<dyn streamnf_store::StateStore> = Arc::new(streamnf_store::EmbeddedStore::new());
    let par = streamnf_runtime::ParallelConfig {
        workers: 2,
        slots: vec![4],
        fault_tolerance: true,
        auto_churn: Some(3),
        policy: Some(Box::new(Scripted)),
        ..streamnf_runtime::ParallelConfig::default()
    };
    let mut e =
        streamnf_runtime::ParallelEngine::new(Arc::clone(&dag), Arc::clone(&store), common::keep(), par)
            .expect("engine");
    for r in &input {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    let rep = e.finish().expect("finish");
    let texts: Vec<String> = rep
        .events
        .iter()
        .map(|v| v.get("event").and_then(|t| t.as_str()).unwrap_or("").to_string())
        .collect();
    assert!(
        texts.iter().any(|t| t.starts_with("auto (overloaded)") && t.ends_with("scale nat to 3")),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t.ends_with("scale nat to 4")), "never beyond the limit: {texts:?}");
    assert!(texts.iter().any(|t| t.starts_with("auto (underloaded)")), "{texts:?}");
    let got = RunOutputs::from_report(rep, store.snapshot(dag.id));
    let d = differences(&want, &got, 8);
    assert!(d.is_empty(), "{}", d.join("\n"));
}
