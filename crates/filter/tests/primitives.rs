//! Every primitive on crafted packets (IPv4, IPv6, VLAN, ARP, ICMP, fragments, runts),
//! plus compile errors with their columns.

mod common;

use common::*;
use streamnf_filter::Filter;
use streamnf_packet::{LinkType, Packet};

fn pkt(data: Vec<u8>) -> Packet {
    Packet::new(LinkType::Ethernet, data, 0)
}

#[track_caller]
fn m(expr: &str, data: &[u8]) -> bool {
    let f = Filter::compile(expr).unwrap_or_else(|e| panic!("{expr:?}:\n{}", e.render()));
    f.matches(&pkt(data.to_vec()))
}

#[track_caller]
fn yes(expr: &str, data: &[u8]) {
    assert!(m(expr, data), "{expr:?} should match");
}

#[track_caller]
fn no(expr: &str, data: &[u8]) {
    assert!(!m(expr, data), "{expr:?} should not match");
}

#[track_caller]
fn err_col(expr: &str, column: usize, msg_part: &str) {
    let e = Filter::compile(expr).expect_err(expr);
    assert_eq!(e.column, column, "{expr:?}: {}", e.render());
    assert!(e.message.contains(msg_part), "{expr:?}: message {:?} lacks {msg_part:?}", e.message);
    assert_eq!(e.expr, expr);
}

fn syn() -> Vec<u8> {
    tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, 0x02, b"")
}

#[test]
fn empty_matches_everything() {
    for e in ["", "   ", "\t\n"] {
        let f = Filter::compile(e).unwrap();
        assert!(f.is_match_all());
        assert!(f.matches(&pkt(syn())));
        assert!(f.matches(&pkt(vec![1, 2, 3])));
    }
    assert!(Filter::match_all().matches(&pkt(vec![])));
}

#[test]
fn protocol_keywords() {
    let s = syn();
    for e in
        ["ip", "tcp", "ip proto 6", "proto \\tcp", "ip proto \\tcp", "ether proto \\ip", "ether proto 0x800"]
    {
        yes(e, &s);
    }
    for e in ["ip6", "udp", "icmp", "arp", "rarp", "sctp", "icmp6", "ip6 proto 6", "igmp"] {
        no(e, &s);
    }
    let u6 = udp6("fe80::1", "ff02::1:2", 546, 547);
    for e in ["ip6", "udp", "ip6 proto 17", "proto 17", "ether proto \\ip6"] {
        yes(e, &u6);
    }
    no("ip", &u6);
    yes("icmp", &icmp4_echo([1, 1, 1, 1], [2, 2, 2, 2], false));
    yes("icmp6", &icmp6_echo("::1", "::2"));
    let a = eth([0xff; 6], MAC_A, &[], 0x0806, &arp(1, MAC_A, [10, 0, 0, 1], [10, 0, 0, 254]));
    yes("arp", &a);
    no("ip or ip6 or rarp", &a);
    let r = eth([0xff; 6], MAC_A, &[], 0x8035, &arp(3, MAC_A, [1, 2, 3, 4], [5, 6, 7, 8]));
    yes("rarp", &r);
    let sc = eth(MAC_B, MAC_A, &[], 0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 132, 0, &ports(1, 2, &[0; 8])));
    yes("sctp", &sc);
    yes("sctp port 2", &sc);
    no("tcp port 2 or udp port 2", &sc);
}

#[test]
fn hosts_and_nets_v4() {
    let s = syn();
    yes("host 10.0.0.1", &s);
    yes("src host 10.0.0.1", &s);
    no("dst host 10.0.0.1", &s);
    yes("dst 10.0.0.2", &s);
    yes("src or dst host 10.0.0.2", &s);
    no("src and dst host 10.0.0.2", &s);
    yes("ip host 10.0.0.2", &s);
    no("arp host 10.0.0.2", &s);
    yes("net 10.0.0.0/8", &s);
    yes("net 10", &s);
    yes("net 10.0", &s);
    yes("host 10.0", &s); // a short host is a network, as in libpcap
    yes("net 10.0.0.0 mask 255.255.255.0", &s);
    no("net 10.1.0.0/16", &s);
    yes("src net 10.0.0.0/30 and dst net 10.0.0.2/31", &s);
    yes("net 0.0.0.0/0", &s);
    let loopback = tcp4([127, 0, 0, 1], [127, 0, 0, 1], 1, 2, 0x02, b"");
    yes("src and dst host 127.0.0.1", &loopback);
}

#[test]
fn hosts_in_arp_and_rarp() {
    let a = eth([0xff; 6], MAC_A, &[], 0x0806, &arp(1, MAC_A, [10, 0, 0, 1], [10, 0, 0, 254]));
    yes("host 10.0.0.1", &a);
    yes("src host 10.0.0.1", &a);
    yes("dst host 10.0.0.254", &a);
    no("dst host 10.0.0.1", &a);
    yes("arp host 10.0.0.254", &a);
    no("ip host 10.0.0.254", &a);
    no("rarp host 10.0.0.254", &a);
    yes("net 10.0.0.0/24", &a);
    let r = eth([0xff; 6], MAC_A, &[], 0x8035, &arp(3, MAC_A, [1, 2, 3, 4], [5, 6, 7, 8]));
    yes("rarp src host 1.2.3.4", &r);
    no("arp host 1.2.3.4", &r);
}

#[test]
fn hosts_and_nets_v6() {
    let t = tcp6("2001:db8::1", "2001:db8::2", 5555, 443, 0x02);
    yes("host 2001:db8::1", &t);
    yes("ip6 src host 2001:db8::1", &t);
    no("dst host 2001:db8::1", &t);
    yes("net 2001:db8::/32", &t);
    yes("dst net 2001:db8::2/128", &t);
    no("net 2001:db9::/32", &t);
    no("host 10.0.0.1", &t);
    no("host 2001:db8::1", &syn());
}

#[test]
fn ports_and_ranges() {
    let s = syn();
    for e in [
        "port 80",
        "tcp port 80",
        "dst port 80",
        "src port 1234",
        "port http",
        "tcp port www",
        "port 0x50",
        "port 0120",
        "portrange 79-81",
        "tcp portrange 80-80",
        "src portrange 1000-2000",
        "portrange 81-79",
        "port 443 or 80",
        "src and dst portrange 80-1234",
    ] {
        yes(e, &s);
    }
    for e in
        ["udp port 80", "sctp port 80", "src port 80", "port 443", "portrange 81-100", "src and dst port 80"]
    {
        no(e, &s);
    }
    let u = udp4([192, 168, 1, 5], [8, 8, 8, 8], 5353, 53, b"q");
    yes("udp port domain", &u);
    yes("port domain", &u);
    no("port http", &u);
    let u6 = udp6("fe80::1", "ff02::1:2", 546, 547);
    yes("udp dst port 547", &u6);
    yes("port 546", &u6);
    let t6 = tcp6("2001:db8::1", "2001:db8::2", 5555, 443, 0x02);
    yes("tcp port https", &t6);
    yes("port 443 and ip6", &t6);
}

#[test]
fn ports_only_on_first_fragments() {
    let hdr = ports(1234, 80, &[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 2, 0, 0, 0, 0, 0]);
    let first = eth(MAC_B, MAC_A, &[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, 0x2000, &hdr));
    let later = eth(MAC_B, MAC_A, &[], 0x0800, &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, 0x00b9, &hdr));
    yes("port 80", &first);
    yes("tcp[13] = 0x18", &first);
    no("port 80", &later);
    no("tcp[13] = 0x18", &later);
    yes("tcp", &later); // tcpdump's `tcp` does not look at the fragment offset
    yes("ip[6:2] & 0x1fff != 0", &later);
    // IPv6 fragment header: `tcp` looks through it, `port` does not.
    let mut p = vec![6, 0, 0, 1, 0, 0, 0, 9];
    p.extend(ports(1234, 80, &[0; 16]));
    let f6 = eth(MAC_B, MAC_A, &[], 0x86dd, &ipv6(v6("::1"), v6("::2"), 44, &p));
    yes("tcp", &f6);
    yes("ip6 proto 6", &f6);
    no("port 80", &f6);
}

#[test]
fn vlan_tags() {
    let v = vlan_tcp4(&[100], [10, 9, 9, 1], [10, 9, 9, 2], 3333, 22);
    yes("vlan", &v);
    yes("vlan 100", &v);
    no("vlan 200", &v);
    no("ip", &v); // like tcpdump: without `vlan`, the tag hides the IP header
    yes("vlan and ip", &v);
    yes("vlan 100 and tcp port 22 and host 10.9.9.1", &v);
    no("vlan and vlan", &v);
    yes("not vlan 7 and ip", &vlan_tcp4(&[5], [1, 1, 1, 1], [2, 2, 2, 2], 1, 2)); // `ip` looks one tag in
    no("not vlan 7 and ip", &vlan_tcp4(&[5, 7], [1, 1, 1, 1], [2, 2, 2, 2], 1, 2));
    let q = vlan_tcp4(&[200, 300], [10, 9, 9, 3], [10, 9, 9, 4], 4444, 80);
    yes("vlan 200 and vlan 300 and tcp port 80", &q);
    no("vlan 200 and tcp", &q);
    no("vlan", &syn());
    yes("not vlan", &syn());
}

#[test]
fn link_layer() {
    let b = eth([0xff; 6], MAC_A, &[], 0x0806, &arp(1, MAC_A, [1, 1, 1, 1], [2, 2, 2, 2]));
    yes("broadcast", &b);
    yes("ether broadcast", &b);
    yes("ether multicast", &b);
    no("broadcast", &syn());
    yes("ether src 02:00:00:00:00:0a", &syn());
    yes("ether dst 02-00-00-00-00-0b", &syn());
    yes("ether host 0200.0000.000b", &syn());
    yes("ether src and dst host 02:00:00:00:00:0a", &eth(MAC_A, MAC_A, &[], 0x88cc, &[0; 30]));
    no("ether dst 02:00:00:00:00:0a", &syn());
    yes("ether proto 0x88cc", &eth(MAC_A, MAC_A, &[], 0x88cc, &[0; 30]));
    let mc = udp4([10, 1, 2, 3], [224, 0, 0, 251], 5353, 5353, b"x");
    yes("ip multicast", &mc);
    no("ip multicast", &syn());
    yes("ip broadcast", &udp4([0, 0, 0, 0], [255, 255, 255, 255], 68, 67, b"x"));
    yes("ip6 multicast", &udp6("fe80::1", "ff02::1:2", 546, 547));
    no("ip6 multicast", &tcp6("::1", "::2", 1, 2, 2));
}

#[test]
fn lengths_use_wire_length() {
    let s = syn(); // 54 bytes
    yes("len = 54", &s);
    yes("less 54", &s);
    no("less 53", &s);
    yes("greater 54", &s);
    no("greater 55", &s);
    yes("len - 14 = 40", &s);
    let mut cut = s.clone();
    cut.truncate(20);
    let p = Packet::with_orig_len(LinkType::Ethernet, cut, 0, 1500);
    assert!(Filter::compile("greater 1000").unwrap().matches(&p));
    assert!(Filter::compile("len = 1500").unwrap().matches(&p));
}

#[test]
fn tcp_flags_and_accessors() {
    let s = syn();
    let sa = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234, 0x12, b"");
    let get = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, 0x18, b"GET / HTTP/1.1\r\n");
    yes("tcp[tcpflags] & tcp-syn != 0", &s);
    yes("tcp[tcpflags] & (tcp-syn|tcp-ack) != 0", &sa);
    yes("tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack = 0", &s);
    no("tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack = 0", &sa);
    yes("tcp[13] & 2 != 0", &s);
    yes("tcp[13] == 0x12", &sa);
    yes("tcp[tcpflags] = tcp-push|tcp-ack", &get);
    yes("tcp[((tcp[12] & 0xf0) >> 2):4] = 0x47455420", &get);
    yes("tcp[0:2] = 1234 and tcp[2:2] = 80", &s);
    yes("ip[9] = 6 and ip[0] & 0xf = 5 and ip[8] = 64", &s);
    yes("ip[2:2] = 40", &s);
    yes("ether[12:2] = 0x0800 and ether[0] = 2", &s);
    yes("udp[2:2] = 53", &udp4([1, 1, 1, 1], [2, 2, 2, 2], 9, 53, b""));
    yes("icmp[icmptype] = icmp-echo", &icmp4_echo([1, 1, 1, 1], [2, 2, 2, 2], false));
    yes(
        "icmp[icmptype] = icmp-echoreply and icmp[icmpcode] = 0",
        &icmp4_echo([1, 1, 1, 1], [2, 2, 2, 2], true),
    );
    yes("icmp6[icmp6type] = icmp6-echo", &icmp6_echo("::1", "::2"));
    yes("ip6[6] = 58 and ip6[7] = 64", &icmp6_echo("::1", "::2"));
    let a = eth([0xff; 6], MAC_A, &[], 0x0806, &arp(1, MAC_A, [1, 1, 1, 1], [2, 2, 2, 2]));
    yes("arp[6:2] = 1", &a);
    // Arithmetic, unsigned and wrapping like BPF.
    yes("tcp[13] + 1 = 3 and tcp[13] * 4 = 8 and tcp[13] - 3 = 0xffffffff", &s);
    yes("tcp[13] / 2 = 1 and tcp[13] % 2 = 0 and tcp[13] ^ 3 = 1 and tcp[13] | 1 = 3", &s);
    yes("tcp[13] << 3 = 16 and tcp[13] >> 1 = 1 and -tcp[13] = -2", &s);
    yes("2 + 3 * 4 = 14 and (2 + 3) * 4 = 20 and 1 | 2 & 0 = 1", &s);
    yes("len > 2 and 1 < 2 and 2 >= 2 and 2 <= 2", &s);
    // tcp[] only applies to IPv4, as in tcpdump.
    no("tcp[13] & 2 != 0", &tcp6("::1", "::2", 1, 2, 2));
}

#[test]
fn reads_past_the_capture_reject_the_packet() {
    let s = syn();
    no("tcp[100] = 0", &s);
    no("not tcp[100] = 0", &s);
    no("tcp[100] = 0 or tcp", &s); // BPF stops at the failed load
    yes("tcp or tcp[100] = 0", &s); // ... unless it never gets there
    no("tcp[13] / (tcp[13] - 2) = 1", &s); // runtime division by zero
    let runt = vec![0xffu8; 10];
    no("ip", &runt);
    no("not ip", &runt);
    yes("less 20", &runt);
    no("not ether broadcast", &runt[..3]);
}

#[test]
fn boolean_structure_and_continuation() {
    let s = syn();
    yes("tcp and port 80", &s);
    yes("tcp && port 80", &s);
    yes("udp or tcp", &s);
    yes("udp || tcp", &s);
    yes("not udp", &s);
    yes("! udp", &s);
    yes("!udp", &s);
    yes("not not tcp", &s);
    no("not (tcp or udp)", &s);
    // and/or have equal precedence, left-associative: (udp or tcp) and port 443.
    no("udp or tcp and port 443", &s);
    yes("tcp or udp and port 443 or port 80", &s);
    // Implicit qualifier continuation.
    yes("host 1.2.3.4 or 10.0.0.2", &s);
    no("host 10.0.0.1 and not 10.0.0.2", &s);
    yes("host 10.0.0.1 and not 10.0.0.3", &s);
    yes("port 443 or 80", &s);
    no("tcp port 443 or 22", &s);
    yes("src host 1.1.1.1 or 10.0.0.1", &s);
    no("src host 1.1.1.1 or 10.0.0.2", &s);
    yes("host 9.9.9.9 or (8.8.8.8 or 10.0.0.1)", &s);
    yes("dst port (443 or 80)", &s);
    yes("port 22 or host 1.1.1.1 or 10.0.0.2", &s);
}

#[test]
fn other_link_types_use_parsed_headers() {
    // Raw IPv4: the network layer starts at offset 0.
    let ip = ipv4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        6,
        0,
        &ports(1234, 80, &[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 2, 2, 0, 0, 0, 0, 0]),
    );
    let p = Packet::new(LinkType::RawIp, ip, 0);
    for e in ["ip", "tcp", "host 10.0.0.1", "tcp dst port 80", "tcp[13] = 2", "ip[9] = 6"] {
        assert!(Filter::compile(e).unwrap().matches(&p), "{e}");
    }
    for e in ["ip6", "ether host 02:00:00:00:00:0a", "vlan", "broadcast", "vlan and ip"] {
        assert!(!Filter::compile(e).unwrap().matches(&p), "{e}");
    }
}

#[test]
fn malformed_packets_do_not_panic() {
    let mut frames = synthetic_frames();
    for n in [0usize, 1, 13, 14, 15, 20, 33, 34, 40, 53] {
        let mut s = syn();
        s.truncate(n);
        frames.push((s, 54));
    }
    let exprs = [
        "tcp port 80",
        "host 10.0.0.1",
        "net 2001:db8::/32",
        "vlan 100 and vlan and ip",
        "ether host 02:00:00:00:00:0a",
        "icmp6[0] = 128",
        "arp[7] = 1",
        "tcp[tcp[12] >> 2] = 0",
        "broadcast or multicast",
        "ip6 proto 6",
    ];
    for e in exprs {
        let f = Filter::compile(e).unwrap();
        for (d, len) in &frames {
            for link in [
                LinkType::Ethernet,
                LinkType::RawIp,
                LinkType::LinuxSll,
                LinkType::Null,
                LinkType::Other(147),
            ] {
                let _ = f.matches(&Packet::with_orig_len(link, d.clone(), 0, *len));
            }
        }
    }
}

#[test]
fn api_surface() {
    let f: Filter = "tcp port 80".parse().unwrap();
    assert_eq!(f.expr(), "tcp port 80");
    assert_eq!(f.to_string(), "tcp port 80");
    assert!(!f.is_match_all());
    let e = Filter::compile("port 80 and port htp").unwrap_err();
    assert_eq!(
        e.to_string(),
        "column 18: expected a port number after 'port', found 'htp' (unknown port name)"
    );
    assert_eq!(e.caret_line(), format!("{}^", " ".repeat(17)));
    assert_eq!(e.render().lines().count(), 3);
}

#[test]
fn errors_point_at_the_right_column() {
    err_col("port http2", 6, "unknown port name");
    err_col("host example.com", 6, "host names are not supported; use an address");
    err_col("tcp and 10.0.0.1", 9, "no qualifier");
    err_col("10.0.0.1", 1, "add a qualifier");
    err_col("tcp and", 8, "end of expression");
    err_col("(tcp or udp", 12, "expected ')' to close the '(' at column 1, found end of expression");
    err_col("tcp or udp)", 11, "unmatched ')'");
    err_col("tcp port 80 udp", 13, "expected 'and', 'or'");
    err_col("host 256.1.1.1", 6, "invalid IPv4 address");
    err_col("net 10.1.2.3/8", 5, "non-network bits set");
    err_col("net 10.0.0.0/33", 14, "mask length must be <= 32");
    err_col("host 10.0.0.0/8", 6, "Mask syntax for networks only");
    err_col("port 70000", 6, "illegal port number 70000 > 65535");
    err_col("udp port ssh", 10, "port 'ssh' is tcp");
    err_col("ip6 host 1.2.3.4", 10, "'ip6' modifier applied to ip host");
    err_col("tcp host 1.2.3.4", 10, "'tcp' modifier applied to host");
    err_col("ip host ::1", 9, "'ip' modifier applied to ip6 host");
    err_col("host 00:11:22:33:44:55", 6, "ethernet address used in non-ether expression");
    err_col("ether host 1.2.3.4", 12, "illegal link layer address");
    err_col("port 1.2.3.4", 6, "'port' modifier applied to IP address");
    err_col("tcp[13:3] = 1", 8, "data size must be 1, 2, or 4");
    err_col("tcp[13] / 0 = 1", 9, "division by zero");
    err_col("tcp[13] = ", 11, "expected a number");
    err_col("tcp[13 = 1", 8, "expected ']'");
    err_col("vlan 4096", 6, "VLAN tag 4096 greater than maximum 4095");
    err_col("ip port 80", 9, "illegal qualifier of 'port'");
    err_col("portrange 10-x", 11, "unknown port in range");
    err_col("portrange 10-", 13, "expected 'and', 'or'");
    err_col("ip proto \\foo", 10, "unknown ip proto 'foo'");
    err_col("ether proto \\foo", 13, "unknown ether proto 'foo'");
    err_col("gateway 1.2.3.4", 1, "not supported");
    err_col("port 09", 6, "non-octal digit");
    err_col("tcp port 80 and $", 17, "unexpected character '$'");
    err_col("ether", 1, "'ether' needs");
    err_col("héllo and port", 2, "unexpected character 'é'");
    err_col("port é", 6, "unexpected character");
    err_col("less", 5, "a number after 'less'");
}
