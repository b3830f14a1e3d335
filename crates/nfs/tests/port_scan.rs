//! The port-scan detector (§2.1, §6): a scan firewall and a TRW analyzer that share
//! nothing but the store. Generated scanners are flagged and nobody else is; the
//! detect-only chain gives the reference run's outputs on every parallel shape; with
//! blocking, a parallel run differs from the reference only by packets of flagged hosts
//! sent after their decision (the NF's documented equivalence); contacts count their
//! first attempt only; the walk's decision does not depend on the order outcomes arrive.

mod common;

use common::{chain, example, generated, instances, parallel, reference};
use etherparse::PacketBuilder;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use streamnf_nfs::port_scan::{Contact, Outcome, QueuedContact, TrwParams, Verdict, Walk};
use streamnf_packet::trace::RawRecord;
use streamnf_packet::{LinkType, Packet};
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::{Engine, EngineConfig};
use streamnf_store::{EmbeddedStore, KeyBytes, StateKey, StateStore};
use streamnf_tracegen::{GenConfig, ScanConfig};

const DETECT_ONLY: &str = r#"
name = "scan-detect"
[[vertex]]
name = "fw"
nf = "scan_firewall"
[[vertex]]
name = "analyzer"
nf = "scan_analyzer"
[vertex.params]
firewall = "fw"
[[edge]]
from = "input"
to = "fw.in"
[[edge]]
from = "fw.out"
to = "output.out"
"#;

fn scan_trace(seed: u64) -> Vec<RawRecord> {
    generated(GenConfig {
        packets: 6_000,
        flows: 200,
        seed,
        scan: Some(ScanConfig { scanners: 2, ports_per_scanner: 80, targets: 2, open_fraction: 0.1 }),
        ..GenConfig::default()
    })
}

fn flagged(out: &RunOutputs) -> BTreeMap<String, u64> {
    out.alerts
        .iter()
        .filter(|a| a.kind == "port_scan")
        .map(|a| (a.fields["src_ip"].as_str().unwrap_or("?").to_string(), a.clock))
        .collect()
}

fn src_of(frame: &[u8]) -> Option<IpAddr> {
    Packet::new(LinkType::Ethernet, frame.to_vec(), 0).hdr.ip.map(|ip| ip.src)
}

#[test]
fn generated_scanners_are_flagged_blocked_and_nobody_else() {
    let input = scan_trace(7);
    let out = reference(&example("port_scan.toml"), &input);
    let hosts = flagged(&out);
    let want: BTreeSet<String> = ["203.0.113.1", "203.0.113.2"].into_iter().map(String::from).collect();
    assert_eq!(hosts.keys().cloned().collect::<BTreeSet<_>>(), want, "alerts: {:?}", out.alerts);
    for a in &out.alerts {
        let attempts = a.fields["attempts"].as_u64().unwrap_or(0);
        let failures = a.fields["failures"].as_u64().unwrap_or(0);
        assert!(attempts >= 4 && failures >= 4 && failures <= attempts, "{a:?}");
    }
    // Blocked: exactly the flagged hosts' packets after their decision.
    let blocked = out.sinks.get("blocked").cloned().unwrap_or_default();
    assert!(!blocked.is_empty(), "the scanners keep probing after their decision");
    for r in &blocked {
        let src = src_of(&r.data).map(|s| s.to_string()).unwrap_or_default();
        let decided = hosts.get(&src).copied();
        assert!(
            decided.is_some_and(|c| r.clock > c),
            "blocked {src} at clock {} (decided {decided:?})",
            r.clock
        );
    }
    for r in out.sinks.get("out").into_iter().flatten() {
        let src = src_of(&r.data).map(|s| s.to_string()).unwrap_or_default();
        if let Some(&c) = hosts.get(&src) {
            assert!(r.clock <= c, "{src} passed at clock {} after its decision at {c}", r.clock);
        }
    }
}

#[test]
fn detect_only_runs_equal_the_reference_on_every_shape() {
    let dag = chain(DETECT_ONLY).expect("chain");
    let input = scan_trace(11);
    let want = reference(&dag, &input);
    assert_eq!(flagged(&want).len(), 2, "the comparison needs detections");
    for (workers, named) in [
        (2, vec![]),
        (2, vec![("fw", 4)]),
        (1, vec![("fw", 3), ("analyzer", 2)]),
        (2, vec![("fw", 2), ("analyzer", 3)]),
    ] {
        let got = parallel(&dag, &input, workers, &instances(&dag, &named));
        let d = differences(&want, &got, 10);
        assert!(d.is_empty(), "{workers} workers, {named:?}:\n{}", d.join("\n"));
    }
}

/// docs/nfs/port_scan.md: with blocking, a parallel run may let through packets of a
/// flagged host that arrive after its decision (the firewall learns of it through a
/// callback); everything else is equal.
#[test]
fn blocking_runs_differ_only_by_late_packets_of_flagged_hosts() {
    let dag = example("port_scan.toml");
    let input = scan_trace(13);
    let want = reference(&dag, &input);
    let decided = flagged(&want);
    assert_eq!(decided.len(), 2);
    let late = |src: &str, clock: u64| decided.get(src).is_some_and(|&c| clock > c);
    let split = |o: &RunOutputs| {
        let mut early = BTreeSet::new();
        let mut all_late = BTreeSet::new();
        for (port, recs) in &o.sinks {
            for r in recs {
                let src = src_of(&r.data).map(|s| s.to_string()).unwrap_or_default();
                if late(&src, r.clock) {
                    all_late.insert((r.clock, r.data.clone()));
                } else {
                    early.insert((port.clone(), r.clock, r.data.clone()));
                }
            }
        }
        (early, all_late)
    };
    let (want_early, want_late) = split(&want);
    for (workers, named) in [(2, vec![]), (2, vec![("fw", 4)]), (1, vec![("fw", 3)])] {
        let got = parallel(&dag, &input, workers, &instances(&dag, &named));
        assert_eq!(flagged(&got), decided, "{workers} workers {named:?}: same decisions at the same clocks");
        let (early, late_pkts) = split(&got);
        assert_eq!(early, want_early, "{workers} workers {named:?}: packets before the decisions");
        assert_eq!(late_pkts, want_late, "{workers} workers {named:?}: every late packet is out or blocked");
    }
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: &str, ts: u64) -> Packet {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(src, dst, 64).tcp(sport, dport, 1, 1000);
    let b = match flags {
        "S" => b.syn(),
        "SA" => b.syn().ack(1),
        "R" => b.rst(),
        "RA" => b.rst().ack(1),
        _ => b.ack(1),
    };
    b.write(&mut v, b"").expect("frame");
    Packet::new(LinkType::Ethernet, v, ts)
}

fn contact(
    store: &dyn StateStore,
    dag: &streamnf_dag::LogicalDag,
    src: [u8; 4],
    dst: [u8; 4],
    port: u16,
) -> Option<Contact> {
    let fw = dag.vertex_id("fw").expect("fw") as u32;
    let mut k = vec![4];
    k.extend_from_slice(&src);
    k.push(4);
    k.extend_from_slice(&dst);
    k.extend_from_slice(&port.to_be_bytes());
    let v = store.get(&StateKey::shared(dag.id, fw, 0, KeyBytes::new(&k))).expect("get")?;
    Contact::decode(&v)
}

#[test]
fn a_contact_counts_its_first_attempt_and_the_targets_answer_resolves_it() {
    let dag = chain(DETECT_ONLY).expect("chain");
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let mut e = Engine::new(Arc::clone(&dag), Arc::clone(&store), EngineConfig::default()).expect("engine");
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let ms = 1_000_000;
    e.process(tcp(a, b, 4000, 80, "S", ms)).expect("p"); // clock 1: first attempt at :80
    e.process(tcp(a, b, 4001, 80, "S", 2 * ms)).expect("p"); // clock 2: retry, not counted
    e.process(tcp(b, a, 80, 4000, "SA", 3 * ms)).expect("p"); // clock 3: success
    e.process(tcp(a, b, 4002, 23, "S", 4 * ms)).expect("p"); // clock 4: attempt at :23
    e.process(tcp(b, a, 23, 4002, "RA", 5 * ms)).expect("p"); // clock 5: refused
    e.process(tcp(a, b, 4003, 25, "S", 6 * ms)).expect("p"); // clock 6: never answered
    e.process(tcp(a, b, 4000, 80, "R", 7 * ms)).expect("p"); // the prober's own RST: no contact
    e.finish().expect("finish");
    let at80 = contact(&*store, &dag, a, b, 80).expect("contact :80");
    assert_eq!((at80.outcome, at80.clock, at80.ts_ns), (Outcome::Success, 1, ms));
    assert_eq!(contact(&*store, &dag, a, b, 23).map(|c| c.outcome), Some(Outcome::Failure));
    assert_eq!(contact(&*store, &dag, a, b, 25).map(|c| (c.outcome, c.clock)), Some((Outcome::Pending, 6)));
    assert_eq!(contact(&*store, &dag, b, a, 4000), None, "answers and resets open no contact");
}

#[test]
fn chain_errors_name_the_vertex_and_what_is_missing() {
    let no_fw = DETECT_ONLY.replace("firewall = \"fw\"", "");
    let e = chain(&no_fw).expect_err("analyzer without firewall");
    assert!(e.contains("analyzer") && e.contains("firewall"), "{e}");
    let wrong = DETECT_ONLY.replace("firewall = \"fw\"", "firewall = \"fw2\"");
    let e = chain(&wrong).expect_err("unknown watched vertex");
    assert!(e.contains("analyzer") && e.contains("fw2"), "{e}");
    let bad = DETECT_ONLY.replace("firewall = \"fw\"", "firewall = \"fw\"\ntheta1 = 0.9");
    let e = chain(&bad).expect_err("theta1 > theta0");
    assert!(e.contains("theta1"), "{e}");
}

fn arb_contacts() -> impl Strategy<Value = Vec<(bool, u8)>> {
    // Per contact: failed?, and how many later attempts go out before its answer arrives.
    prop::collection::vec((any::<bool>(), any::<u8>()), 1..40)
}

proptest! {
    /// First attempts reach the analyzer in clock order (the runtime delivers callbacks in
    /// clock order); answers come any number of attempts later. However late each answer
    /// is, the walk reaches the same verdict with the same counts as when every answer
    /// comes at once.
    #[test]
    fn the_walk_does_not_depend_on_when_answers_arrive(contacts in arb_contacts()) {
        let p = TrwParams { timeout_ns: u64::MAX, ..TrwParams::default() };
        let dst = |i: usize| vec![4, 10, 0, 0, 9, (i >> 8) as u8, i as u8];
        let events = |delay: &dyn Fn(usize) -> usize| -> Vec<QueuedContact> {
            let mut ev: Vec<((usize, u8), QueuedContact)> = Vec::new();
            for (i, &(failed, _)) in contacts.iter().enumerate() {
                let clock = i as u64 + 1;
                let outcome = if failed { Outcome::Failure } else { Outcome::Success };
                ev.push(((i, 0), QueuedContact { clock, ts_ns: clock, outcome: Outcome::Pending, dst: dst(i) }));
                ev.push(((i + delay(i), 1), QueuedContact { clock, ts_ns: clock, outcome, dst: dst(i) }));
            }
            ev.sort_by_key(|(k, _)| *k);
            ev.into_iter().map(|(_, c)| c).collect()
        };
        let run = |ev: Vec<QueuedContact>| {
            let mut w = Walk::decode(&[0u8; 21]).expect("empty walk");
            let mut decided = false;
            for c in ev {
                w.update(c, &p);
                if w.verdict == Verdict::ScannerNow {
                    decided = true;
                    w.verdict = Verdict::Scanner;
                }
            }
            (w.attempts, w.failures, w.restarts, decided)
        };
        let at_once = run(events(&|_| 0));
        let late = run(events(&|i| usize::from(contacts[i].1 % 16)));
        prop_assert_eq!(at_once, late);
    }
}
