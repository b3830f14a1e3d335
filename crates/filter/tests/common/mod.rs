//! Test support: a tiny pcap / pcapng reader and pcap writer, and hand-built frames.
#![allow(dead_code)]

use etherparse::PacketBuilder;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub link: u32,
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

fn rd16(b: &[u8], le: bool) -> u16 {
    let a = [b[0], b[1]];
    if le {
        u16::from_le_bytes(a)
    } else {
        u16::from_be_bytes(a)
    }
}

fn rd32(b: &[u8], le: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}

/// Reads a classic pcap (either byte order, µs or ns) or a pcapng capture.
pub fn read_capture(b: &[u8]) -> Result<Vec<Rec>, String> {
    if b.len() < 24 {
        return Err("capture too short".into());
    }
    let magic_le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if magic_le == 0x0A0D0D0A {
        return read_pcapng(b);
    }
    let (le, nanos) = match magic_le {
        0xa1b2c3d4 => (true, false),
        0xa1b23c4d => (true, true),
        0xd4c3b2a1 => (false, false),
        0x4d3cb2a1 => (false, true),
        m => return Err(format!("not a pcap file (magic {m:#x})")),
    };
    let link = rd32(&b[20..], le) & 0x0fff_ffff;
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let sec = u64::from(rd32(&b[off..], le));
        let frac = u64::from(rd32(&b[off + 4..], le));
        let caplen = rd32(&b[off + 8..], le) as usize;
        let orig_len = rd32(&b[off + 12..], le);
        off += 16;
        if off + caplen > b.len() {
            return Err("truncated record".into());
        }
        let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        out.push(Rec { link, ts_ns, orig_len, data: b[off..off + caplen].to_vec() });
        off += caplen;
    }
    Ok(out)
}

fn read_pcapng(b: &[u8]) -> Result<Vec<Rec>, String> {
    let mut out = Vec::new();
    let mut le = true;
    let mut ifaces: Vec<(u32, u64)> = Vec::new(); // (link, ticks per second)
    let mut off = 0;
    while off + 12 <= b.len() {
        let ty_le = u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]);
        if ty_le == 0x0A0D0D0A {
            le = u32::from_le_bytes([b[off + 8], b[off + 9], b[off + 10], b[off + 11]]) == 0x1A2B3C4D;
            ifaces.clear();
        }
        let ty = rd32(&b[off..], le);
        let len = rd32(&b[off + 4..], le) as usize;
        if len < 12 || off + len > b.len() {
            return Err("bad pcapng block".into());
        }
        let body = &b[off + 8..off + len - 4];
        match ty {
            1 => {
                let link = u32::from(rd16(body, le));
                let mut tps = 1_000_000u64;
                let mut o = 8;
                while o + 4 <= body.len() {
                    let code = rd16(&body[o..], le);
                    let olen = rd16(&body[o + 2..], le) as usize;
                    if code == 0 {
                        break;
                    }
                    if code == 9 && olen >= 1 {
                        let r = body[o + 4];
                        tps = if r & 0x80 != 0 { 1u64 << (r & 0x7f) } else { 10u64.pow(u32::from(r)) };
                    }
                    o += 4 + olen.div_ceil(4) * 4;
                }
                ifaces.push((link, tps));
            }
            6 => {
                let iface = rd32(body, le) as usize;
                let ts = (u64::from(rd32(&body[4..], le)) << 32) | u64::from(rd32(&body[8..], le));
                let caplen = rd32(&body[12..], le) as usize;
                let orig_len = rd32(&body[16..], le);
                let (link, tps) = *ifaces.get(iface).ok_or("unknown interface")?;
                let ts_ns = (u128::from(ts) * 1_000_000_000 / u128::from(tps)) as u64;
                out.push(Rec { link, ts_ns, orig_len, data: body[20..20 + caplen].to_vec() });
            }
            3 => {
                let orig_len = rd32(body, le);
                let (link, _) = *ifaces.first().ok_or("no interface")?;
                let caplen = (orig_len as usize).min(body.len() - 4);
                out.push(Rec { link, ts_ns: 0, orig_len, data: body[4..4 + caplen].to_vec() });
            }
            _ => {}
        }
        off += len;
    }
    Ok(out)
}

/// Writes a little-endian microsecond pcap with link type `link`.
pub fn write_pcap(link: u32, recs: &[Rec]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&262144u32.to_le_bytes());
    b.extend_from_slice(&link.to_le_bytes());
    for r in recs {
        b.extend_from_slice(&((r.ts_ns / 1_000_000_000) as u32).to_le_bytes());
        b.extend_from_slice(&((r.ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
        b.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&r.orig_len.to_le_bytes());
        b.extend_from_slice(&r.data);
    }
    b
}

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Ethernet frame with optional 802.1Q tags (outermost first).
pub fn eth(dst: [u8; 6], src: [u8; 6], vlans: &[u16], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    for (i, id) in vlans.iter().enumerate() {
        v.extend_from_slice(&(if i == 0 && vlans.len() > 1 { 0x88a8u16 } else { 0x8100u16 }).to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
    }
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// IPv4 header (no options) + payload; `frag` is the flags/fragment-offset field.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0x12, 0x34]);
    v.extend_from_slice(&frag.to_be_bytes());
    v.extend_from_slice(&[64, proto, 0, 0]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(payload);
    v
}

/// IPv6 header + payload.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(&[next, 64]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(payload);
    v
}

/// 8 bytes of TCP/UDP/SCTP-style ports followed by filler (a minimal "transport header").
pub fn ports(sport: u16, dport: u16, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(rest);
    v
}

/// ARP (op 1 request / 2 reply) for IPv4 over Ethernet.
pub fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut v = vec![0, 1, 0x08, 0x00, 6, 4];
    v.extend_from_slice(&op.to_be_bytes());
    v.extend_from_slice(&sha);
    v.extend_from_slice(&spa);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&tpa);
    v
}

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// IPv4 TCP frame via etherparse, with the given flags byte applied.
pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).tcp(sport, dport, 1000, 512);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v[14 + 20 + 13] = flags;
    v
}

pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn tcp6(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(v6(src), v6(dst), 64).tcp(sport, dport, 1, 512);
    let mut v = Vec::new();
    b.write(&mut v, &[1, 2, 3]).unwrap();
    v[14 + 40 + 13] = flags;
    v
}

pub fn udp6(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(v6(src), v6(dst), 64).udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, &[9; 12]).unwrap();
    v
}

pub fn icmp4_echo(src: [u8; 4], dst: [u8; 4], reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64);
    let b = if reply { b.icmpv4_echo_reply(7, 1) } else { b.icmpv4_echo_request(7, 1) };
    let mut v = Vec::new();
    b.write(&mut v, &[0xab; 16]).unwrap();
    v
}

pub fn icmp6_echo(src: &str, dst: &str) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(v6(src), v6(dst), 64).icmpv6_echo_request(7, 1);
    let mut v = Vec::new();
    b.write(&mut v, &[0xcd; 8]).unwrap();
    v
}

pub fn vlan_tcp4(vlans: &[u16], src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let t = ports(sport, dport, &[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 2, 0, 0, 0, 0, 0]);
    eth(MAC_B, MAC_A, vlans, 0x0800, &ipv4(src, dst, 6, 0, &t))
}

/// A varied set of frames covering every primitive kind (all Ethernet).
pub fn synthetic_frames() -> Vec<(Vec<u8>, u32)> {
    let tcp_hdr = |sport: u16, dport: u16, flags: u8| {
        ports(sport, dport, &[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 2, 0, 0, 0, 0, 0])
    };
    let mut v: Vec<Vec<u8>> = vec![
        tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, 0x02, b""),
        tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 1234, 0x12, b""),
        tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, 0x18, b"GET / HTTP/1.1\r\n\r\n"),
        tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, 0x11, b""),
        tcp4([192, 168, 1, 7], [172, 16, 5, 4], 40000, 22, 0x04, b""),
        tcp4([192, 168, 1, 7], [172, 16, 5, 4], 2000, 443, 0xc2, b""),
        udp4([192, 168, 1, 5], [8, 8, 8, 8], 5353, 53, b"query"),
        udp4([8, 8, 8, 8], [192, 168, 1, 5], 53, 5353, &[0u8; 200]),
        udp4([10, 1, 2, 3], [224, 0, 0, 251], 5353, 5353, b"mdns"),
        tcp6("2001:db8::1", "2001:db8::2", 5555, 443, 0x02),
        tcp6("2001:db8::2", "2001:db8::1", 443, 5555, 0x10),
        udp6("fe80::1", "ff02::1:2", 546, 547),
        icmp4_echo([10, 0, 0, 1], [10, 0, 0, 9], false),
        icmp4_echo([10, 0, 0, 9], [10, 0, 0, 1], true),
        icmp6_echo("2001:db8::1", "2001:db8::99"),
        vlan_tcp4(&[100], [10, 9, 9, 1], [10, 9, 9, 2], 3333, 22),
        vlan_tcp4(&[200], [10, 9, 9, 1], [10, 9, 9, 2], 3333, 80),
        vlan_tcp4(&[200, 300], [10, 9, 9, 3], [10, 9, 9, 4], 4444, 80),
        eth([0xff; 6], MAC_A, &[], 0x0806, &arp(1, MAC_A, [10, 0, 0, 1], [10, 0, 0, 254])),
        eth(MAC_A, MAC_B, &[], 0x0806, &arp(2, MAC_B, [10, 0, 0, 254], [10, 0, 0, 1])),
        eth([0xff; 6], MAC_A, &[], 0x8035, &arp(3, MAC_A, [0, 0, 0, 0], [0, 0, 0, 0])),
        eth([0xff; 6], MAC_A, &[100], 0x0806, &arp(1, MAC_A, [10, 9, 9, 1], [10, 9, 9, 254])),
        // IPv4 first fragment (MF) and a later fragment, both TCP port 80.
        eth(
            MAC_B,
            MAC_A,
            &[],
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, 0x2000, &tcp_hdr(1234, 80, 0x18)),
        ),
        eth(
            MAC_B,
            MAC_A,
            &[],
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, 0x00b9, &tcp_hdr(1234, 80, 0x18)),
        ),
        // IPv6 fragment header then TCP; IPv6 hop-by-hop then UDP.
        eth(
            MAC_B,
            MAC_A,
            &[],
            0x86dd,
            &ipv6(v6("2001:db8::1"), v6("2001:db8::2"), 44, &{
                let mut p = vec![6, 0, 0, 1, 0, 0, 0, 9];
                p.extend(tcp_hdr(1234, 80, 0x02));
                p
            }),
        ),
        eth(
            MAC_B,
            MAC_A,
            &[],
            0x86dd,
            &ipv6(v6("2001:db8::1"), v6("ff02::16"), 0, &{
                let mut p = vec![17, 0, 5, 2, 0, 0, 1, 0];
                p.extend(ports(53, 53, &[0, 8, 0, 0]));
                p
            }),
        ),
        // SCTP over IPv4 and IPv6.
        eth(
            MAC_B,
            MAC_A,
            &[],
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 132, 0, &ports(2905, 2905, &[0; 8])),
        ),
        eth(
            MAC_B,
            MAC_A,
            &[],
            0x86dd,
            &ipv6(v6("2001:db8::1"), v6("2001:db8::2"), 132, &ports(80, 36412, &[0; 8])),
        ),
        // Non-IP (LLDP), IGMP, GRE.
        eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], MAC_A, &[], 0x88cc, &[0u8; 40]),
        eth(
            [0x01, 0, 0x5e, 0, 0, 1],
            MAC_A,
            &[],
            0x0800,
            &ipv4([10, 0, 0, 1], [224, 0, 0, 1], 2, 0, &[0x11, 0, 0, 0, 0, 0, 0, 0]),
        ),
        eth(MAC_B, MAC_A, &[], 0x0800, &ipv4([10, 0, 0, 1], [255, 255, 255, 255], 47, 0, &[0u8; 24])),
        // Runt frames.
        vec![0xff; 10],
        eth(MAC_B, MAC_A, &[], 0x0800, &[0x45, 0, 0]),
        eth(MAC_B, MAC_A, &[], 0x86dd, &[0x60; 12]),
    ];
    let mut out: Vec<(Vec<u8>, u32)> = v
        .drain(..)
        .map(|d| {
            let l = d.len() as u32;
            (d, l)
        })
        .collect();
    // Truncated captures: on-wire length larger than the captured bytes.
    let mut big = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, 0x18, &[0x55; 1400]);
    big.truncate(60);
    out.push((big, 1454));
    let mut cut = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80, 0x10, &[]);
    cut.truncate(14 + 20 + 6);
    out.push((cut, 54));
    out
}

pub fn synthetic_pcap() -> Vec<u8> {
    let recs: Vec<Rec> = synthetic_frames()
        .into_iter()
        .enumerate()
        .map(|(i, (data, orig_len))| Rec {
            link: 1,
            ts_ns: 1_700_000_000_000_000_000 + i as u64 * 1_000_000,
            orig_len,
            data,
        })
        .collect();
    write_pcap(1, &recs)
}
