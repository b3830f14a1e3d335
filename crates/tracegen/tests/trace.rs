//! Integration tests: determinism, wire correctness, TCP semantics, HTTP/DNS
//! content, scanners, trojans and statistics recounted from the frames.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use streamnf_tracegen::{
    generate, GenConfig, GenError, GeneratedPacket, Generator, ScanConfig, TrojanConfig,
};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

#[derive(Debug, Clone)]
struct Pkt {
    src: IpAddr,
    dst: IpAddr,
    tcp: bool,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: Vec<u8>,
}

impl Pkt {
    fn key(&self) -> (IpAddr, u16, IpAddr, u16, bool) {
        (self.src, self.sport, self.dst, self.dport, self.tcp)
    }
    /// Direction-independent 5-tuple.
    fn flow(&self) -> (IpAddr, u16, IpAddr, u16, bool) {
        let a = (self.src, self.sport);
        let b = (self.dst, self.dport);
        if a <= b {
            (a.0, a.1, b.0, b.1, self.tcp)
        } else {
            (b.0, b.1, a.0, a.1, self.tcp)
        }
    }
    fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
    fn is_syn(&self) -> bool {
        self.tcp && self.flags & (SYN | ACK) == SYN
    }
}

fn csum(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Parses a frame with etherparse, verifies IP/L4 checksums by hand and
/// extracts the fields the tests need.
fn parse(frame: &[u8]) -> Pkt {
    let sliced = SlicedPacket::from_ethernet(frame).expect("frame parses");
    let (src, dst, ttl, l4_off, proto, l4_len, pseudo) = match sliced.net.expect("has IP") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            let ihl = usize::from(h.ihl()) * 4;
            assert_eq!(fold(csum(&frame[14..14 + ihl], 0)), 0xffff, "IPv4 header checksum");
            let total = usize::from(h.total_len());
            assert_eq!(frame.len(), 14 + total, "no trailing bytes");
            let l4_len = total - ihl;
            let mut p = Vec::new();
            p.extend_from_slice(&h.source());
            p.extend_from_slice(&h.destination());
            p.extend_from_slice(&[0, h.protocol().0]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            assert!(h.dont_fragment());
            (
                IpAddr::V4(Ipv4Addr::from(h.source())),
                IpAddr::V4(Ipv4Addr::from(h.destination())),
                h.ttl(),
                14 + ihl,
                h.protocol().0,
                l4_len,
                p,
            )
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            let l4_len = usize::from(h.payload_length());
            assert_eq!(frame.len(), 14 + 40 + l4_len);
            let mut p = Vec::new();
            p.extend_from_slice(&h.source());
            p.extend_from_slice(&h.destination());
            p.extend_from_slice(&(l4_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, h.next_header().0]);
            (
                IpAddr::V6(Ipv6Addr::from(h.source())),
                IpAddr::V6(Ipv6Addr::from(h.destination())),
                h.hop_limit(),
                54,
                h.next_header().0,
                l4_len,
                p,
            )
        }
        NetSlice::Arp(_) => panic!("unexpected ARP"),
    };
    let l4 = &frame[l4_off..l4_off + l4_len];
    assert_eq!(fold(csum(l4, csum(&pseudo, 0))), 0xffff, "L4 checksum");
    assert!(ttl >= 30, "plausible TTL {ttl}");
    match sliced.transport.expect("has transport") {
        TransportSlice::Tcp(t) => {
            assert_eq!(proto, 6);
            let flags = (t.fin() as u8)
                | (t.syn() as u8) << 1
                | (t.rst() as u8) << 2
                | (t.psh() as u8) << 3
                | (t.ack() as u8) << 4;
            Pkt {
                src,
                dst,
                tcp: true,
                sport: t.source_port(),
                dport: t.destination_port(),
                flags,
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
                payload: t.payload().to_vec(),
            }
        }
        TransportSlice::Udp(u) => {
            assert_eq!(proto, 17);
            Pkt {
                src,
                dst,
                tcp: false,
                sport: u.source_port(),
                dport: u.destination_port(),
                flags: 0,
                seq: 0,
                ack: 0,
                payload: u.payload().to_vec(),
            }
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

fn in_net(ip: IpAddr, net: [u8; 3]) -> bool {
    matches!(ip, IpAddr::V4(a) if a.octets()[..3] == net)
}

fn is_special(p: &Pkt) -> bool {
    // Scanners and trojan infrastructure live in 203.0.113.0/24; trojan and
    // decoy hosts in 10.0.0.0/24.
    [p.src, p.dst].iter().any(|&ip| in_net(ip, [203, 0, 113]) || in_net(ip, [10, 0, 0]))
}

fn small(seed: u64, packets: u64) -> GenConfig {
    GenConfig { seed, packets, flows: 60, concurrency: 8, ipv6_fraction: 0.2, ..GenConfig::default() }
}

fn full(seed: u64, packets: u64) -> GenConfig {
    GenConfig {
        scan: Some(ScanConfig { scanners: 2, ports_per_scanner: 60, targets: 2, open_fraction: 0.1 }),
        trojan: Some(TrojanConfig { hosts: 2, decoys: 2 }),
        xss_fraction: 0.1,
        url_pool: 30,
        ..small(seed, packets)
    }
}

fn run(cfg: GenConfig) -> (Vec<GeneratedPacket>, Generator) {
    let mut g = Generator::new(cfg).unwrap();
    let v: Vec<_> = g.by_ref().collect();
    (v, g)
}

#[test]
fn same_seed_identical_different_seed_differs() {
    let a = generate(full(7, 3000)).unwrap();
    let b = generate(full(7, 3000)).unwrap();
    assert_eq!(a, b);
    let c = generate(full(8, 3000)).unwrap();
    assert_ne!(a, c);
    assert_ne!(a.iter().map(|p| &p.data).collect::<Vec<_>>(), c.iter().map(|p| &p.data).collect::<Vec<_>>());
}

/// FNV-1a over timestamps and frames: pins the exact output so accidental
/// changes to the generator (or a platform dependency) are caught.
#[test]
fn golden_digest() {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in generate(full(1, 2000)).unwrap() {
        for b in p.ts_ns.to_le_bytes().iter().chain(p.data.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    assert_eq!(h, GOLDEN, "generator output changed (update GOLDEN only if intended): {h:#x}");
}
const GOLDEN: u64 = 0x3f95_1411_5277_da4e;

#[test]
fn frames_valid_count_exact_ts_monotonic() {
    let cfg = full(3, 5000);
    let start = cfg.start_ns;
    let (v, g) = run(cfg);
    assert_eq!(v.len(), 5000);
    assert_eq!(g.stats().packets, 5000);
    assert_eq!(g.stats().bytes, v.iter().map(|p| p.data.len() as u64).sum::<u64>());
    assert_eq!(v[0].ts_ns, start);
    assert!(v.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    let mut v6 = 0;
    for p in &v {
        let q = parse(&p.data);
        v6 += usize::from(q.src.is_ipv6());
        if !q.tcp && (q.sport == 53 || q.dport == 53) {
            assert!(q.payload.len() >= 12);
        }
    }
    assert!(v6 > 0, "some IPv6 traffic");
    // Mean rate roughly matches pps (1 Mpps → 1 µs mean gap).
    let span = v.last().unwrap().ts_ns - v[0].ts_ns;
    assert!((3_000_000..8_000_000).contains(&span), "span {span}");
}

#[test]
fn exact_count_tiny_and_zero() {
    for n in [0u64, 1, 2, 3, 7, 100] {
        assert_eq!(generate(small(1, n)).unwrap().len() as u64, n);
    }
    let cfg = GenConfig { flows: 0, packets: 0, ..GenConfig::default() };
    assert!(generate(cfg).unwrap().is_empty());
    let g = Generator::new(small(1, 10)).unwrap();
    assert_eq!(g.len(), 10);
}

/// Every TCP flow starts with SYN, SYN-ACK, ACK (unless it is a scan probe)
/// and every segment's seq/ack numbers are consistent with what each side
/// has sent.
#[test]
fn tcp_handshake_and_sequence_numbers() {
    let (v, _) = run(full(11, 6000));
    let pkts: Vec<Pkt> = v.iter().map(|p| parse(&p.data)).collect();
    let mut flows: HashMap<_, Vec<&Pkt>> = HashMap::new();
    for p in pkts.iter().filter(|p| p.tcp) {
        flows.entry(p.flow()).or_default().push(p);
    }
    let mut completed = 0;
    for (_, f) in flows {
        let first = f[0];
        assert!(first.is_syn(), "flow starts with SYN: {first:?}");
        let scanner =
            in_net(first.src, [203, 0, 113]) && first.src != IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200));
        if scanner {
            assert!(f.len() <= 3);
            if f.len() >= 2 {
                assert!(f[1].flags == SYN | ACK || f[1].flags == RST | ACK, "{:?}", f[1]);
                if f[1].flags == RST | ACK {
                    assert_eq!(f[1].ack, first.seq.wrapping_add(1));
                    assert_eq!(f.len(), 2);
                }
            }
            if f.len() == 3 {
                assert_eq!(f[2].flags, RST);
                assert_eq!(f[2].seq, first.seq.wrapping_add(1));
            }
            continue;
        }
        if f.len() >= 3 {
            assert_eq!(f[1].flags, SYN | ACK);
            assert_eq!(f[1].key(), (first.dst, first.dport, first.src, first.sport, true));
            assert_eq!(f[2].flags, ACK);
            assert_eq!(f[2].key(), first.key());
        }
        // Sequence tracking: next expected seq per direction.
        let mut next: HashMap<(IpAddr, u16), u32> = HashMap::new();
        for p in &f {
            let me = (p.src, p.sport);
            let peer = (p.dst, p.dport);
            if let Some(&exp) = next.get(&me) {
                assert_eq!(p.seq, exp, "seq continuity {p:?}");
            }
            if p.has(ACK) {
                assert_eq!(Some(&p.ack), next.get(&peer), "ack number {p:?}");
            }
            let adv = p.payload.len() as u32 + u32::from(p.has(SYN)) + u32::from(p.has(FIN));
            next.insert(me, p.seq.wrapping_add(adv));
            assert!(p.payload.len() <= 1460);
        }
        if f.iter().any(|p| p.has(FIN)) || f.iter().skip(1).any(|p| p.has(RST)) {
            completed += 1;
        }
    }
    assert!(completed > 20, "completed flows {completed}");
}

fn get_uri(p: &Pkt) -> Option<String> {
    if !p.tcp || !p.payload.starts_with(b"GET ") {
        return None;
    }
    let s = std::str::from_utf8(&p.payload).unwrap();
    Some(s[4..].split(' ').next().unwrap().to_string())
}

#[test]
fn http_requests_repeat_and_stats_match_recount() {
    let cfg = GenConfig { url_pool: 25, xss_fraction: 0.2, ..full(5, 8000) };
    let (v, g) = run(cfg);
    let s = g.stats().clone();
    let pkts: Vec<Pkt> = v.iter().map(|p| parse(&p.data)).collect();
    let uris: Vec<String> = pkts.iter().filter_map(get_uri).collect();
    let distinct: HashSet<&String> = uris.iter().collect();
    assert!(uris.len() > 40, "requests {}", uris.len());
    assert!(distinct.len() < uris.len(), "URLs repeat");
    assert_eq!(s.http_requests, uris.len() as u64);
    assert_eq!(s.distinct_urls, distinct.len() as u64);
    assert_eq!(s.repeated_requests, (uris.len() - distinct.len()) as u64);
    let xss = uris.iter().filter(|u| u.contains("<script>")).count() as u64;
    assert_eq!(s.xss_requests, xss);
    assert!(xss > 0);
    for p in pkts.iter().filter(|p| p.tcp && p.payload.starts_with(b"GET ")) {
        let t = std::str::from_utf8(&p.payload).unwrap();
        assert!(t.contains("\r\nHost: ") && t.ends_with("\r\n\r\n"));
        assert_eq!(p.dport, 80);
        assert!((32768..=60999).contains(&p.sport));
    }

    // Regular flow counts from SYNs / first datagrams.
    let regular: Vec<&Pkt> = pkts.iter().filter(|p| !is_special(p)).collect();
    let tcp = regular.iter().filter(|p| p.is_syn()).count() as u64;
    let mut udp_flows = HashSet::new();
    let mut dns = 0;
    for p in &regular {
        if !p.tcp && udp_flows.insert(p.flow()) {
            assert!((32768..=60999).contains(&p.sport), "UDP flows start client → server");
            dns += u64::from(p.dport == 53);
        }
    }
    let v6_flows = regular.iter().filter(|p| p.is_syn() && p.src.is_ipv6()).count()
        + udp_flows.iter().filter(|f| f.0.is_ipv6()).count();
    assert_eq!(s.tcp_flows, tcp);
    assert_eq!(s.udp_flows, udp_flows.len() as u64);
    assert_eq!(s.flows_started, s.tcp_flows + s.udp_flows);
    assert_eq!(s.dns_queries, dns);
    assert_eq!(s.ipv6_flows, v6_flows as u64);
    let attacker = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 200));
    let trojan_syns =
        pkts.iter().filter(|p| p.is_syn() && (in_net(p.src, [10, 0, 0]) || p.src == attacker)).count();
    assert_eq!(s.trojan_connections, trojan_syns as u64);
}

#[test]
fn http_responses_have_content_length_and_body() {
    let cfg = GenConfig { http_fraction: 1.0, udp_fraction: 0.0, ..small(9, 6000) };
    let (v, _) = run(cfg);
    let pkts: Vec<Pkt> = v.iter().map(|p| parse(&p.data)).collect();
    let mut server_data: HashMap<_, Vec<u8>> = HashMap::new();
    let mut finished = HashSet::new();
    for p in &pkts {
        if p.has(FIN) {
            finished.insert(p.flow());
        }
        if p.sport == 80 {
            server_data.entry(p.flow()).or_default().extend_from_slice(&p.payload);
        }
    }
    let mut checked = 0;
    for (flow, data) in server_data {
        if !finished.contains(&flow) {
            continue;
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let text = String::from_utf8_lossy(rest);
            assert!(text.starts_with("HTTP/1.1 "));
            let end = text.find("\r\n\r\n").unwrap() + 4;
            let cl: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(rest.len() >= end + cl);
            rest = &rest[end + cl..];
            checked += 1;
        }
    }
    assert!(checked > 20, "checked {checked} responses");
}

#[test]
fn scan_probes_present_and_counted() {
    let cfg = GenConfig {
        scan: Some(ScanConfig { scanners: 1, ports_per_scanner: 100, targets: 3, open_fraction: 0.1 }),
        concurrency: 3,
        ..small(4, 4000)
    };
    let (v, g) = run(cfg);
    let scanner = IpAddr::V4(g.scanners()[0]);
    assert_eq!(g.scanners()[0], Ipv4Addr::new(203, 0, 113, 1));
    let pkts: Vec<Pkt> = v.iter().map(|p| parse(&p.data)).collect();
    let probes: Vec<&Pkt> = pkts.iter().filter(|p| p.src == scanner && p.is_syn()).collect();
    assert_eq!(probes.len(), 300, "scan finished within the trace");
    assert_eq!(g.stats().scan_probes, 300);
    let targets: HashSet<IpAddr> = probes.iter().map(|p| p.dst).collect();
    assert_eq!(targets.len(), 3);
    for t in &targets {
        let ports: HashSet<u16> = probes.iter().filter(|p| p.dst == *t).map(|p| p.dport).collect();
        assert_eq!(ports.len(), 100, "distinct ports per target");
    }
    let open = pkts.iter().filter(|p| p.dst == scanner && p.flags == SYN | ACK).count();
    let closed = pkts.iter().filter(|p| p.dst == scanner && p.flags == RST | ACK).count();
    let resets = pkts.iter().filter(|p| p.src == scanner && p.flags == RST).count();
    assert_eq!(open as u64, g.stats().scan_open_ports);
    assert_eq!(open + closed, 300);
    assert_eq!(resets, open);
    assert!(open > 5 && closed > 200);
    // Interleaved with normal traffic.
    let first = pkts.iter().position(|p| p.src == scanner).unwrap();
    let last = pkts.iter().rposition(|p| p.src == scanner).unwrap();
    let normal_between = pkts[first..last].iter().filter(|p| !is_special(p)).count();
    assert!(normal_between > 100);
}

/// Index of the first packet of each trojan step for `host`.
fn trojan_steps(pkts: &[Pkt], host: Ipv4Addr) -> [Option<usize>; 4] {
    let h = IpAddr::V4(host);
    let ssh = pkts.iter().position(|p| p.is_syn() && p.dst == h && p.dport == 22);
    let http = pkts.iter().position(|p| p.src == h && get_uri(p).is_some_and(|u| u.ends_with(".html")));
    let ftp_exe = pkts
        .iter()
        .position(|p| p.src == h && p.payload.starts_with(b"RETR ") && p.payload.ends_with(b".exe\r\n"));
    let ftp_zip = pkts
        .iter()
        .position(|p| p.src == h && p.payload.starts_with(b"RETR ") && p.payload.ends_with(b".zip\r\n"));
    assert!(ftp_exe < ftp_zip || ftp_zip.is_none());
    // FTP data connections deliver the exe/zip magic bytes to the host.
    if ftp_zip.is_some() {
        assert!(pkts.iter().any(|p| p.dst == h && p.payload.starts_with(b"MZ")));
        assert!(pkts.iter().any(|p| p.dst == h && p.payload.starts_with(b"PK\x03\x04")));
    }
    let irc = pkts.iter().position(|p| p.src == h && p.dport == 6667 && p.payload.starts_with(b"NICK "));
    if irc.is_some() {
        assert!(pkts.iter().any(|p| p.src == h && p.dport == 6667 && p.payload.starts_with(b"JOIN #")));
    }
    [ssh, http, ftp_exe, irc]
}

#[test]
fn trojan_steps_in_order_decoys_not() {
    let cfg =
        GenConfig { trojan: Some(TrojanConfig { hosts: 3, decoys: 3 }), concurrency: 4, ..small(21, 12000) };
    let (v, g) = run(cfg);
    let pkts: Vec<Pkt> = v.iter().map(|p| parse(&p.data)).collect();
    assert_eq!(g.trojan_hosts().len(), 3);
    assert_eq!(g.decoy_hosts().len(), 3);
    for &h in g.trojan_hosts() {
        let s = trojan_steps(&pkts, h);
        let s: Vec<usize> = s.iter().map(|x| x.expect("all steps present")).collect();
        assert!(s.windows(2).all(|w| w[0] < w[1]), "host {h} steps {s:?}");
    }
    for &h in g.decoy_hosts() {
        let s = trojan_steps(&pkts, h);
        let s: Vec<usize> = s.iter().map(|x| x.expect("all steps present")).collect();
        assert!(!s.windows(2).all(|w| w[0] < w[1]), "decoy {h} steps {s:?}");
    }
}

#[test]
fn invalid_configs_name_the_parameter() {
    let cases: Vec<(GenConfig, &str)> = vec![
        (GenConfig { udp_fraction: 1.5, ..GenConfig::default() }, "udp_fraction"),
        (GenConfig { http_fraction: -0.1, ..GenConfig::default() }, "http_fraction"),
        (GenConfig { xss_fraction: f64::NAN, ..GenConfig::default() }, "xss_fraction"),
        (GenConfig { ipv6_fraction: 2.0, ..GenConfig::default() }, "ipv6_fraction"),
        (GenConfig { flows: 0, ..GenConfig::default() }, "flows"),
        (GenConfig { concurrency: 0, ..GenConfig::default() }, "concurrency"),
        (GenConfig { pps: 0, ..GenConfig::default() }, "pps"),
        (GenConfig { url_pool: 0, ..GenConfig::default() }, "url_pool"),
        (GenConfig { http_servers: 0, ..GenConfig::default() }, "http_servers"),
        (GenConfig { http_servers: 201, ..GenConfig::default() }, "http_servers"),
        (GenConfig { internal_net: [192, 0, 0, 0], ..GenConfig::default() }, "internal_net"),
        (
            GenConfig {
                scan: Some(ScanConfig { scanners: 0, ..ScanConfig::default() }),
                ..GenConfig::default()
            },
            "scan.scanners",
        ),
        (
            GenConfig {
                scan: Some(ScanConfig { open_fraction: 3.0, ..ScanConfig::default() }),
                ..GenConfig::default()
            },
            "scan.open_fraction",
        ),
        (
            GenConfig { trojan: Some(TrojanConfig { hosts: 500, decoys: 0 }), ..GenConfig::default() },
            "trojan.hosts",
        ),
    ];
    for (cfg, name) in cases {
        let err = Generator::new(cfg).unwrap_err();
        let GenError::InvalidParameter { name: n, .. } = &err;
        assert_eq!(*n, name);
        assert!(err.to_string().contains(name), "{err}");
    }
    // http disabled → url_pool 0 is fine.
    assert!(Generator::new(GenConfig { url_pool: 0, http_fraction: 0.0, ..small(1, 50) }).is_ok());
}

/// `http_servers` bounds the web servers (and `Host` names) HTTP flows use; the default
/// keeps the historical output byte for byte.
#[test]
fn http_servers_limits_the_web_servers() {
    let base = GenConfig { http_fraction: 1.0, udp_fraction: 0.0, ipv6_fraction: 0.0, ..small(9, 6000) };
    let hosts = |cfg: GenConfig| -> HashSet<(IpAddr, String)> {
        let (v, _) = run(cfg);
        v.iter()
            .map(|p| parse(&p.data))
            .filter(|p| get_uri(p).is_some())
            .map(|p| {
                let t = String::from_utf8(p.payload.clone()).unwrap();
                let host = t.split("\r\n").find_map(|l| l.strip_prefix("Host: ")).unwrap().to_string();
                (p.dst, host)
            })
            .collect()
    };
    let one = hosts(GenConfig { http_servers: 1, ..base.clone() });
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(one.contains(&("192.0.2.1".parse().unwrap(), "www.site0.example".to_string())));
    let three = hosts(GenConfig { http_servers: 3, ..base.clone() });
    assert!(three.len() > 1 && three.len() <= 3, "{three:?}");
    let all = hosts(base.clone());
    assert!(all.len() > 3, "{all:?}");
    assert_eq!(generate(GenConfig { http_servers: 200, ..base.clone() }).unwrap(), generate(base).unwrap());
}

#[test]
fn stats_update_as_it_goes() {
    let mut g = Generator::new(small(2, 1000)).unwrap();
    let _ = g.by_ref().take(10).count();
    assert_eq!(g.stats().packets, 10);
    assert_eq!(g.len(), 990);
    let _ = g.by_ref().count();
    assert_eq!(g.stats().packets, 1000);
    assert!(g.next().is_none());
    assert!(g.stats().flows_started > 0);
}

#[test]
fn flows_parameter_roughly_respected() {
    let cfg = GenConfig { flows: 200, packets: 20_000, ..GenConfig::default() };
    let (_, g) = run(cfg);
    let n = g.stats().flows_started;
    assert!((100..=400).contains(&n), "flows started {n}");
}

/// With default sizes, a default scan and default trojans complete inside the
/// default 100k-packet trace.
#[test]
fn default_scan_and_trojans_complete() {
    let cfg = GenConfig {
        scan: Some(ScanConfig::default()),
        trojan: Some(TrojanConfig::default()),
        ..GenConfig::default()
    };
    let (_, g) = run(cfg);
    let s = g.stats();
    assert_eq!(s.scan_probes, 1000);
    // Per host: SSH, HTTP, FTP control + 2 data, IRC.
    assert_eq!(s.trojan_connections, 2 * 6);
    assert!(s.tcp_flows > 500 && s.udp_flows > 100, "{s:?}");
}

/// Release-mode throughput measurement; run with
/// `cargo test --release -p streamnf-tracegen -- --ignored --nocapture`
/// (`TRACEGEN_BENCH_PACKETS` overrides the packet count).
#[test]
#[ignore]
fn throughput_1m() {
    let n: u64 =
        std::env::var("TRACEGEN_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let cfg = GenConfig { packets: n, ..GenConfig::default() };
    let t = std::time::Instant::now();
    let mut bytes = 0u64;
    for p in Generator::new(cfg).unwrap() {
        bytes += p.data.len() as u64;
    }
    let dt = t.elapsed().as_secs_f64();
    println!("{n} packets ({bytes} bytes) in {dt:.3}s = {:.0} packets/s", n as f64 / dt);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_small_configs_never_panic(
        seed in any::<u64>(),
        packets in 0u64..400,
        flows in 1u32..50,
        concurrency in 1u32..10,
        udp in 0.0f64..=1.0,
        http in 0.0f64..=1.0,
        xss in 0.0f64..=1.0,
        v6 in 0.0f64..=1.0,
        url_pool in 1u32..20,
        scan in proptest::option::of((1u32..3, 1u32..20, 1u32..4, 0.0f64..=1.0)),
        trojan in proptest::option::of((0u32..3, 0u32..3)),
        pps in 1u64..10_000_000_000,
    ) {
        let cfg = GenConfig {
            seed, packets, flows, concurrency, udp_fraction: udp, http_fraction: http,
            xss_fraction: xss, ipv6_fraction: v6, url_pool, pps,
            scan: scan.map(|(scanners, ports_per_scanner, targets, open_fraction)| ScanConfig { scanners, ports_per_scanner, targets, open_fraction }),
            trojan: trojan.map(|(hosts, decoys)| TrojanConfig { hosts, decoys }),
            ..GenConfig::default()
        };
        let (v, g) = run(cfg);
        prop_assert_eq!(v.len() as u64, packets);
        prop_assert!(v.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        for p in &v {
            parse(&p.data);
        }
        let uris = v.iter().filter_map(|p| get_uri(&parse(&p.data))).count() as u64;
        prop_assert_eq!(g.stats().http_requests, uris);
    }
}
