//! Light IDS, rate limiter and DPI on crafted packets, alone and as the Figure 1 chain.

use etherparse::PacketBuilder;
use std::sync::Arc;
use streamnf_dag::ChainBuilder;
use streamnf_nfs::dpi::Dpi;
use streamnf_nfs::ids::LightIds;
use streamnf_nfs::rate_limiter::RateLimiter;
use streamnf_packet::{LinkType, Packet};
use streamnf_runtime::{Engine, EngineConfig};
use streamnf_store::EmbeddedStore;

fn syn(src: [u8; 4], sport: u16, ts: u64) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, [192, 0, 2, 1], 64)
        .tcp(sport, 80, 1, 1000)
        .syn()
        .write(&mut v, b"")
        .expect("b");
    Packet::new(LinkType::Ethernet, v, ts)
}

fn data(src: [u8; 4], payload: &[u8], ts: u64) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, [192, 0, 2, 1], 64)
        .tcp(4000, 80, 1, 1000)
        .ack(1)
        .write(&mut v, payload)
        .expect("b");
    Packet::new(LinkType::Ethernet, v, ts)
}

fn figure1(threshold: u64, rate_pps: u64, burst: u64) -> Engine {
    let dpi = Dpi::new(vec!["<script".into(), "cmd.exe".into()], true).expect("dpi");
    let dag = streamnf_nfs::chains::figure1(
        "figure1-test",
        LightIds::new(threshold, 1_000_000_000),
        RateLimiter::new(rate_pps, burst, false),
        dpi,
    )
    .expect("chain");
    Engine::new(
        Arc::new(dag),
        Arc::new(EmbeddedStore::new()),
        EngineConfig { keep: true, ..EngineConfig::default() },
    )
    .expect("engine")
}

#[test]
fn ids_flags_a_syn_flooder_once_and_not_a_normal_host() {
    let mut e = figure1(5, 1_000_000, 1_000);
    for i in 0..20u16 {
        e.process(syn([10, 0, 0, 66], 1000 + i, u64::from(i) * 1000)).expect("p");
        if i % 4 == 0 {
            e.process(syn([10, 0, 0, 7], 2000 + i, u64::from(i) * 1000 + 1)).expect("p");
        }
    }
    let r = e.finish().expect("finish");
    let flagged: Vec<&str> = r
        .alert_records
        .iter()
        .filter(|a| a.kind == "suspicious_source")
        .filter_map(|a| a.fields.get("src_ip").and_then(|v| v.as_str()))
        .collect();
    assert_eq!(flagged, vec!["10.0.0.66"], "only the flooder, only once");
    let a = r.alert_records.iter().find(|a| a.kind == "suspicious_source").expect("alert");
    assert_eq!(a.fields["syn_count"], 6, "flagged on the first SYN over the threshold");
    // Clock 8: six flooder SYNs plus the normal host's two SYNs (i = 0 and 4) before it.
    assert_eq!(a.clock, 8);
    // Packets of flagged sources after the flag are mirrored to the DPI.
    assert_eq!(r.tasks["dpi"][0].packets_in, 15);
}

#[test]
fn syn_counts_reset_every_window() {
    let mut e = figure1(5, 1_000_000, 1_000);
    // 4 SYNs per second for 5 seconds: never more than 5 in one window.
    for i in 0..20u64 {
        e.process(syn([10, 0, 0, 66], 1000 + i as u16, i * 250_000_000)).expect("p");
    }
    assert_eq!(e.finish().expect("finish").alerts.get("suspicious_source"), None);
}

#[test]
fn limiter_throttles_only_flagged_sources() {
    // Threshold 2: the flooder is flagged on its 3rd SYN; then 10 pps with burst 3.
    let mut e = figure1(2, 10, 3);
    let mut t = 0u64;
    for i in 0..3u16 {
        e.process(syn([10, 0, 0, 66], 1000 + i, t)).expect("p");
        t += 1000;
    }
    // 10 more packets of the flagged source within 1 ms: 3 pass (burst), 7 throttled.
    for _ in 0..10 {
        e.process(data([10, 0, 0, 66], b"x", t)).expect("p");
        e.process(data([10, 0, 0, 5], b"y", t)).expect("p");
        t += 100;
    }
    let r = e.finish().expect("finish");
    let out = &r.sink_records["out"];
    let from = |last: u8| {
        out.iter()
            .filter(|s| {
                Packet::new(LinkType::Ethernet, s.data.clone(), 0).hdr.ip.map(|i| i.src)
                    == Some([10, 0, 0, last].into())
            })
            .count()
    };
    assert_eq!(from(5), 10, "unflagged source untouched");
    // The IDS emits its verdict before forwarding the packet that caused it, so the
    // limiter already limits the flagging SYN: 2 SYNs pass unlimited, then a burst of 3.
    assert_eq!(from(66), 2 + 3, "2 SYNs before the flag, then a burst of 3");
    assert_eq!(r.tasks["limiter"][0].contexts_in, 1);
}

#[test]
fn dpi_matches_signatures_case_insensitively_and_counts() {
    let dpi = Dpi::new(vec!["<script".into(), "cmd.exe".into()], true).expect("dpi");
    let dag = ChainBuilder::new("dpi-test")
        .vertex("dpi", Arc::new(dpi))
        .edge("input", "dpi.in")
        .build()
        .expect("chain");
    let store = Arc::new(EmbeddedStore::new());
    let mut e =
        Engine::new(Arc::new(dag), store.clone(), EngineConfig { keep: true, ..EngineConfig::default() })
            .expect("engine");
    e.process(data([10, 0, 0, 1], b"GET /?q=<SCRIPT>alert(1)</script> HTTP/1.1", 1)).expect("p");
    e.process(data([10, 0, 0, 1], b"run CMD.EXE now; <script", 2)).expect("p");
    e.process(data([10, 0, 0, 1], b"nothing to see", 3)).expect("p");
    let state = e.final_state();
    let r = e.finish().expect("finish");
    assert_eq!(r.alerts.get("dpi_match"), Some(&3));
    let sigs: Vec<&str> = r.alert_records.iter().filter_map(|a| a.fields["signature"].as_str()).collect();
    assert_eq!(sigs, vec!["<script", "cmd.exe", "<script"]);
    let counts: Vec<i64> =
        state.iter().filter(|(k, _)| k.contains("/0/")).filter_map(|(_, v)| v.as_int()).collect();
    assert!(counts.contains(&2) && counts.contains(&1), "per-signature counters in the store: {state:?}");
}

#[test]
fn bad_parameters_are_rejected_with_the_parameter_name() {
    let reg = streamnf_nfs::builtin_registry();
    let p = |s: &str| streamnf_dag::Params(toml::from_str::<toml::Table>(s).expect("toml"));
    let cases = [
        ("nat", "external_ip = \"nope\"", "external_ip"),
        ("nat", "internal_nets = [\"10.0.0.0/40\"]", "internal_nets"),
        ("nat", "port_min = 70000", "port_min"),
        ("nat", "external_ip = \"10.1.2.3\"", "inside internal_nets"),
        ("forward", "speed = 1", "takes no parameters"),
        ("light_ids", "window_ms = 0", "window_ms"),
        ("light_ids", "syn_threshold = -1", "syn_threshold"),
        ("rate_limiter", "scope = \"some\"", "scope"),
        ("dpi", "signatures = []", "signatures"),
        ("dpi", "colour = 1", "colour"),
    ];
    for (nf, params, name) in cases {
        match reg.build(nf, &p(params)) {
            Some(Err(msg)) => assert!(msg.contains(name), "{nf} {params}: {msg}"),
            Some(Ok(_)) => panic!("{nf} accepted {params}"),
            None => panic!("{nf} not registered"),
        }
    }
}
