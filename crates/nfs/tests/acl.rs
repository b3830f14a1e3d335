//! The `acl` NF on crafted packets: first match wins, the default action, the `denied`
//! port, per-rule counters, parameter errors (a bad filter names the rule, the expression
//! and the column), the example chain, and the parallel engine giving the same outputs.

mod common;

use etherparse::PacketBuilder;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use streamnf_dag::chain_file::{load_chain, parse_chain};
use streamnf_dag::{LogicalDag, Params};
use streamnf_filter::Filter;
use streamnf_nfs::acl::{Acl, Action, Rule};
use streamnf_nfs::builtin_registry;
use streamnf_packet::{LinkType, Packet};
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::engine::EngineReport;
use streamnf_runtime::{Engine, EngineConfig, ParallelConfig, ParallelEngine};
use streamnf_store::{EmbeddedStore, StateStore, Value};

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 1000)
        .syn()
        .write(&mut v, b"")
        .expect("build");
    Packet::new(LinkType::Ethernet, v, 1)
}

fn udp(src: [u8; 4], dport: u16) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, [192, 0, 2, 9], 64)
        .udp(5000, dport)
        .write(&mut v, b"q")
        .expect("build");
    Packet::new(LinkType::Ethernet, v, 1)
}

fn icmp(src: [u8; 4]) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, [192, 0, 2, 9], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut v, b"ping")
        .expect("build");
    Packet::new(LinkType::Ethernet, v, 1)
}

/// A chain `input → fw (params) → output.out`, plus `fw.denied → output.denied` when asked.
fn chain(params: &str, denied_port: bool) -> LogicalDag {
    let denied = if denied_port { "[[edge]]\nfrom = \"fw.denied\"\nto = \"output.denied\"\n" } else { "" };
    let src = format!(
        "name = \"acl-test\"\n[[vertex]]\nname = \"fw\"\nnf = \"acl\"\n[vertex.params]\n{params}\n\
         [[edge]]\nfrom = \"input\"\nto = \"fw.in\"\n[[edge]]\nfrom = \"fw.out\"\nto = \"output.out\"\n{denied}"
    );
    parse_chain(&src, "acl-test.toml", &builtin_registry()).unwrap_or_else(|e| panic!("chain: {e}"))
}

fn run(dag: LogicalDag, pkts: Vec<Packet>) -> (EngineReport, BTreeMap<String, Value>) {
    common::run_packets(dag, pkts)
}

/// The value of key `sub` in shared object `object` of the chain's only vertex.
fn shared(state: &BTreeMap<String, Value>, object: u16, sub: &str) -> Option<i64> {
    let hex: String = sub.bytes().map(|b| format!("{b:02x}")).collect();
    let suffix = format!("/0/*/{object}/{hex}");
    state.iter().find(|(k, _)| k.ends_with(&suffix)).and_then(|(_, v)| v.as_int())
}

/// Source addresses of the packets a sink port received, in order.
fn sources(r: &EngineReport, port: &str) -> Vec<u8> {
    r.sink_records
        .get(port)
        .map(|v| {
            v.iter()
                .filter_map(|s| match Packet::new(LinkType::Ethernet, s.data.clone(), 0).hdr.ip?.src {
                    std::net::IpAddr::V4(a) => Some(a.octets()[3]),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

const RULES: &str = r#"default = "deny"
rules = [
  { name = "ssh", action = "allow", filter = "tcp port 22" },
  { name = "no-tcp", action = "deny", filter = "tcp" },
  { action = "allow", filter = "udp" },
]"#;

#[test]
fn first_match_wins_and_unmatched_packets_get_the_default() {
    let pkts = vec![
        tcp([10, 0, 0, 1], [192, 0, 2, 1], 4000, 22), // ssh: allow (also matches `tcp`)
        tcp([10, 0, 0, 2], [192, 0, 2, 1], 4000, 80), // no-tcp: deny
        udp([10, 0, 0, 3], 53),                       // rule2: allow
        icmp([10, 0, 0, 4]),                          // no rule: default deny
        tcp([10, 0, 0, 5], [192, 0, 2, 1], 22, 5555), // ssh (source port): allow
    ];
    let (r, state) = run(chain(RULES, true), pkts);
    assert_eq!(sources(&r, "out"), vec![1, 3, 5]);
    assert_eq!(sources(&r, "denied"), vec![2, 4]);
    assert_eq!(shared(&state, 0, "ssh"), Some(2));
    assert_eq!(shared(&state, 0, "no-tcp"), Some(1));
    assert_eq!(shared(&state, 0, "rule2"), Some(1), "an unnamed rule is counted as rule<index>");
    assert_eq!(shared(&state, 0, "default"), Some(1));
    assert_eq!(shared(&state, 1, "allowed"), Some(3));
    assert_eq!(shared(&state, 1, "denied"), Some(2));
}

#[test]
fn rule_order_decides_when_rules_overlap() {
    let swapped = r#"rules = [
  { name = "no-tcp", action = "deny", filter = "tcp" },
  { name = "ssh", action = "allow", filter = "tcp port 22" },
]"#;
    let (r, state) = run(chain(swapped, true), vec![tcp([10, 0, 0, 1], [192, 0, 2, 1], 4000, 22)]);
    assert_eq!(sources(&r, "denied"), vec![1], "the earlier deny shadows the later allow");
    assert_eq!(shared(&state, 0, "ssh"), None, "a shadowed rule is never hit");
}

#[test]
fn default_is_allow_and_an_unconnected_denied_port_drops() {
    let (r, state) = run(chain("", false), vec![icmp([10, 0, 0, 1]), udp([10, 0, 0, 2], 9)]);
    assert_eq!(sources(&r, "out"), vec![1, 2], "no rules, no default: everything allowed");
    assert_eq!(shared(&state, 0, "default"), Some(2));

    let deny_udp = r#"rules = [ { name = "u", action = "deny", filter = "udp" } ]"#;
    let (r, state) = run(chain(deny_udp, false), vec![icmp([10, 0, 0, 1]), udp([10, 0, 0, 2], 9)]);
    assert_eq!(sources(&r, "out"), vec![1]);
    assert!(!r.sink_records.contains_key("denied"));
    // The denied packet was sent to a port without an edge: it went nowhere.
    assert_eq!((r.tasks["fw"][0].packets_in, r.tasks["fw"][0].packets_out), (2, 1));
    assert_eq!(r.tasks["fw"][0].dropped, 1, "the vertex counts what it sent nowhere as dropped");
    assert_eq!(shared(&state, 1, "denied"), Some(1));
}

#[test]
fn rules_with_alert_raise_acl_match() {
    let p = r#"rules = [ { name = "telnet", action = "deny", filter = "tcp dst port 23", alert = true },
                      { name = "web", action = "allow", filter = "tcp dst port 80" } ]"#;
    let pkts =
        vec![tcp([10, 0, 0, 1], [192, 0, 2, 1], 4000, 23), tcp([10, 0, 0, 2], [192, 0, 2, 1], 4000, 80)];
    let (r, _) = run(chain(p, true), pkts);
    assert_eq!(r.alerts.get("acl_match"), Some(&1));
    let a = &r.alert_records[0];
    assert_eq!(a.fields["rule"], "telnet");
    assert_eq!(a.fields["action"], "deny");
    assert_eq!(a.fields["src_ip"], "10.0.0.1");
    assert_eq!(a.fields["dst_port"], 23);
}

fn build_err(params: &str) -> String {
    let p = Params(toml::from_str::<toml::Table>(params).expect("toml"));
    match builtin_registry().build("acl", &p) {
        Some(Err(e)) => e,
        Some(Ok(_)) => panic!("accepted: {params}"),
        None => panic!("acl is not registered"),
    }
}

#[test]
fn a_bad_filter_names_the_rule_the_expression_and_the_column() {
    let expr = "tcp port 22 and hots 10.0.0.1";
    let col = Filter::compile(expr).expect_err("bad expression").column;
    let e = build_err(&format!(
        "rules = [ {{ action = \"allow\", filter = \"udp\" }}, {{ action = \"deny\", filter = \"{expr}\" }} ]"
    ));
    assert!(e.contains("rules[1]"), "{e}");
    assert!(e.contains(expr), "{e}");
    assert!(e.contains(&format!("column {col}")), "{e}");
    assert!(e.contains("parameter `rules`"), "{e}");
}

#[test]
fn other_bad_parameters_are_rejected_with_their_name() {
    let cases = [
        ("default = \"drop\"", "default"),
        ("colour = 1", "colour"),
        ("rules = \"tcp\"", "rules"),
        ("rules = [ \"tcp\" ]", "rules[0]"),
        ("rules = [ { action = \"reject\", filter = \"tcp\" } ]", "action"),
        ("rules = [ { filter = \"tcp\" } ]", "action"),
        ("rules = [ { action = \"deny\" } ]", "filter"),
        ("rules = [ { action = \"deny\", filter = 7 } ]", "filter"),
        ("rules = [ { action = \"deny\", filter = \"tcp\", port = 1 } ]", "port"),
        ("rules = [ { action = \"deny\", filter = \"tcp\", alert = \"yes\" } ]", "alert"),
        ("rules = [ { action = \"deny\", filter = \"tcp\", name = \"default\" } ]", "default"),
        (
            "rules = [ { action = \"deny\", filter = \"tcp\", name = \"a\" }, { action = \"allow\", filter = \"udp\", name = \"a\" } ]",
            "rules[1]",
        ),
    ];
    for (params, word) in cases {
        let e = build_err(params);
        assert!(e.contains(word), "{params}: {e}");
    }
}

#[test]
fn the_example_chain_loads_and_filters_generated_traffic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/acl.toml");
    let dag = Arc::new(load_chain(&path, &builtin_registry()).expect("examples/acl.toml"));
    let input = streamnf_tracegen_trace(3_000, 5);
    let want = reference(&dag, &input);
    let out = want.sinks.get("out").map_or(0, Vec::len);
    let denied = want.sinks.get("denied").map_or(0, Vec::len);
    assert!(out > 0 && denied > 0, "both ports used: out {out}, denied {denied}");
    assert_eq!(out + denied, input.len(), "every packet is allowed or denied, once");
    for instances in [2u32, 3] {
        let got = parallel(&dag, &input, 2, &[instances]);
        let d = differences(&want, &got, 12);
        assert!(d.is_empty(), "{instances} instances:\n{}", d.join("\n"));
    }
}

fn streamnf_tracegen_trace(packets: u64, seed: u64) -> Vec<streamnf_packet::trace::RawRecord> {
    use streamnf_tracegen::{GenConfig, Generator};
    let cfg = GenConfig { packets, flows: 150, seed, ..GenConfig::default() };
    Generator::new(cfg)
        .expect("generator")
        .map(|g| streamnf_packet::trace::RawRecord {
            link: LinkType::Ethernet,
            ts_ns: g.ts_ns,
            orig_len: g.data.len() as u32,
            data: g.data,
        })
        .collect()
}

fn reference(dag: &Arc<LogicalDag>, input: &[streamnf_packet::trace::RawRecord]) -> RunOutputs {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let mut e = Engine::new(
        Arc::clone(dag),
        Arc::clone(&store),
        EngineConfig { keep: true, ..EngineConfig::default() },
    )
    .expect("engine");
    for r in input {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    let rep = e.finish().expect("finish");
    RunOutputs::from_report(rep, store.snapshot(dag.id))
}

fn parallel(
    dag: &Arc<LogicalDag>,
    input: &[streamnf_packet::trace::RawRecord],
    workers: usize,
    instances: &[u32],
) -> RunOutputs {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let par = ParallelConfig { workers, instances: instances.to_vec(), ..ParallelConfig::default() };
    let mut e = ParallelEngine::new(
        Arc::clone(dag),
        Arc::clone(&store),
        EngineConfig { keep: true, ..EngineConfig::default() },
        par,
    )
    .expect("engine");
    for r in input {
        e.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).expect("process");
    }
    let rep = e.finish().expect("finish");
    RunOutputs::from_report(rep, store.snapshot(dag.id))
}

/// Filters the property test draws rules from.
const FILTERS: &[&str] =
    &["tcp", "udp", "icmp", "tcp port 22", "udp port 53", "src net 10.0.0.0/24", "dst host 192.0.2.1", ""];

fn packet(kind: u8, last: u8, port: u16) -> Packet {
    let src = if last % 2 == 0 { [10, 0, 0, last] } else { [10, 9, 0, last] };
    match kind % 3 {
        0 => tcp(src, [192, 0, 2, 1 + last % 2], 4000, port),
        1 => udp(src, port),
        _ => icmp(src),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// The NF's routing equals "the action of the first rule whose filter matches, else the
    /// default", evaluated filter by filter on each packet.
    #[test]
    fn routing_is_the_first_matching_rule(
        rules in proptest::collection::vec((0usize..FILTERS.len(), any::<bool>()), 0..6),
        default_allow in any::<bool>(),
        pkts in proptest::collection::vec((0u8..3, 1u8..=250, prop_oneof![Just(22u16), Just(53), Just(80)]), 1..30),
    ) {
        let rules: Vec<Rule> = rules
            .iter()
            .enumerate()
            .map(|(i, (f, allow))| Rule {
                name: format!("r{i}"),
                filter: Filter::compile(FILTERS[*f]).expect("filter"),
                action: if *allow { Action::Allow } else { Action::Deny },
                alert: false,
            })
            .collect();
        let default = if default_allow { Action::Allow } else { Action::Deny };
        let acl = Acl::new(rules.clone(), default).expect("acl");
        let mut want_out = Vec::new();
        let mut want_denied = Vec::new();
        let packets: Vec<Packet> = pkts.iter().map(|(k, l, p)| packet(*k, *l, *p)).collect();
        for (p, (_, last, _)) in packets.iter().zip(&pkts) {
            let action = rules.iter().find(|r| r.filter.matches(p)).map_or(default, |r| r.action);
            match action {
                Action::Allow => want_out.push(*last),
                Action::Deny => want_denied.push(*last),
            }
        }
        let dag = streamnf_dag::ChainBuilder::new("acl-prop")
            .vertex("fw", Arc::new(acl))
            .edge("input", "fw.in")
            .edge("fw.out", "output.out")
            .edge("fw.denied", "output.denied")
            .build()
            .expect("chain");
        let (r, _) = run(dag, packets);
        prop_assert_eq!(sources(&r, "out"), want_out);
        prop_assert_eq!(sources(&r, "denied"), want_denied);
    }
}
