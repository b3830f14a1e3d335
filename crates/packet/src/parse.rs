//! Frame parser: link layer → IP → transport, filling [`Headers`].
//!
//! One pass, no allocation, never panics: every read is bounds-checked and a short or
//! inconsistent header ends parsing with a [`Malformed`] reason together with the headers
//! parsed so far. Application payloads are not parsed here.

use crate::headers::{EthernetInfo, Headers, IpInfo, LinkType, TcpFlags, Transport};
use crate::malformed::Malformed;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of RARP.
pub const ETHERTYPE_RARP: u16 = 0x8035;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Largest frame streamnf accepts (pcap's usual maximum snap length).
pub const MAX_FRAME: usize = 262_144;

type ParseResult = Result<Headers, (Headers, Malformed)>;

fn be16(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn offset16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Parses a frame captured on `link`. On failure returns the headers parsed so far and
/// the reason parsing stopped.
pub fn parse(link: LinkType, data: &[u8]) -> ParseResult {
    let mut h = Headers::empty(link);
    if data.len() > MAX_FRAME {
        return Err((h, Malformed::Oversized));
    }
    let (ether_type, l3) = match link {
        LinkType::Ethernet => match parse_ethernet(data, &mut h) {
            Ok(v) => v,
            Err(m) => return Err((h, m)),
        },
        LinkType::RawIp => match data.first().map(|b| b >> 4) {
            Some(4) => (ETHERTYPE_IPV4, 0),
            Some(6) => (ETHERTYPE_IPV6, 0),
            Some(_) => return Err((h, Malformed::BadIpv4Header)),
            None => return Err((h, Malformed::TruncatedLink)),
        },
        LinkType::Ipv4 => (ETHERTYPE_IPV4, 0),
        LinkType::Ipv6 => (ETHERTYPE_IPV6, 0),
        LinkType::LinuxSll => match be16(data, 14) {
            Some(et) if data.len() >= 16 => (et, 16),
            _ => return Err((h, Malformed::TruncatedLink)),
        },
        LinkType::LinuxSll2 => match be16(data, 0) {
            Some(et) if data.len() >= 20 => (et, 20),
            _ => return Err((h, Malformed::TruncatedLink)),
        },
        LinkType::Null | LinkType::Loop => {
            let Some(raw) = data.get(0..4) else {
                return Err((h, Malformed::TruncatedLink));
            };
            let fam_le = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let fam_be = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            let fam = if link == LinkType::Loop {
                fam_be
            } else if fam_le < 256 {
                fam_le
            } else {
                fam_be
            };
            match fam {
                2 => (ETHERTYPE_IPV4, 4),
                24 | 28 | 30 => (ETHERTYPE_IPV6, 4),
                _ => (0, 4),
            }
        }
        LinkType::Other(_) => return Err((h, Malformed::UnsupportedLink)),
    };
    h.ether_type = ether_type;
    h.l3_offset = offset16(l3);
    h.l4_offset = h.l3_offset;
    h.payload_offset = h.l3_offset;
    match ether_type {
        ETHERTYPE_IPV4 => parse_ipv4(data, l3, h),
        ETHERTYPE_IPV6 => parse_ipv6(data, l3, h),
        _ => Ok(h),
    }
}

fn parse_ethernet(d: &[u8], h: &mut Headers) -> Result<(u16, usize), Malformed> {
    let Some(hdr) = d.get(0..14) else {
        return Err(Malformed::TruncatedLink);
    };
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&hdr[0..6]);
    src.copy_from_slice(&hdr[6..12]);
    let mut et = u16::from_be_bytes([hdr[12], hdr[13]]);
    let mut off = 14;
    let mut eth = EthernetInfo { dst, src, ether_type: et, vlan_ids: [0; 2], vlan_count: 0 };
    while matches!(et, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD) {
        if usize::from(eth.vlan_count) >= 2 {
            h.eth = Some(eth);
            return Err(Malformed::BadVlan);
        }
        let (Some(tci), Some(inner)) = (be16(d, off), be16(d, off + 2)) else {
            h.eth = Some(eth);
            return Err(Malformed::BadVlan);
        };
        eth.vlan_ids[usize::from(eth.vlan_count)] = tci & 0x0fff;
        eth.vlan_count += 1;
        et = inner;
        off += 4;
    }
    eth.ether_type = et;
    h.eth = Some(eth);
    Ok((et, off))
}

fn parse_ipv4(d: &[u8], off: usize, mut h: Headers) -> ParseResult {
    let Some(ip) = d.get(off..off + 20) else {
        return Err((h, Malformed::TruncatedIpv4));
    };
    if ip[0] >> 4 != 4 {
        return Err((h, Malformed::BadIpv4Header));
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err((h, Malformed::BadIpv4Header));
    }
    let total_len = u16::from_be_bytes([ip[2], ip[3]]);
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let info = IpInfo {
        version: 4,
        src: IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
        dst: IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])),
        proto: ip[9],
        ttl: ip[8],
        header_len: offset16(ihl),
        total_len,
        frag_offset: frag & 0x1fff,
        more_fragments: frag & 0x2000 != 0,
    };
    h.ip = Some(info);
    if d.len() < off + ihl {
        return Err((h, Malformed::TruncatedIpv4));
    }
    if usize::from(total_len) < ihl {
        return Err((h, Malformed::BadIpv4Header));
    }
    // The IP datagram ends at total_len (Ethernet padding follows) or at the capture end.
    let end = (off + usize::from(total_len)).min(d.len());
    let l4 = off + ihl;
    h.l4_offset = offset16(l4);
    h.payload_offset = h.l4_offset;
    h.payload_len = offset16(end.saturating_sub(l4));
    if info.frag_offset != 0 {
        return Ok(h);
    }
    parse_transport(d, l4, end, info.proto, h)
}

fn parse_ipv6(d: &[u8], off: usize, mut h: Headers) -> ParseResult {
    let Some(ip) = d.get(off..off + 40) else {
        return Err((h, Malformed::TruncatedIpv6));
    };
    if ip[0] >> 4 != 6 {
        return Err((h, Malformed::BadIpv6Header));
    }
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    dst.copy_from_slice(&ip[24..40]);
    let mut info = IpInfo {
        version: 6,
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        proto: ip[6],
        ttl: ip[7],
        header_len: 40,
        total_len: payload_len.saturating_add(40),
        frag_offset: 0,
        more_fragments: false,
    };
    let end = (off + 40 + usize::from(payload_len)).min(d.len());
    let mut next = ip[6];
    let mut cur = off + 40;
    // Walk extension headers: hop-by-hop (0), routing (43), fragment (44), dest opts (60),
    // authentication (51). At most 8, to bound the work on hostile input.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let (Some(&nh), Some(&len)) = (d.get(cur), d.get(cur + 1)) else {
                    h.ip = Some(info);
                    return Err((h, Malformed::BadIpv6ExtHeader));
                };
                let ext_len = (usize::from(len) + 1) * 8;
                if cur + ext_len > end {
                    h.ip = Some(info);
                    return Err((h, Malformed::BadIpv6ExtHeader));
                }
                next = nh;
                cur += ext_len;
            }
            51 => {
                let (Some(&nh), Some(&len)) = (d.get(cur), d.get(cur + 1)) else {
                    h.ip = Some(info);
                    return Err((h, Malformed::BadIpv6ExtHeader));
                };
                let ext_len = (usize::from(len) + 2) * 4;
                if cur + ext_len > end {
                    h.ip = Some(info);
                    return Err((h, Malformed::BadIpv6ExtHeader));
                }
                next = nh;
                cur += ext_len;
            }
            44 => {
                let (Some(&nh), Some(fo)) = (d.get(cur), be16(d, cur + 2)) else {
                    h.ip = Some(info);
                    return Err((h, Malformed::BadIpv6ExtHeader));
                };
                if cur + 8 > end {
                    h.ip = Some(info);
                    return Err((h, Malformed::BadIpv6ExtHeader));
                }
                info.frag_offset = fo >> 3;
                info.more_fragments = fo & 1 != 0;
                next = nh;
                cur += 8;
            }
            _ => break,
        }
    }
    info.proto = next;
    info.header_len = offset16(cur - off);
    h.ip = Some(info);
    h.l4_offset = offset16(cur);
    h.payload_offset = h.l4_offset;
    h.payload_len = offset16(end.saturating_sub(cur));
    if matches!(next, 0 | 43 | 60 | 51 | 44) {
        return Err((h, Malformed::BadIpv6ExtHeader));
    }
    if info.frag_offset != 0 {
        return Ok(h);
    }
    parse_transport(d, cur, end, next, h)
}

fn parse_transport(d: &[u8], off: usize, end: usize, proto: u8, mut h: Headers) -> ParseResult {
    let set_payload = |h: &mut Headers, start: usize| {
        h.payload_offset = offset16(start);
        h.payload_len = offset16(end.saturating_sub(start));
    };
    match proto {
        6 => {
            let (Some(sp), Some(dp), Some(seq), Some(ack), Some(&doff), Some(&flags)) = (
                be16(d, off),
                be16(d, off + 2),
                be32(d, off + 4),
                be32(d, off + 8),
                d.get(off + 12),
                d.get(off + 13),
            ) else {
                return Err((h, Malformed::TruncatedTcp));
            };
            let hl = usize::from(doff >> 4) * 4;
            if hl < 20 || off + hl > end {
                return Err((h, Malformed::TruncatedTcp));
            }
            h.transport = Transport::Tcp {
                src_port: sp,
                dst_port: dp,
                seq,
                ack,
                flags: TcpFlags(flags),
                header_len: doff >> 4 << 2,
            };
            set_payload(&mut h, off + hl);
        }
        17 => {
            let (Some(sp), Some(dp)) = (be16(d, off), be16(d, off + 2)) else {
                return Err((h, Malformed::TruncatedUdp));
            };
            if off + 8 > end {
                return Err((h, Malformed::TruncatedUdp));
            }
            h.transport = Transport::Udp { src_port: sp, dst_port: dp };
            set_payload(&mut h, off + 8);
        }
        132 => {
            let (Some(sp), Some(dp)) = (be16(d, off), be16(d, off + 2)) else {
                return Err((h, Malformed::TruncatedSctp));
            };
            if off + 12 > end {
                return Err((h, Malformed::TruncatedSctp));
            }
            h.transport = Transport::Sctp { src_port: sp, dst_port: dp };
            set_payload(&mut h, off + 12);
        }
        1 | 58 => {
            let (Some(&t), Some(&c)) = (d.get(off), d.get(off + 1)) else {
                return Err((h, Malformed::TruncatedIcmp));
            };
            if off + 4 > end {
                return Err((h, Malformed::TruncatedIcmp));
            }
            h.transport = if proto == 1 {
                Transport::Icmp { icmp_type: t, code: c }
            } else {
                Transport::Icmpv6 { icmp_type: t, code: c }
            };
            set_payload(&mut h, off + 4);
        }
        _ => {}
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [192, 0, 2, 9], 64)
            .tcp(40000, 80, 1000, 65535)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("build");
        v
    }

    #[test]
    fn parses_tcp_over_ipv4() {
        let f = tcp_v4(b"hello");
        let h = parse(LinkType::Ethernet, &f).expect("parse");
        let ip = h.ip.expect("ip");
        assert_eq!(ip.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(ip.dst, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(ip.proto, 6);
        assert_eq!(h.transport.ports(), Some((40000, 80)));
        assert!(h.tcp_flags().expect("tcp").has(TcpFlags::SYN));
        assert_eq!(&f[usize::from(h.payload_offset)..][..usize::from(h.payload_len)], b"hello");
    }

    #[test]
    fn parses_vlan_and_udp_over_ipv6() {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(0x123.try_into().expect("vlan"))
            .ipv6([1; 16], [2; 16], 32)
            .udp(5353, 53);
        let mut v = Vec::new();
        b.write(&mut v, b"q").expect("build");
        let h = parse(LinkType::Ethernet, &v).expect("parse");
        let eth = h.eth.expect("eth");
        assert_eq!((eth.vlan_count, eth.vlan_ids[0]), (1, 0x123));
        assert_eq!(h.ether_type, ETHERTYPE_IPV6);
        assert_eq!(h.transport, Transport::Udp { src_port: 5353, dst_port: 53 });
        assert_eq!(h.payload_len, 1);
    }

    #[test]
    fn parses_icmp_and_raw_ip() {
        let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 9).icmpv4_echo_request(7, 1);
        let mut v = Vec::new();
        b.write(&mut v, b"ping").expect("build");
        let h = parse(LinkType::RawIp, &v).expect("parse");
        assert_eq!(h.transport, Transport::Icmp { icmp_type: 8, code: 0 });
        let h = parse(LinkType::Ipv4, &v).expect("parse");
        assert_eq!(h.l3_offset, 0);
    }

    #[test]
    fn parses_linux_cooked_and_null() {
        let ipv4 = &tcp_v4(b"")[14..];
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(ipv4);
        let h = parse(LinkType::LinuxSll, &sll).expect("sll");
        assert_eq!(h.transport.ports(), Some((40000, 80)));
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ipv4);
        let h = parse(LinkType::Null, &null).expect("null");
        assert_eq!(h.l3_offset, 4);
        assert_eq!(h.transport.ports(), Some((40000, 80)));
    }

    #[test]
    fn truncation_is_reported_with_reason() {
        let f = tcp_v4(b"");
        assert_eq!(parse(LinkType::Ethernet, &f[..10]).err().map(|e| e.1), Some(Malformed::TruncatedLink));
        assert_eq!(parse(LinkType::Ethernet, &f[..30]).err().map(|e| e.1), Some(Malformed::TruncatedIpv4));
        let (h, m) = parse(LinkType::Ethernet, &f[..40]).expect_err("tcp cut");
        assert_eq!(m, Malformed::TruncatedTcp);
        assert!(h.ip.is_some(), "IP header kept when TCP is cut");
    }

    #[test]
    fn later_fragment_has_no_transport() {
        let mut f = tcp_v4(b"0123456789");
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10; // offset 16*8
        let h = parse(LinkType::Ethernet, &f).expect("parse");
        assert!(h.ip.expect("ip").is_later_fragment());
        assert_eq!(h.transport, Transport::None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), lt in 0u32..300) {
            let _ = parse(LinkType::from_linktype(lt), &data);
        }

        #[test]
        fn mutated_frames_never_panic(idx in 0usize..80, byte: u8, cut in 0usize..90) {
            let mut f = tcp_v4(b"payload-bytes");
            if let Some(b) = f.get_mut(idx) { *b = byte; }
            f.truncate(cut.min(f.len()));
            if let Ok(h) = parse(LinkType::Ethernet, &f) {
                let end = usize::from(h.payload_offset) + usize::from(h.payload_len);
                prop_assert!(end <= f.len());
            }
        }
    }
}
