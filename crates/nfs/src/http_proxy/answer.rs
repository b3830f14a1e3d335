//! Answer frames: the TCP segments the proxy sends for a hit, from the server's address
//! back to the client, with valid IPv4/IPv6 and TCP checksums. Builds bytes only.

use super::*;

/// The client segment being processed, as the source of answers: they go from its
/// destination (the server) back to its source (the client).
pub(super) struct AnswerTo<'a> {
    pub(super) tpl: &'a Packet,
    pub(super) ip: IpInfo,
    pub(super) server_port: u16,
    pub(super) client_port: u16,
    /// The origin's address key (first part of every URL identity on this connection).
    pub(super) origin: Vec<u8>,
    /// The segment's acknowledgement number: the server's next sequence number as the
    /// client knows it.
    pub(super) ack_seq: Option<u32>,
    /// The client's next sequence number after this segment.
    pub(super) client_next: u32,
}

impl AnswerTo<'_> {
    /// One TCP segment (ACK, plus PSH when `last`) carrying `payload`, with valid IPv4 (or
    /// IPv6) and TCP checksums; the link header is the template's with the MACs swapped.
    /// The payload is the concatenation of `parts`.
    pub(super) fn segment(&self, seq: u32, ack: u32, last: bool, parts: &[&[u8]]) -> Option<Packet> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let l3 = usize::from(self.tpl.hdr.l3_offset);
        let mut f = Vec::with_capacity(l3 + 60 + payload_len);
        f.extend_from_slice(self.tpl.data.get(..l3)?);
        if self.tpl.hdr.link == LinkType::Ethernet && f.len() >= 12 {
            let (dst, src) = f.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
        }
        let tcp_len = 20 + payload_len;
        let (src, dst) = (self.ip.dst, self.ip.src);
        let pseudo = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(20 + tcp_len).ok()?;
                let at = f.len();
                f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
                f[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let ck = checksum(&f[at..at + 20]);
                f[at + 10..at + 12].copy_from_slice(&ck.to_be_bytes());
                let mut p = Vec::with_capacity(12);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&[0, 6]);
                p.extend_from_slice(&(tcp_len as u16).to_be_bytes());
                p
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(tcp_len).ok()?;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&plen.to_be_bytes());
                f.extend_from_slice(&[6, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let mut p = Vec::with_capacity(40);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&(tcp_len as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, 6]);
                p
            }
            _ => return None,
        };
        let at = f.len();
        let flags = TcpFlags::ACK | if last { TcpFlags::PSH } else { 0 };
        f.extend_from_slice(&self.server_port.to_be_bytes());
        f.extend_from_slice(&self.client_port.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        for p in parts {
            f.extend_from_slice(p);
        }
        let ck = checksum_with(&pseudo, &f[at..]);
        f[at + 16..at + 18].copy_from_slice(&ck.to_be_bytes());
        Some(Packet::new(self.tpl.hdr.link, f, self.tpl.ts_ns))
    }
}

/// The Internet checksum of `pseudo` followed by `data` (`pseudo` has an even length).
pub(super) fn checksum_with(pseudo: &[u8], data: &[u8]) -> u16 {
    !(ones_complement_sum(data, ones_complement_sum(pseudo, 0)) as u16)
}

/// `a` comes after `b` in TCP sequence space.
pub(super) fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
