//! Flowspaces and flow keys.
//!
//! A flowspace is an ordered list of header fields (`[src_ip]`, `[src_ip, dst_ip]`, the
//! 5-tuple). Its key for a packet is a fixed-size, `Copy`, hashable [`FlowKey`], cheap
//! enough to compute on every packet at every splitter. This module only extracts; it
//! never decides where a key goes.

use crate::packet::Packet;
use std::fmt;
use std::net::IpAddr;

/// One header field usable in a flowspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// IP source address.
    SrcIp,
    /// IP destination address.
    DstIp,
    /// IP protocol number.
    Proto,
    /// Transport source port (TCP/UDP/SCTP; 0 otherwise).
    SrcPort,
    /// Transport destination port (TCP/UDP/SCTP; 0 otherwise).
    DstPort,
    /// The unordered pair of endpoints {(src_ip, src_port), (dst_ip, dst_port)} plus the
    /// protocol: both directions of a connection get the same key.
    Connection,
    /// Outermost VLAN ID (0 when untagged).
    Vlan,
}

impl Field {
    /// Parses a field name as written in chain files (`src_ip`, `dst_port`, `connection` ...).
    pub fn from_name(s: &str) -> Option<Field> {
        Some(match s {
            "src_ip" => Field::SrcIp,
            "dst_ip" => Field::DstIp,
            "proto" => Field::Proto,
            "src_port" => Field::SrcPort,
            "dst_port" => Field::DstPort,
            "connection" => Field::Connection,
            "vlan" => Field::Vlan,
            _ => return None,
        })
    }

    /// The name used in chain files.
    pub fn name(self) -> &'static str {
        match self {
            Field::SrcIp => "src_ip",
            Field::DstIp => "dst_ip",
            Field::Proto => "proto",
            Field::SrcPort => "src_port",
            Field::DstPort => "dst_port",
            Field::Connection => "connection",
            Field::Vlan => "vlan",
        }
    }
}

/// An ordered list of fields identifying a set of flows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Flowspace(pub Vec<Field>);

impl Flowspace {
    /// The classic 5-tuple (src_ip, dst_ip, proto, src_port, dst_port).
    pub fn five_tuple() -> Flowspace {
        Flowspace(vec![Field::SrcIp, Field::DstIp, Field::Proto, Field::SrcPort, Field::DstPort])
    }

    /// Parses names like `["src_ip", "dst_ip"]`; returns the first unknown name on error.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Flowspace, String> {
        names
            .iter()
            .map(|n| Field::from_name(n.as_ref()).ok_or_else(|| n.as_ref().to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Flowspace)
    }

    /// Extracts this flowspace's key from a packet. Fields a packet lacks (ports of ICMP,
    /// addresses of ARP) contribute zeros, so every packet has a key.
    pub fn key(&self, pkt: &Packet) -> FlowKey {
        let mut k = FlowKey::EMPTY;
        for f in &self.0 {
            k.push_field(*f, pkt);
        }
        k
    }
}

/// A field's value given outside a packet (the subject of a context message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// An address (`src_ip`, `dst_ip`).
    Ip(IpAddr),
    /// A number (`proto`, ports, `vlan`).
    Num(u64),
}

impl Flowspace {
    /// The key of the flow whose fields have the values `value` returns, laid out exactly
    /// as [`Flowspace::key`] lays out a packet's, so both hash alike. `None` when a field is
    /// missing or of the wrong kind, or for `connection` (it needs a whole packet).
    pub fn key_from_values(&self, mut value: impl FnMut(Field) -> Option<FieldValue>) -> Option<FlowKey> {
        let mut k = FlowKey::EMPTY;
        for &f in &self.0 {
            match (f, value(f)?) {
                (Field::SrcIp | Field::DstIp, FieldValue::Ip(ip)) => k.push_ip(Some(ip)),
                (Field::Proto, FieldValue::Num(n)) => k.push(&[u8::try_from(n).ok()?]),
                (Field::SrcPort | Field::DstPort | Field::Vlan, FieldValue::Num(n)) => {
                    k.push(&u16::try_from(n).ok()?.to_be_bytes())
                }
                _ => return None,
            }
        }
        Some(k)
    }
}

impl fmt::Display for Flowspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, fld) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(fld.name())?;
        }
        f.write_str("]")
    }
}

/// Fixed-size key of a packet in a flowspace: up to [`FlowKey::CAPACITY`] bytes, `Copy`.
///
/// IPv4 addresses take 4 bytes and IPv6 16, each prefixed by a 1-byte tag, so keys of
/// different address families never collide. The 5-tuple over IPv6 needs 1+16+1+16+1+2+2 = 39.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    len: u8,
    buf: [u8; FlowKey::CAPACITY],
}

impl FlowKey {
    /// Maximum number of key bytes.
    pub const CAPACITY: usize = 47;

    /// The empty key (the key of the empty flowspace: every packet in one flow).
    pub const EMPTY: FlowKey = FlowKey { len: 0, buf: [0; FlowKey::CAPACITY] };

    /// Builds a key from raw bytes; longer inputs are truncated to `CAPACITY` after
    /// folding the excess into the last 8 bytes with FNV-1a, so they stay distinct.
    pub fn from_bytes(b: &[u8]) -> FlowKey {
        let mut k = FlowKey::EMPTY;
        if b.len() <= Self::CAPACITY {
            k.buf[..b.len()].copy_from_slice(b);
            k.len = b.len() as u8;
        } else {
            let head = Self::CAPACITY - 8;
            k.buf[..head].copy_from_slice(&b[..head]);
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for &x in &b[head..] {
                h ^= u64::from(x);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            k.buf[head..].copy_from_slice(&h.to_be_bytes());
            k.len = Self::CAPACITY as u8;
        }
        k
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// A 64-bit hash of the key, stable across runs and platforms (FNV-1a), used by
    /// splitters to pick an instance.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &x in self.as_bytes() {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    fn push(&mut self, bytes: &[u8]) {
        let start = usize::from(self.len);
        let end = (start + bytes.len()).min(Self::CAPACITY);
        let n = end - start;
        self.buf[start..end].copy_from_slice(&bytes[..n]);
        self.len = end as u8;
    }

    fn push_ip(&mut self, ip: Option<IpAddr>) {
        match ip {
            Some(IpAddr::V4(a)) => {
                self.push(&[4]);
                self.push(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                self.push(&[6]);
                self.push(&a.octets());
            }
            None => self.push(&[0]),
        }
    }

    fn push_field(&mut self, f: Field, pkt: &Packet) {
        let ip = pkt.hdr.ip;
        let ports = pkt.hdr.transport.ports().unwrap_or((0, 0));
        match f {
            Field::SrcIp => self.push_ip(ip.map(|i| i.src)),
            Field::DstIp => self.push_ip(ip.map(|i| i.dst)),
            Field::Proto => self.push(&[ip.map(|i| i.proto).unwrap_or(0)]),
            Field::SrcPort => self.push(&ports.0.to_be_bytes()),
            Field::DstPort => self.push(&ports.1.to_be_bytes()),
            Field::Vlan => {
                let v = pkt.hdr.eth.filter(|e| e.vlan_count > 0).map(|e| e.vlan_ids[0]).unwrap_or(0);
                self.push(&v.to_be_bytes());
            }
            Field::Connection => {
                let a = (ip.map(|i| i.src), ports.0);
                let b = (ip.map(|i| i.dst), ports.1);
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                self.push(&[ip.map(|i| i.proto).unwrap_or(0)]);
                self.push_ip(lo.0);
                self.push(&lo.1.to_be_bytes());
                self.push_ip(hi.0);
                self.push(&hi.1.to_be_bytes());
            }
        }
    }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlowKey(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_values_match_keys_from_packets() {
        let frame = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [192, 0, 2, 9], 64)
            .udp(5353, 53);
        let mut data = Vec::new();
        frame.write(&mut data, b"x").unwrap();
        let pkt = Packet::new(LinkType::Ethernet, data, 0);
        let fs = Flowspace(vec![Field::SrcIp, Field::Proto, Field::DstPort]);
        let by_value = fs.key_from_values(|f| match f {
            Field::SrcIp => Some(FieldValue::Ip(IpAddr::from([10, 0, 0, 1]))),
            Field::Proto => Some(FieldValue::Num(17)),
            Field::DstPort => Some(FieldValue::Num(53)),
            _ => None,
        });
        assert_eq!(by_value, Some(fs.key(&pkt)));
        let other = fs.key_from_values(|f| match f {
            Field::SrcIp => Some(FieldValue::Ip(IpAddr::from([10, 0, 0, 2]))),
            _ => Some(FieldValue::Num(17)),
        });
        assert_ne!(other, Some(fs.key(&pkt)));
        assert_eq!(fs.key_from_values(|_| None), None, "a missing field gives no key");
        assert_eq!(fs.key_from_values(|_| Some(FieldValue::Num(70_000))), None, "wrong kind or range");
        assert_eq!(Flowspace(vec![Field::Connection]).key_from_values(|_| Some(FieldValue::Num(1))), None);
    }
    use crate::headers::LinkType;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Packet {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000)
            .write(&mut v, b"")
            .expect("build");
        Packet::new(LinkType::Ethernet, v, 0)
    }

    #[test]
    fn five_tuple_distinguishes_flows() {
        let fs = Flowspace::five_tuple();
        let a = tcp([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80);
        let b = tcp([10, 0, 0, 1], 1001, [10, 0, 0, 2], 80);
        assert_ne!(fs.key(&a), fs.key(&b));
        assert_eq!(fs.key(&a), fs.key(&a.clone()));
        assert_eq!(fs.key(&a).as_bytes().len(), 1 + 4 + 1 + 4 + 1 + 2 + 2);
    }

    #[test]
    fn connection_key_is_direction_free() {
        let fs = Flowspace(vec![Field::Connection]);
        let a = tcp([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80);
        let b = tcp([10, 0, 0, 2], 80, [10, 0, 0, 1], 1000);
        assert_eq!(fs.key(&a), fs.key(&b));
        let c = tcp([10, 0, 0, 2], 81, [10, 0, 0, 1], 1000);
        assert_ne!(fs.key(&a), fs.key(&c));
    }

    #[test]
    fn coarse_flowspace_groups_flows() {
        let fs = Flowspace(vec![Field::SrcIp]);
        let a = tcp([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80);
        let b = tcp([10, 0, 0, 1], 2000, [10, 9, 9, 9], 443);
        assert_eq!(fs.key(&a), fs.key(&b));
        assert_eq!(
            Flowspace::from_names(&["src_ip", "dst_port"]),
            Ok(Flowspace(vec![Field::SrcIp, Field::DstPort]))
        );
        assert_eq!(Flowspace::from_names(&["src_ip", "nope"]), Err("nope".to_string()));
        assert_eq!(Flowspace(vec![Field::SrcIp, Field::DstIp]).to_string(), "[src_ip, dst_ip]");
    }

    #[test]
    fn non_ip_packets_have_keys() {
        let p = Packet::new(LinkType::Ethernet, vec![0u8; 60], 0);
        let k = Flowspace::five_tuple().key(&p);
        assert_eq!(k, Flowspace::five_tuple().key(&p));
    }

    proptest! {
        #[test]
        fn keys_equal_iff_fields_equal(s1: [u8; 4], s2: [u8; 4], p1: u16, p2: u16) {
            let fs = Flowspace::five_tuple();
            let a = tcp(s1, p1, [192, 0, 2, 1], 80);
            let b = tcp(s2, p2, [192, 0, 2, 1], 80);
            prop_assert_eq!(fs.key(&a) == fs.key(&b), s1 == s2 && p1 == p2);
            prop_assert_eq!(fs.key(&a).stable_hash() == fs.key(&b).stable_hash() || fs.key(&a) != fs.key(&b), true);
        }

        #[test]
        fn long_keys_fold_but_stay_distinct(a in proptest::collection::vec(any::<u8>(), 48..100), flip in 40usize..48) {
            let mut b = a.clone();
            let i = flip.min(b.len() - 1);
            b[i] ^= 0xff;
            prop_assert_ne!(FlowKey::from_bytes(&a), FlowKey::from_bytes(&b));
            prop_assert_eq!(FlowKey::from_bytes(&a).as_bytes().len(), FlowKey::CAPACITY);
        }
    }
}
