//! Property tests: compiling never panics; random well-formed expressions compile and
//! obey boolean laws (`not E` is exactly the complement of `E`) on random packets.

mod common;

use common::*;
use proptest::prelude::*;
use streamnf_filter::Filter;
use streamnf_packet::{LinkType, Packet};

const V4: &[&str] = &["10.0.0.1", "10.0.0.2", "192.168.1.5", "8.8.8.8"];
const V6: &[&str] = &["2001:db8::1", "2001:db8::2", "fe80::1"];
const PORTS: &[u16] = &[22, 53, 80, 443, 1234, 5353];

fn v4(i: usize) -> [u8; 4] {
    V4[i % V4.len()].parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// A complete (untruncated) frame of one of several kinds.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (0usize..9, 0usize..8, 0usize..8, 0usize..6, 0usize..6, any::<u8>(), 0usize..64).prop_map(
        |(kind, a, b, pa, pb, flags, plen)| {
            let (sp, dp) = (PORTS[pa], PORTS[pb]);
            let payload = vec![0x5a; plen];
            match kind {
                0 => tcp4(v4(a), v4(b), sp, dp, flags, &payload),
                1 => udp4(v4(a), v4(b), sp, dp, &payload),
                2 => tcp6(V6[a % 3], V6[b % 3], sp, dp, flags),
                3 => udp6(V6[a % 3], V6[b % 3], sp, dp),
                4 => icmp4_echo(v4(a), v4(b), flags & 1 == 1),
                5 => icmp6_echo(V6[a % 3], V6[b % 3]),
                6 => eth([0xff; 6], MAC_A, &[], 0x0806, &arp(1, MAC_A, v4(a), v4(b))),
                7 => eth(MAC_B, MAC_A, &[], 0x0800, &ipv4(v4(a), v4(b), 132, 0, &ports(sp, dp, &[0; 8]))),
                _ => udp4(v4(a), [224, 0, 0, 251], sp, dp, &payload),
            }
        },
    )
}

fn leaf() -> impl Strategy<Value = String> {
    let dir = prop::sample::select(vec!["", "src ", "dst ", "src or dst ", "src and dst "]);
    let proto = prop::sample::select(vec!["ip", "ip6", "arp", "tcp", "udp", "icmp", "icmp6", "sctp"]);
    let addr = prop::sample::select([V4, V6].concat());
    let port = prop::sample::select(PORTS.to_vec());
    let pproto = prop::sample::select(vec!["", "tcp ", "udp "]);
    let flag = prop::sample::select(vec!["tcp-fin", "tcp-syn", "tcp-rst", "tcp-push", "tcp-ack", "tcp-urg"]);
    prop_oneof![
        proto.prop_map(str::to_string),
        (dir.clone(), addr.clone()).prop_map(|(d, a)| format!("{d}host {a}")),
        (addr.clone(), addr).prop_map(|(a, b)| format!("host {a} or {b}")),
        prop::sample::select(vec![
            "net 10.0.0.0/8",
            "net 2001:db8::/32",
            "net 192.168",
            "dst net 10.0.0.0 mask 255.255.255.0"
        ])
        .prop_map(str::to_string),
        (pproto, dir, port.clone()).prop_map(|(p, d, n)| format!("{p}{d}port {n}")),
        (port.clone(), port).prop_map(|(a, b)| format!("portrange {a}-{b}")),
        (prop::sample::select(vec!["len >", "len <=", "less", "greater"]), 40u32..200)
            .prop_map(|(k, n)| format!("{k} {n}")),
        flag.prop_map(|f| format!("tcp[tcpflags] & {f} != 0")),
        (0u32..20, any::<u8>()).prop_map(|(i, v)| format!("ip[{i}] = {v}")),
        (0u32..19, any::<u16>()).prop_map(|(i, v)| format!("tcp[{i}:2] > {v}")),
        (0u32..5, any::<u16>()).prop_map(|(i, v)| format!("udp[{i}:4] & {v} = 0")),
        (0u32..14, any::<u8>()).prop_map(|(i, v)| format!("ether[{i}] & {v} != 0")),
        prop::sample::select(vec!["icmp[icmptype] = icmp-echo", "icmp6[0] = 128", "arp[7] = 1"])
            .prop_map(str::to_string),
        prop::sample::select(vec!["broadcast", "ether multicast", "ip multicast", "ip6 multicast"])
            .prop_map(str::to_string),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    leaf().prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| format!("not ({e})")),
            inner.clone().prop_map(|e| format!("! ({e})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) || ({b})")),
        ]
    })
}

fn compile(e: &str) -> Filter {
    Filter::compile(e).unwrap_or_else(|err| panic!("{e:?} should compile:\n{}", err.render()))
}

fn token_soup() -> impl Strategy<Value = String> {
    let toks = prop::sample::select(vec![
        "host",
        "net",
        "port",
        "portrange",
        "src",
        "dst",
        "and",
        "or",
        "not",
        "!",
        "(",
        ")",
        "[",
        "]",
        ":",
        "tcp",
        "udp",
        "ip",
        "ip6",
        "ether",
        "vlan",
        "proto",
        "mask",
        "len",
        "less",
        "greater",
        "=",
        "!=",
        "<",
        ">=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "&",
        "|",
        "^",
        "<<",
        ">>",
        "10.0.0.1",
        "10.1",
        "::1",
        "fe80::/10",
        "00:11:22:33:44:55",
        "80",
        "0x50",
        "1000-2000",
        "http",
        "tcp-syn",
        "tcpflags",
        "\\tcp",
        "broadcast",
        "multicast",
        "/",
        "8",
        "99999",
        "4096",
    ]);
    prop::collection::vec((toks, prop::bool::ANY), 0..24)
        .prop_map(|v| v.into_iter().map(|(t, sp)| if sp { format!("{t} ") } else { t.to_string() }).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        let _ = Filter::compile(&s);
    }

    #[test]
    fn token_soup_never_panics(s in token_soup()) {
        if let Ok(f) = Filter::compile(&s) {
            let _ = f.matches(&Packet::new(LinkType::Ethernet, tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 80, 2, b""), 0));
        } else if let Err(e) = Filter::compile(&s) {
            prop_assert!(e.column >= 1 && e.column <= s.chars().count() + 1, "{}", e.render());
        }
    }

    #[test]
    fn not_is_the_exact_complement(e in expr(), f in expr(), pkts in prop::collection::vec(frame(), 1..8)) {
        let fe = compile(&e);
        let not_e = compile(&format!("not ({e})"));
        let bang_e = compile(&format!("!({e})"));
        let ff = compile(&f);
        let and = compile(&format!("({e}) and ({f})"));
        let or = compile(&format!("({e}) or ({f})"));
        let de_morgan = compile(&format!("not ({e}) and not ({f})"));
        for data in pkts {
            let p = Packet::new(LinkType::Ethernet, data, 0);
            let (a, b) = (fe.matches(&p), ff.matches(&p));
            prop_assert_eq!(not_e.matches(&p), !a, "not ({}) on {:?}", e, p.data);
            prop_assert_eq!(bang_e.matches(&p), !a);
            prop_assert_eq!(and.matches(&p), a && b);
            prop_assert_eq!(or.matches(&p), a || b);
            prop_assert_eq!(de_morgan.matches(&p), !(a || b));
        }
    }

    #[test]
    fn truncated_packets_never_match_both_e_and_not_e(e in expr(), data in frame(), cut in 0usize..80) {
        let mut d = data;
        let orig = d.len() as u32;
        d.truncate(cut);
        let p = Packet::with_orig_len(LinkType::Ethernet, d, 0, orig);
        let a = compile(&e).matches(&p);
        let n = compile(&format!("not ({e})")).matches(&p);
        prop_assert!(!(a && n), "{} and its negation both match", e);
    }
}
