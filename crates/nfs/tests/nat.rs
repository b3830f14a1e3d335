//! NAT end to end: outbound packets leave with the external address and a pool port,
//! one port per connection; replies addressed to that port come back translated to the
//! original endpoint, with valid checksums.
//!
//! A capture taken inside the NAT holds replies addressed to the client, so the harness
//! builds what the outside world would send: the reply re-addressed to the external
//! address and port the NAT chose for its connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use streamnf_dag::ChainBuilder;
use streamnf_nfs::nat::Nat;
use streamnf_nfs::net::Cidr;
use streamnf_packet::checksum::{checksum, ones_complement_sum};
use streamnf_packet::{LinkType, Packet, Transport};
use streamnf_runtime::{Engine, EngineConfig};
use streamnf_store::EmbeddedStore;

type Conn = (u8, IpAddr, u16, IpAddr, u16);

#[derive(Debug, Default)]
struct Roundtrip {
    translated_connections: usize,
    outbound_checked: usize,
    replies_checked: usize,
    replies_byte_identical: usize,
}

/// Transport checksum of an IPv4 TCP/UDP packet is correct.
fn l4_checksum_ok(p: &Packet) -> bool {
    let (Some(ip), true) =
        (p.hdr.ip, matches!(p.hdr.transport, Transport::Tcp { .. } | Transport::Udp { .. }))
    else {
        return true;
    };
    let l3 = usize::from(p.hdr.l3_offset);
    let l4 = usize::from(p.hdr.l4_offset);
    let end = l3 + usize::from(ip.total_len);
    if end > p.data.len() {
        return true; // truncated capture: cannot verify
    }
    let seg = &p.data[l4..end];
    if matches!(p.hdr.transport, Transport::Udp { .. }) && seg.get(6..8) == Some(&[0, 0]) {
        return true;
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p.data[l3 + 12..l3 + 20]);
    pseudo.extend_from_slice(&[0, ip.proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    let sum = ones_complement_sum(seg, ones_complement_sum(&pseudo, 0));
    sum == 0xffff
}

fn ipv4_header_ok(p: &Packet) -> bool {
    let l3 = usize::from(p.hdr.l3_offset);
    let hl = p.hdr.ip.map(|i| usize::from(i.header_len)).unwrap_or(20);
    checksum(&p.data[l3..l3 + hl]) == 0
}

/// Rewrites the destination to `ip:port` and recomputes both checksums from scratch.
fn readdress(p: &Packet, ip: IpAddr, port: u16) -> Packet {
    let IpAddr::V4(v4) = ip else { panic!("IPv4 only") };
    let mut d = p.data.clone();
    let l3 = usize::from(p.hdr.l3_offset);
    let l4 = usize::from(p.hdr.l4_offset);
    let info = p.hdr.ip.expect("ip");
    d[l3 + 16..l3 + 20].copy_from_slice(&v4.octets());
    d[l4 + 2..l4 + 4].copy_from_slice(&port.to_be_bytes());
    d[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let hl = usize::from(info.header_len);
    let ck = checksum(&d[l3..l3 + hl]);
    d[l3 + 10..l3 + 12].copy_from_slice(&ck.to_be_bytes());
    let end = (l3 + usize::from(info.total_len)).min(d.len());
    let ck_at = if info.proto == 6 { l4 + 16 } else { l4 + 6 };
    if !(info.proto == 17 && d[ck_at..ck_at + 2] == [0, 0]) {
        d[ck_at..ck_at + 2].copy_from_slice(&[0, 0]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&d[l3 + 12..l3 + 20]);
        pseudo.extend_from_slice(&[0, info.proto]);
        pseudo.extend_from_slice(&((end - l4) as u16).to_be_bytes());
        let ck = !(ones_complement_sum(&d[l4..end], ones_complement_sum(&pseudo, 0)) as u16);
        d[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    }
    let mut out = Packet::new(p.hdr.link, d, p.ts_ns);
    out.orig_len = p.orig_len;
    out
}

fn roundtrip(packets: Vec<Packet>, internal: &[&str], external: IpAddr) -> Roundtrip {
    let nets: Vec<Cidr> = internal.iter().map(|s| Cidr::parse(s).expect("cidr")).collect();
    let nat = Nat::new(external, nets.clone(), 20_000, 60_000).expect("nat");
    let dag = ChainBuilder::new("nat-test")
        .vertex("nat", Arc::new(nat))
        .edge("input", "nat.in")
        .edge("nat.out", "output.out")
        .build()
        .expect("chain");
    let mut engine = Engine::new(
        Arc::new(dag),
        Arc::new(EmbeddedStore::new()),
        EngineConfig { keep: true, ..EngineConfig::default() },
    )
    .expect("engine");
    let inside = |ip: IpAddr| nets.iter().any(|c| c.contains(ip));
    let mut mapping: HashMap<Conn, u16> = HashMap::new();
    // Like Linux conntrack, a port is unique per remote endpoint: (proto, port, remote
    // address, remote port) identifies one connection.
    let mut port_owner: HashMap<(u8, u16, IpAddr, u16), Conn> = HashMap::new();
    let mut r = Roundtrip::default();
    for p in packets {
        let (Some(ip), Some((sp, dp))) = (p.hdr.ip, p.hdr.transport.ports()) else {
            continue;
        };
        if ip.version != 4 || p.malformed.is_some() || !matches!(ip.proto, 6 | 17) || ip.is_later_fragment() {
            continue;
        }
        if inside(ip.src) && !inside(ip.dst) {
            let conn = (ip.proto, ip.src, sp, ip.dst, dp);
            let original = p.clone();
            engine.process(p).expect("process");
            let out = engine.take_outputs().remove("out").unwrap_or_default();
            assert_eq!(out.len(), 1, "outbound packet of {conn:?} must leave the NAT once");
            let o = Packet::new(LinkType::Ethernet, out[0].data.clone(), 0);
            let oip = o.hdr.ip.expect("ip");
            let (osp, odp) = o.hdr.transport.ports().expect("ports");
            assert_eq!(oip.src, external, "source rewritten");
            assert_eq!((oip.dst, odp), (ip.dst, dp), "destination untouched");
            assert!((20_000..=60_000).contains(&osp), "pool port {osp}");
            assert_eq!(o.payload(), original.payload(), "payload untouched");
            assert!(ipv4_header_ok(&o), "IPv4 header checksum after rewrite");
            if l4_checksum_ok(&original) {
                assert!(l4_checksum_ok(&o), "transport checksum after rewrite of {conn:?}");
            }
            match mapping.get(&conn) {
                Some(&port) => assert_eq!(port, osp, "a connection keeps its port"),
                None => {
                    assert!(
                        port_owner.insert((ip.proto, osp, ip.dst, dp), conn).is_none(),
                        "port {osp} given to two connections to {}:{dp}",
                        ip.dst
                    );
                    mapping.insert(conn, osp);
                    r.translated_connections += 1;
                }
            }
            r.outbound_checked += 1;
        } else if !inside(ip.src) && inside(ip.dst) {
            let conn = (ip.proto, ip.dst, dp, ip.src, sp);
            let Some(&ext_port) = mapping.get(&conn) else {
                continue;
            };
            let outside = readdress(&p, external, ext_port);
            engine.process(outside).expect("process reply");
            let out = engine.take_outputs().remove("out").unwrap_or_default();
            assert_eq!(out.len(), 1, "reply of {conn:?} must be translated back");
            let o = Packet::new(LinkType::Ethernet, out[0].data.clone(), 0);
            let oip = o.hdr.ip.expect("ip");
            assert_eq!((oip.src, oip.dst), (ip.src, ip.dst), "reply goes back to the original client");
            assert_eq!(o.hdr.transport.ports(), Some((sp, dp)), "with the original ports");
            assert_eq!(o.payload(), p.payload());
            assert!(ipv4_header_ok(&o));
            if l4_checksum_ok(&p) {
                assert!(l4_checksum_ok(&o), "reply checksum of {conn:?}");
                if out[0].data == p.data {
                    r.replies_byte_identical += 1;
                }
            }
            r.replies_checked += 1;
        }
    }
    r
}

#[test]
fn nat_roundtrip_on_generated_traffic() {
    let cfg = streamnf_tracegen::GenConfig {
        packets: 20_000,
        flows: 300,
        ipv6_fraction: 0.0,
        ..Default::default()
    };
    let packets: Vec<Packet> = streamnf_tracegen::Generator::new(cfg)
        .expect("gen")
        .map(|g| Packet::new(LinkType::Ethernet, g.data, g.ts_ns))
        .collect();
    let r = roundtrip(packets, &["10.0.0.0/8"], "203.0.113.7".parse().expect("ip"));
    eprintln!("{r:?}");
    assert!(r.translated_connections > 200, "{r:?}");
    assert!(r.replies_checked > 5_000, "{r:?}");
    // The generator writes correct checksums, so a restored reply is byte-identical.
    assert_eq!(r.replies_byte_identical, r.replies_checked, "{r:?}");
}

/// Acceptance check on the real capture (run by `.ci/run` when ../shared/traces exists:
/// `cargo test -p streamnf-nfs --test nat -- --ignored`).
#[test]
#[ignore = "needs ../shared/traces/real/http_veth_generated.pcap"]
fn nat_roundtrip_on_http_veth_generated() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/real/http_veth_generated.pcap");
    let (recs, err) = streamnf_packet::trace::read_all(&path)
        .unwrap_or_else(|e| panic!("{e}: this check needs the shared real traces"));
    assert!(err.is_none(), "{err:?}");
    let packets: Vec<Packet> = recs.into_iter().map(|r| r.into_packet()).collect();
    // ab/curl/nmap ran on 198.18.0.1 against nginx on 198.18.0.2.
    let r = roundtrip(packets, &["198.18.0.1/32"], "203.0.113.1".parse().expect("ip"));
    eprintln!("http_veth_generated.pcap: {r:?}");
    assert!(r.translated_connections >= 4_000, "{r:?}");
    assert!(r.replies_checked >= 15_000, "{r:?}");
}

/// Fails an input whose parsed headers differ from a fresh parse of its bytes.
struct HeaderCheck;

impl streamnf_dag::NetworkFunction for HeaderCheck {
    fn spec(&self) -> streamnf_dag::NfSpec {
        streamnf_dag::NfSpec {
            inputs: vec![streamnf_dag::PortSpec::packets("in")],
            outputs: vec![streamnf_dag::PortSpec::packets("out")],
            state: vec![],
            connection_terminating: false,
        }
    }
    fn on_packet(
        &self,
        _: usize,
        pkt: &mut Packet,
        ctx: &mut dyn streamnf_dag::NfContext,
    ) -> Result<(), streamnf_dag::NfError> {
        let fresh = Packet::new(pkt.hdr.link, pkt.data.clone(), pkt.ts_ns);
        if fresh.hdr != pkt.hdr || fresh.malformed != pkt.malformed {
            return Err(streamnf_dag::NfError::BadInput(format!("{:?} != {:?}", pkt.hdr, fresh.hdr)));
        }
        ctx.forward(0);
        Ok(())
    }
}

#[test]
fn patched_headers_equal_a_fresh_parse() {
    // The NAT patches the parsed headers instead of parsing again: they must agree.
    let cfg =
        streamnf_tracegen::GenConfig { packets: 3_000, flows: 60, ipv6_fraction: 0.0, ..Default::default() };
    let nat = Nat::new(
        "203.0.113.9".parse().expect("ip"),
        vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
        30_000,
        40_000,
    )
    .expect("nat");
    let dag = ChainBuilder::new("patch")
        .vertex("nat", Arc::new(nat))
        .vertex("check", Arc::new(HeaderCheck))
        .edge("input", "nat.in")
        .edge("nat.out", "check.in")
        .edge("check.out", "output.out")
        .build()
        .expect("chain");
    let mut engine =
        Engine::new(Arc::new(dag), Arc::new(EmbeddedStore::new()), EngineConfig::default()).expect("engine");
    for g in streamnf_tracegen::Generator::new(cfg).expect("gen") {
        engine.process(Packet::new(LinkType::Ethernet, g.data, g.ts_ns)).expect("p");
    }
    let r = engine.finish().expect("finish");
    let check = &r.tasks["check"][0];
    assert!(check.packets_in > 1_000, "{check:?}");
    assert_eq!(check.nf_errors, 0, "patched headers differ from a fresh parse");
}

#[test]
fn exhausted_pool_refuses_new_connections_and_stays_bounded() {
    let nat = Nat::new(
        "100.64.0.1".parse().expect("ip"),
        vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
        5000,
        5001,
    )
    .expect("nat");
    let dag = ChainBuilder::new("exhaust")
        .vertex("nat", Arc::new(nat))
        .edge("input", "nat.in")
        .edge("nat.out", "output.out")
        .build()
        .expect("chain");
    let store = Arc::new(EmbeddedStore::new());
    let mut engine = Engine::new(Arc::new(dag), store.clone(), EngineConfig::default()).expect("engine");
    for sport in 40_000u16..40_005 {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [192, 0, 2, 1], 64)
            .tcp(sport, 80, 1, 1000)
            .syn()
            .write(&mut v, b"")
            .expect("build");
        engine.process(Packet::new(LinkType::Ethernet, v, 0)).expect("p");
    }
    let state = engine.final_state();
    let r = engine.finish().expect("finish");
    assert_eq!(r.chain.packets_out["out"], 2, "two ports, two connections");
    assert_eq!(r.alerts.get("nat_port_exhausted"), Some(&3));
    // Both ports are claimed for that remote endpoint, once each, and nothing else is.
    let claims = state.keys().filter(|k| k.contains("/*/1/")).count();
    assert_eq!(claims, 2, "{state:?}");
}
