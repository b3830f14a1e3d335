//! `nat`: source NAT (§6) for IPv4 TCP, UDP and ICMP, with idle and teardown timeouts.
//!
//! This module owns the NAT's translation decisions, its mapping records and their expiry.
//! It must never keep state outside the store (the struct holds configuration only), never
//! let *when* a timer fires change what it outputs, and never panic on input bytes.
//!
//! Outbound packets (source inside one of `internal_nets`, destination outside) get the
//! source address `external_ip` and a port from a pool shared by every instance; TCP and
//! UDP use the source port, ICMP echo/timestamp queries the identifier. Replies to
//! `external_ip:port` are translated back. ICMP errors are translated both ways: an error
//! from outside about a translated packet gets its outer destination *and* the embedded
//! packet's source restored; an error from inside about a translated reply gets the external
//! address on the outside and inside. Every checksum a rewrite touches is updated
//! incrementally (IPv4 header, TCP/UDP with its pseudo-header, ICMP, and the embedded IPv4
//! header and transport checksum of an ICMP error). IPv6 is never translated (transit IPv6
//! passes; IPv6 from an internal IPv6 prefix is dropped).
//!
//! **Expiry is logical.** A mapping records its last-seen trace second and, for TCP, the
//! FIN/RST it has seen. A packet that finds a mapping past its idle deadline (TCP
//! established, TCP transitory, UDP or ICMP timeout) *retires* it (deletes it and its
//! `reverse` slot, counts it as expired) and then treats it as absent; a port probe that
//! finds a `reverse` slot whose mapping is past its deadline retires that mapping and takes
//! the slot. Timers (`NfContext::schedule_timer`) only collect garbage: a timer's handler
//! retires the mapping if it is past its deadline *at the timer's due time*, and otherwise
//! does nothing (a later timer exists). Only packets schedule timers, so the set of timers
//! due before the trace ends, and hence the final state, does not depend on when the
//! runtime fires them (the parallel engine fires them late).
//!
//! Port choice is deterministic, so runs with any number of instances translate exactly
//! as one instance does: a mapping's external port is `port_min + hash(connection) mod
//! pool`, probing the next ports while that (port, remote endpoint) pair is held by a live
//! mapping. The NF partitions its input by the remote address
//! ([`NetworkFunction::partition_hash`]; for an ICMP error, the remote address of the
//! packet it embeds): all the state of a remote host's mappings is read and written by one
//! task, in the order the root sent the packets. (Behind a vertex with several instances,
//! packets reach the NAT in per-upstream-task order; two new connections to one remote
//! endpoint that hash to one port may then swap ports. docs/nfs/nat.md states this
//! equivalence.)
//!
//! State (all in the store):
//! - `conn` (per-flow, `[connection]`): proto ‖ internal endpoint ‖ remote endpoint →
//!   mapping record (external port, TCP flags seen, last-seen second) packed in an `Int`.
//! - `reverse` (shared): proto ‖ external port ‖ remote endpoint → internal endpoint; a slot
//!   exists exactly while the `conn` record that names it exists.
//! - `counters` (shared): per-protocol and per-outcome counters (non-blocking increments).
//! - `exhausted` (shared): internal address ‖ remote address → trace time of the last
//!   `nat_port_exhausted` alert (the alert's rate limit).

use crate::net::{Cidr, KeyBuf};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, ProcessingMode, ReadSet, StateExt,
    StateObjectSpec,
};
use streamnf_packet::checksum::{update16, update_bytes};
use streamnf_packet::{Field, Flowspace, Packet, TcpFlags, Transport};
use streamnf_store::{Op, Value};

const CONN: usize = 0;
const REVERSE: usize = 1;
const COUNTERS: usize = 2;
const EXHAUSTED: usize = 3;

/// Ports tried for one new mapping before the pool counts as exhausted for its remote
/// endpoint.
const MAX_PROBES: u32 = 256;

const NS: u64 = 1_000_000_000;
/// At most one `nat_port_exhausted` alert per (internal address, remote address) per this
/// much trace time.
const ALERT_INTERVAL_NS: u64 = NS;
/// Longest accepted timeout (30 days), so deadline arithmetic stays far from overflow.
const MAX_TIMEOUT_S: u64 = 30 * 24 * 3600;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Timer payload tags.
const TIMER_CONN: u8 = 1;
const TIMER_EXHAUSTED: u8 = 2;

/// Mapping flag: a packet from outside was translated on this mapping.
const IN_SEEN: u8 = 1;
/// Mapping flag: FIN seen from inside.
const FIN_OUT: u8 = 2;
/// Mapping flag: FIN seen from outside.
const FIN_IN: u8 = 4;
/// Mapping flag: RST seen (either way).
const RST: u8 = 8;

/// Idle timeouts of the NAT's mappings, in seconds (each 1..=2 592 000, i.e. 30 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A TCP mapping that has translated a packet from outside and seen no RST and not FIN
    /// both ways (RFC 5382 REQ-5: at least 2 h 4 min; default 7440).
    pub tcp_established: u64,
    /// Any other TCP mapping: only outbound packets so far, FIN both ways, or RST (RFC 5382:
    /// at least 4 min; default 240).
    pub tcp_transitory: u64,
    /// A UDP mapping (RFC 4787 REQ-5: at least 2 min, 5 min recommended; default 300).
    pub udp: u64,
    /// An ICMP query mapping (RFC 5508 REQ-1: at least 60 s; default 60).
    pub icmp: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { tcp_established: 7440, tcp_transitory: 240, udp: 300, icmp: 60 }
    }
}

/// What the NAT does with an outbound packet that finds no free port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnExhaustion {
    /// Drop it (default).
    #[default]
    Drop,
    /// Forward it untranslated.
    Pass,
}

/// Source NAT.
#[derive(Debug, Clone)]
pub struct Nat {
    external_ip: Ipv4Addr,
    internal: Vec<Cidr>,
    port_min: u16,
    port_max: u16,
    timeouts: Timeouts,
    on_exhaustion: OnExhaustion,
    mode: ProcessingMode,
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            external_ip: Ipv4Addr::new(100, 64, 0, 1),
            internal: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
                .iter()
                .filter_map(|s| Cidr::parse(s).ok())
                .collect(),
            port_min: 10_000,
            port_max: 65_535,
            timeouts: Timeouts::default(),
            on_exhaustion: OnExhaustion::Drop,
            mode: ProcessingMode::Synchronous,
        }
    }
}

/// Which address/port of a packet a rewrite replaces.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Src,
    Dst,
}

/// Which way a packet crosses the NAT.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Out,
    In,
}

/// What a packet is to the NAT (decided from its headers; see `Nat::classify`).
enum Class {
    /// Not IP: passed on.
    NonIp,
    /// Neither outbound nor addressed to the external address: passed on.
    Transit,
    /// Cannot be translated (IPv6, a later fragment, an unknown ICMP type): dropped and
    /// counted under this reason.
    Untranslatable(&'static str),
    /// An outbound TCP/UDP packet or ICMP query of this connection.
    Outbound(ConnId),
    /// An inbound TCP/UDP packet or ICMP reply to `external_ip:ext_port` from
    /// `remote:rport`.
    Inbound { proto: u8, ext_port: u16, remote: Ipv4Addr, rport: u16 },
    /// An ICMP error crossing the NAT in this direction.
    IcmpError(Dir),
}

/// One mapping's identity: the connection as the inside sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConnId {
    proto: u8,
    internal: Ipv4Addr,
    iport: u16,
    remote: Ipv4Addr,
    rport: u16,
}

impl ConnId {
    /// The `conn` key: proto ‖ internal addr ‖ internal port ‖ remote addr ‖ remote port.
    fn key(&self) -> KeyBuf {
        let mut k = KeyBuf::new();
        k.push(&[self.proto])
            .ip(IpAddr::V4(self.internal))
            .u16(self.iport)
            .ip(IpAddr::V4(self.remote))
            .u16(self.rport);
        k
    }

    /// Inverse of [`ConnId::key`] (for timer payloads).
    fn from_key(b: &[u8]) -> Option<ConnId> {
        let b: &[u8; 15] = b.try_into().ok()?;
        if b[1] != 4 || b[8] != 4 {
            return None;
        }
        Some(ConnId {
            proto: b[0],
            internal: Ipv4Addr::new(b[2], b[3], b[4], b[5]),
            iport: u16::from_be_bytes([b[6], b[7]]),
            remote: Ipv4Addr::new(b[9], b[10], b[11], b[12]),
            rport: u16::from_be_bytes([b[13], b[14]]),
        })
    }

    /// The `reverse` key of this connection's slot on external port `port`.
    fn reverse_key(&self, port: u16) -> KeyBuf {
        reverse_key(self.proto, port, self.remote, self.rport)
    }

    /// The `reverse` value naming this connection: internal address and port in one `Int`.
    fn endpoint(&self) -> Value {
        Value::Int((i64::from(u32::from(self.internal)) << 16) | i64::from(self.iport))
    }
}

fn reverse_key(proto: u8, ext_port: u16, remote: Ipv4Addr, rport: u16) -> KeyBuf {
    let mut k = KeyBuf::new();
    k.push(&[proto]).u16(ext_port).ip(IpAddr::V4(remote)).u16(rport);
    k
}

/// Inverse of [`ConnId::endpoint`].
fn decode_endpoint(v: i64) -> Option<(Ipv4Addr, u16)> {
    let v = u64::try_from(v).ok().filter(|v| *v < 1 << 48)?;
    Some((Ipv4Addr::from((v >> 16) as u32), (v & 0xffff) as u16))
}

/// A mapping record, packed into one `Int`: last-seen second (bits 21..), flags (16..21),
/// external port (0..16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    port: u16,
    flags: u8,
    last_s: u64,
}

impl Mapping {
    fn encode(self) -> Value {
        let last = i64::try_from(self.last_s.min(1 << 41)).unwrap_or(0);
        Value::Int((last << 21) | (i64::from(self.flags & 0x1f) << 16) | i64::from(self.port))
    }

    fn decode(v: &Value) -> Option<Mapping> {
        let Value::Int(x) = *v else { return None };
        let x = u64::try_from(x).ok()?;
        Some(Mapping { port: (x & 0xffff) as u16, flags: ((x >> 16) & 0x1f) as u8, last_s: x >> 21 })
    }
}

/// An ICMP error's embedded IPv4 packet: offsets into the frame and its identifying fields.
#[derive(Clone, Copy, Debug)]
struct Embedded {
    /// Offset of the embedded IPv4 header.
    ip: usize,
    /// Offset of the embedded transport header.
    l4: usize,
    /// End of the bytes that are both captured and inside the outer IP packet.
    end: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// TCP/UDP source port, or the ICMP query identifier.
    sport: u16,
    /// TCP/UDP destination port, 0 for ICMP.
    dport: u16,
}

fn rd16(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn rd_v4(d: &[u8], at: usize) -> Option<Ipv4Addr> {
    d.get(at..at + 4).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Writes `new` at `at` (which must be in range) and folds the change into `ck`.
fn put16(d: &mut [u8], at: usize, new: u16, ck: &mut u16) {
    if let Some(old) = rd16(d, at) {
        d[at..at + 2].copy_from_slice(&new.to_be_bytes());
        *ck = update16(*ck, old, new);
    }
}

fn is_icmp_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 11 | 12)
}

fn is_icmp_query(t: u8) -> bool {
    matches!(t, 0 | 8 | 13 | 14)
}

/// The packet embedded in an ICMPv4 error, when it is an IPv4 TCP, UDP or ICMP-query
/// packet whose ports (identifier) were captured. Never panics.
fn embedded(pkt: &Packet) -> Option<Embedded> {
    let ip = pkt.hdr.ip?;
    let Transport::Icmp { icmp_type, .. } = pkt.hdr.transport else { return None };
    if !is_icmp_error(icmp_type) || ip.version != 4 {
        return None;
    }
    let d = &pkt.data;
    let end = (usize::from(pkt.hdr.l3_offset) + usize::from(ip.total_len)).min(d.len());
    let at = usize::from(pkt.hdr.l4_offset) + 8;
    let vihl = *d.get(at)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || at + ihl > end {
        return None;
    }
    if rd16(d, at + 6)? & 0x1fff != 0 {
        return None; // a later fragment: no ports
    }
    let proto = d[at + 9];
    let (src, dst) = (rd_v4(d, at + 12)?, rd_v4(d, at + 16)?);
    let l4 = at + ihl;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP if l4 + 4 <= end => (rd16(d, l4)?, rd16(d, l4 + 2)?),
        PROTO_ICMP if l4 + 6 <= end && is_icmp_query(d[l4]) => (rd16(d, l4 + 4)?, 0),
        _ => return None,
    };
    Some(Embedded { ip: at, l4, end, proto, src, dst, sport, dport })
}

/// Where a TCP/UDP/ICMP-query rewrite of `side` writes: (port or identifier offset,
/// checksum offset, checksum covers the addresses), when all of it was captured.
fn l4_fields(pkt: &Packet, side: Side) -> Option<(usize, usize, bool)> {
    let l4 = usize::from(pkt.hdr.l4_offset);
    let (port_at, ck_at, pseudo) = match (pkt.hdr.transport, side) {
        (Transport::Tcp { .. }, Side::Src) => (l4, l4 + 16, true),
        (Transport::Tcp { .. }, Side::Dst) => (l4 + 2, l4 + 16, true),
        (Transport::Udp { .. }, Side::Src) => (l4, l4 + 6, true),
        (Transport::Udp { .. }, Side::Dst) => (l4 + 2, l4 + 6, true),
        (Transport::Icmp { .. }, _) => (l4 + 4, l4 + 2, false),
        _ => return None,
    };
    let len = pkt.data.len();
    (port_at + 2 <= len && ck_at + 2 <= len).then_some((port_at, ck_at, pseudo))
}

/// Rewrites the outer IPv4 source or destination address, fixing the header checksum, and
/// patches the parsed headers. Returns the old address.
fn set_outer_ip(pkt: &mut Packet, side: Side, addr: Ipv4Addr) -> Option<Ipv4Addr> {
    let mut ip = pkt.hdr.ip?;
    let l3 = usize::from(pkt.hdr.l3_offset);
    let at = l3 + if side == Side::Src { 12 } else { 16 };
    let d = &mut pkt.data;
    let old = rd_v4(d, at)?;
    let ck = rd16(d, l3 + 10)?;
    let ck = update_bytes(ck, &old.octets(), &addr.octets());
    d[l3 + 10..l3 + 12].copy_from_slice(&ck.to_be_bytes());
    d[at..at + 4].copy_from_slice(&addr.octets());
    match side {
        Side::Src => ip.src = IpAddr::V4(addr),
        Side::Dst => ip.dst = IpAddr::V4(addr),
    }
    pkt.hdr.ip = Some(ip);
    Some(old)
}

/// Rewrites the address and port (ICMP: identifier) of `side` of a TCP, UDP or ICMP-query
/// packet, fixing the IPv4 and transport checksums, and patches the parsed headers.
/// Returns false (nothing changed) when the fields were not captured.
fn rewrite(pkt: &mut Packet, side: Side, addr: Ipv4Addr, port: u16) -> bool {
    let Some((port_at, ck_at, pseudo)) = l4_fields(pkt, side) else { return false };
    let Some(old_ip) = set_outer_ip(pkt, side, addr) else { return false };
    let d = &mut pkt.data;
    let (Some(old_port), Some(old_ck)) = (rd16(d, port_at), rd16(d, ck_at)) else { return false };
    let is_udp = matches!(pkt.hdr.transport, Transport::Udp { .. });
    if !(is_udp && old_ck == 0) {
        let mut ck = if pseudo { update_bytes(old_ck, &old_ip.octets(), &addr.octets()) } else { old_ck };
        ck = update16(ck, old_port, port);
        if is_udp && ck == 0 {
            ck = 0xffff;
        }
        d[ck_at..ck_at + 2].copy_from_slice(&ck.to_be_bytes());
    }
    d[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    match &mut pkt.hdr.transport {
        Transport::Tcp { src_port, dst_port, .. } | Transport::Udp { src_port, dst_port } => match side {
            Side::Src => *src_port = port,
            Side::Dst => *dst_port = port,
        },
        _ => {}
    }
    true
}

/// Translates an ICMP error: the outer address of `outer_side` and the embedded packet's
/// address and port (identifier) of the other side become `addr` and `port`. Fixes the
/// outer IPv4 and ICMP checksums and the embedded IPv4 and transport checksums (the latter
/// when captured; a zero UDP checksum stays zero).
fn rewrite_error(pkt: &mut Packet, e: &Embedded, outer_side: Side, addr: Ipv4Addr, port: u16) -> bool {
    let outer_ck_at = usize::from(pkt.hdr.l4_offset) + 2;
    let inner_side = if outer_side == Side::Src { Side::Dst } else { Side::Src };
    let addr_at = e.ip + if inner_side == Side::Src { 12 } else { 16 };
    let (port_at, l4_ck) = match e.proto {
        PROTO_ICMP => (e.l4 + 4, Some((e.l4 + 2, false))),
        PROTO_TCP => (e.l4 + if inner_side == Side::Src { 0 } else { 2 }, Some((e.l4 + 16, true))),
        _ => (e.l4 + if inner_side == Side::Src { 0 } else { 2 }, Some((e.l4 + 6, true))),
    };
    let l4_ck = l4_ck.filter(|(at, _)| at + 2 <= e.end);
    let d = &mut pkt.data;
    let (Some(mut outer_ck), Some(old_addr), Some(old_port), Some(ip_ck)) =
        (rd16(d, outer_ck_at), rd_v4(d, addr_at), rd16(d, port_at), rd16(d, e.ip + 10))
    else {
        return false;
    };
    let (old_o, new_o) = (old_addr.octets(), addr.octets());
    // Embedded transport checksum (covers the embedded addresses for TCP/UDP).
    if let Some((at, pseudo)) = l4_ck {
        if let Some(ck) = rd16(d, at) {
            if !(e.proto == PROTO_UDP && ck == 0) {
                let mut n = if pseudo { update_bytes(ck, &old_o, &new_o) } else { ck };
                n = update16(n, old_port, port);
                if e.proto == PROTO_UDP && n == 0 {
                    n = 0xffff;
                }
                put16(d, at, n, &mut outer_ck);
            }
        }
    }
    put16(d, e.ip + 10, update_bytes(ip_ck, &old_o, &new_o), &mut outer_ck);
    put16(d, addr_at, u16::from_be_bytes([new_o[0], new_o[1]]), &mut outer_ck);
    put16(d, addr_at + 2, u16::from_be_bytes([new_o[2], new_o[3]]), &mut outer_ck);
    put16(d, port_at, port, &mut outer_ck);
    d[outer_ck_at..outer_ck_at + 2].copy_from_slice(&outer_ck.to_be_bytes());
    set_outer_ip(pkt, outer_side, addr).is_some()
}

/// FNV-1a, stable across runs and platforms (the port choice must not change with them).
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "icmp",
    }
}

impl Nat {
    /// A NAT translating `internal` prefixes to `external_ip` with ports `port_min..=port_max`,
    /// default timeouts and the `drop` exhaustion policy.
    pub fn new(
        external_ip: IpAddr,
        internal: Vec<Cidr>,
        port_min: u16,
        port_max: u16,
    ) -> Result<Nat, String> {
        let IpAddr::V4(ext) = external_ip else {
            return Err(format!("external_ip {external_ip}: only IPv4 translation is supported"));
        };
        if port_min == 0 || port_min > port_max {
            return Err(format!("port range {port_min}-{port_max} is empty or starts at 0"));
        }
        if internal.iter().any(|c| c.contains(external_ip)) {
            return Err(format!("external_ip {external_ip} lies inside internal_nets"));
        }
        Ok(Nat {
            external_ip: ext,
            internal,
            port_min,
            port_max,
            timeouts: Timeouts::default(),
            on_exhaustion: OnExhaustion::Drop,
            mode: ProcessingMode::Synchronous,
        })
    }

    /// The same NAT in processing mode `mode` (default synchronous).
    pub fn with_mode(mut self, mode: ProcessingMode) -> Nat {
        self.mode = mode;
        self
    }

    /// The same NAT with other idle timeouts; each must be 1..=2 592 000 seconds.
    pub fn with_timeouts(mut self, t: Timeouts) -> Result<Nat, String> {
        for (name, v) in [
            ("tcp_established_timeout", t.tcp_established),
            ("tcp_transitory_timeout", t.tcp_transitory),
            ("udp_timeout", t.udp),
            ("icmp_timeout", t.icmp),
        ] {
            if !(1..=MAX_TIMEOUT_S).contains(&v) {
                return Err(format!("{name} must be 1..={MAX_TIMEOUT_S} seconds, found {v}"));
            }
        }
        self.timeouts = t;
        Ok(self)
    }

    /// The same NAT with another port-exhaustion policy.
    pub fn with_on_exhaustion(mut self, policy: OnExhaustion) -> Nat {
        self.on_exhaustion = policy;
        self
    }

    /// Chain-file constructor: `external_ip`, `internal_nets`, `port_min`, `port_max`,
    /// `tcp_established_timeout`, `tcp_transitory_timeout`, `udp_timeout`, `icmp_timeout`
    /// (seconds), `on_exhaustion` (`"drop"` or `"pass"`) and `mode` (`"sync"` or `"async"`,
    /// see [`ProcessingMode`]).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&[
            "external_ip",
            "internal_nets",
            "port_min",
            "port_max",
            "tcp_established_timeout",
            "tcp_transitory_timeout",
            "udp_timeout",
            "icmp_timeout",
            "on_exhaustion",
            "mode",
        ])?;
        let d = Nat::default();
        let ext = p.string("external_ip", "100.64.0.1")?;
        let external_ip: IpAddr =
            ext.parse().map_err(|_| format!("parameter `external_ip`: `{ext}` is not an IP address"))?;
        let nets = p.strings("internal_nets", &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])?;
        let internal = nets
            .iter()
            .map(|s| Cidr::parse(s).map_err(|e| format!("parameter `internal_nets`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let port = |k: &str, dflt: u16| -> Result<u16, String> {
            let v = p.u64(k, u64::from(dflt))?;
            u16::try_from(v).map_err(|_| format!("parameter `{k}` must be 1..=65535, found {v}"))
        };
        let dt = Timeouts::default();
        let timeouts = Timeouts {
            tcp_established: p.u64("tcp_established_timeout", dt.tcp_established)?,
            tcp_transitory: p.u64("tcp_transitory_timeout", dt.tcp_transitory)?,
            udp: p.u64("udp_timeout", dt.udp)?,
            icmp: p.u64("icmp_timeout", dt.icmp)?,
        };
        let on_exhaustion = match p.string("on_exhaustion", "drop")?.as_str() {
            "drop" => OnExhaustion::Drop,
            "pass" => OnExhaustion::Pass,
            other => {
                return Err(format!(
                    "parameter `on_exhaustion` must be \"drop\" or \"pass\", found \"{other}\""
                ))
            }
        };
        let nat =
            Nat::new(external_ip, internal, port("port_min", d.port_min)?, port("port_max", d.port_max)?)
                .and_then(|n| n.with_timeouts(timeouts))
                .map_err(|e| format!("parameter error: {e}"))?
                .with_on_exhaustion(on_exhaustion)
                .with_mode(p.processing_mode()?);
        Ok(Arc::new(nat))
    }

    fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal.iter().any(|c| c.contains(ip))
    }

    fn pool_size(&self) -> u32 {
        u32::from(self.port_max) - u32::from(self.port_min) + 1
    }

    fn count(&self, ctx: &mut dyn NfContext, what: &str) -> Result<(), NfError> {
        ctx.incr_nb(COUNTERS, what.as_bytes(), 1)
    }

    /// Idle timeout in seconds of a mapping of `proto` with `flags`.
    fn timeout_s(&self, proto: u8, flags: u8) -> u64 {
        match proto {
            PROTO_TCP => {
                let torn_down = flags & RST != 0 || flags & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN;
                if !torn_down && flags & IN_SEEN != 0 {
                    self.timeouts.tcp_established
                } else {
                    self.timeouts.tcp_transitory
                }
            }
            PROTO_UDP => self.timeouts.udp,
            _ => self.timeouts.icmp,
        }
    }

    /// First trace time at which `m` counts as expired: one timeout after the end of its
    /// last-seen second (so a mapping never lives less than its timeout).
    fn deadline_ns(&self, proto: u8, m: &Mapping) -> u64 {
        m.last_s.saturating_add(1).saturating_add(self.timeout_s(proto, m.flags)).saturating_mul(NS)
    }

    fn expired(&self, proto: u8, m: &Mapping, now: u64) -> bool {
        now >= self.deadline_ns(proto, m)
    }

    /// Length in seconds of the refresh epochs of a mapping class: a mapping refreshed
    /// within one epoch is covered by one collection timer.
    fn epoch_s(timeout: u64) -> u64 {
        (timeout / 4).max(1)
    }

    /// The mapping after a packet of `dir` at `now` with TCP flags `tcp`.
    fn touched(&self, proto: u8, m: Mapping, now: u64, dir: Dir, tcp: Option<TcpFlags>) -> Mapping {
        let mut n = Mapping { last_s: m.last_s.max(now / NS), ..m };
        if proto == PROTO_TCP {
            let f = tcp.unwrap_or_default();
            if dir == Dir::Out && f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK) && n.flags & !IN_SEEN != 0 {
                n.flags = 0; // a new connection reusing the 5-tuple of a torn-down one
            }
            if dir == Dir::In {
                n.flags |= IN_SEEN;
            }
            if f.has(TcpFlags::FIN) {
                n.flags |= if dir == Dir::Out { FIN_OUT } else { FIN_IN };
            }
            if f.has(TcpFlags::RST) {
                n.flags |= RST;
            }
        }
        n
    }

    /// Reads a mapping record (expired or not).
    fn load(&self, ctx: &mut dyn NfContext, key: &KeyBuf) -> Result<Option<Mapping>, NfError> {
        match ctx.get(CONN, key.as_bytes())? {
            None => Ok(None),
            Some(v) => {
                Mapping::decode(&v).map(Some).ok_or_else(|| NfError::State("corrupt conn mapping".into()))
            }
        }
    }

    /// Writes `new` (when it differs from `old`) and schedules a collection timer when the
    /// mapping is new, changed class, or was refreshed into a new epoch. The timer is due
    /// at the end of the epoch plus the timeout, never before the mapping's deadline.
    fn save(
        &self,
        ctx: &mut dyn NfContext,
        id: &ConnId,
        key: &KeyBuf,
        old: Option<Mapping>,
        new: Mapping,
    ) -> Result<(), NfError> {
        if old == Some(new) {
            return Ok(());
        }
        let t_new = self.timeout_s(id.proto, new.flags);
        let e_new = Self::epoch_s(t_new);
        let needs_timer = match old {
            None => {
                ctx.set(CONN, key.as_bytes(), new.encode())?;
                true
            }
            Some(o) => {
                ctx.state_nonblocking(CONN, key.as_bytes(), Op::Set(new.encode()))?;
                let t_old = self.timeout_s(id.proto, o.flags);
                t_old != t_new || o.last_s / Self::epoch_s(t_old) != new.last_s / e_new
            }
        };
        if needs_timer {
            let due = (new.last_s / e_new).saturating_add(1).saturating_mul(e_new).saturating_add(t_new);
            let mut payload = Vec::with_capacity(16);
            payload.push(TIMER_CONN);
            payload.extend_from_slice(key.as_bytes());
            ctx.schedule_timer(due.saturating_mul(NS), payload);
        }
        Ok(())
    }

    /// Ends an expired mapping: deletes its record and its `reverse` slot, counts it.
    fn retire(&self, ctx: &mut dyn NfContext, id: &ConnId, key: &KeyBuf, m: &Mapping) -> Result<(), NfError> {
        ctx.state(CONN, key.as_bytes(), Op::Delete)?;
        let release = Op::CompareAndSet { expected: Some(id.endpoint()), new: None };
        ctx.state(REVERSE, id.reverse_key(m.port).as_bytes(), release)?;
        self.count(ctx, &format!("expired_{}", proto_name(id.proto)))
    }

    /// The live mapping of `id`, retiring it first when it has expired.
    fn live(
        &self,
        ctx: &mut dyn NfContext,
        id: &ConnId,
        key: &KeyBuf,
        now: u64,
    ) -> Result<Option<Mapping>, NfError> {
        match self.load(ctx, key)? {
            Some(m) if self.expired(id.proto, &m, now) => {
                self.retire(ctx, id, key, &m)?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// The live mapping a `reverse` slot names, if any (retiring it when expired).
    fn live_by_slot(
        &self,
        ctx: &mut dyn NfContext,
        proto: u8,
        ext_port: u16,
        remote: Ipv4Addr,
        rport: u16,
        now: u64,
    ) -> Result<Option<(ConnId, KeyBuf, Mapping)>, NfError> {
        let slot = reverse_key(proto, ext_port, remote, rport);
        let (internal, iport) = match ctx.get(REVERSE, slot.as_bytes())? {
            None => return Ok(None),
            Some(Value::Int(v)) => {
                decode_endpoint(v).ok_or_else(|| NfError::State("corrupt reverse mapping".into()))?
            }
            Some(_) => return Err(NfError::State("corrupt reverse mapping".into())),
        };
        let id = ConnId { proto, internal, iport, remote, rport };
        let key = id.key();
        Ok(self.live(ctx, &id, &key, now)?.filter(|m| m.port == ext_port).map(|m| (id, key, m)))
    }

    /// Claims an external port for `id`, or None when every probed port is held by a live
    /// mapping to the same remote endpoint. The first port tried depends only on the
    /// connection, and a slot is free when empty or when the mapping it names has expired,
    /// so the choice does not depend on which instance runs it or on when timers fire.
    fn allocate(
        &self,
        ctx: &mut dyn NfContext,
        id: &ConnId,
        key: &KeyBuf,
        now: u64,
    ) -> Result<Option<u16>, NfError> {
        let size = self.pool_size();
        let start = (stable_hash(key.as_bytes()) % u64::from(size)) as u32;
        let me = id.endpoint();
        for i in 0..size.min(MAX_PROBES) {
            let port = self.port_min + ((start + i) % size) as u16;
            let slot = id.reverse_key(port);
            let claim = |ctx: &mut dyn NfContext, expected: Option<Value>| -> Result<bool, NfError> {
                let op = Op::CompareAndSet { expected, new: Some(me.clone()) };
                Ok(ctx.state(REVERSE, slot.as_bytes(), op)? == Some(Value::Int(1)))
            };
            if claim(ctx, None)? {
                return Ok(Some(port));
            }
            let holder = match ctx.get(REVERSE, slot.as_bytes())? {
                Some(Value::Int(v)) => v,
                None => {
                    if claim(ctx, None)? {
                        return Ok(Some(port));
                    }
                    continue;
                }
                Some(_) => continue, // undecodable: leave it alone
            };
            if Value::Int(holder) == me {
                return Ok(Some(port)); // already ours
            }
            let Some((internal, iport)) = decode_endpoint(holder) else { continue };
            let other = ConnId { internal, iport, ..*id };
            let other_key = other.key();
            match self.load(ctx, &other_key)? {
                Some(m) if m.port == port && !self.expired(id.proto, &m, now) => continue,
                Some(m) if m.port == port => {
                    self.retire(ctx, &other, &other_key, &m)?;
                    if claim(ctx, None)? {
                        return Ok(Some(port));
                    }
                }
                // A slot naming a mapping that no longer uses it (not produced by this NF,
                // but harmless to take over).
                _ => {
                    if claim(ctx, Some(Value::Int(holder)))? {
                        return Ok(Some(port));
                    }
                }
            }
        }
        Ok(None)
    }

    /// What `pkt` is to this NAT, from its headers alone.
    fn classify(&self, pkt: &Packet) -> Class {
        let Some(ip) = pkt.hdr.ip else { return Class::NonIp };
        let outbound = self.is_internal(ip.src) && !self.is_internal(ip.dst);
        if !outbound && ip.dst != IpAddr::V4(self.external_ip) {
            return Class::Transit;
        }
        let drop_reason = if outbound { "drop_untranslatable" } else { "drop_unsolicited" };
        let (IpAddr::V4(src), IpAddr::V4(dst), false) = (ip.src, ip.dst, ip.is_later_fragment()) else {
            return Class::Untranslatable(drop_reason);
        };
        let ident = || rd16(&pkt.data, usize::from(pkt.hdr.l4_offset) + 4);
        match (pkt.hdr.transport, outbound) {
            (Transport::Tcp { src_port, dst_port, .. } | Transport::Udp { src_port, dst_port }, true) => {
                Class::Outbound(ConnId {
                    proto: ip.proto,
                    internal: src,
                    iport: src_port,
                    remote: dst,
                    rport: dst_port,
                })
            }
            (Transport::Tcp { src_port, dst_port, .. } | Transport::Udp { src_port, dst_port }, false) => {
                Class::Inbound { proto: ip.proto, ext_port: dst_port, remote: src, rport: src_port }
            }
            (Transport::Icmp { icmp_type, .. }, _) if is_icmp_error(icmp_type) => {
                Class::IcmpError(if outbound { Dir::Out } else { Dir::In })
            }
            (Transport::Icmp { icmp_type: 8 | 13, .. }, true) => match ident() {
                Some(ident) => Class::Outbound(ConnId {
                    proto: PROTO_ICMP,
                    internal: src,
                    iport: ident,
                    remote: dst,
                    rport: 0,
                }),
                None => Class::Untranslatable(drop_reason),
            },
            (Transport::Icmp { icmp_type: 0 | 14, .. }, false) => match ident() {
                Some(ident) => Class::Inbound { proto: PROTO_ICMP, ext_port: ident, remote: src, rport: 0 },
                None => Class::Untranslatable(drop_reason),
            },
            _ => Class::Untranslatable(drop_reason),
        }
    }

    /// An outbound TCP/UDP/ICMP-query packet of connection `id`.
    fn outbound(&self, pkt: &mut Packet, ctx: &mut dyn NfContext, id: ConnId) -> Result<(), NfError> {
        if l4_fields(pkt, Side::Src).is_none() {
            return self.count(ctx, "drop_untranslatable");
        }
        let now = ctx.now_ns();
        let key = id.key();
        let tcp = pkt.hdr.tcp_flags();
        let port = match self.live(ctx, &id, &key, now)? {
            Some(m) => {
                self.save(ctx, &id, &key, Some(m), self.touched(id.proto, m, now, Dir::Out, tcp))?;
                m.port
            }
            None => {
                let Some(port) = self.allocate(ctx, &id, &key, now)? else {
                    return self.exhausted(ctx, &id);
                };
                let fresh = Mapping { port, flags: 0, last_s: now / NS };
                self.save(ctx, &id, &key, None, self.touched(id.proto, fresh, now, Dir::Out, tcp))?;
                self.count(ctx, &format!("new_{}", proto_name(id.proto)))?;
                port
            }
        };
        if rewrite(pkt, Side::Src, self.external_ip, port) {
            self.count(ctx, proto_name(id.proto))?;
            ctx.forward(0);
        }
        Ok(())
    }

    /// No free port for `id`: alert (at most once per internal/remote address pair per
    /// second of trace time) and apply the exhaustion policy.
    fn exhausted(&self, ctx: &mut dyn NfContext, id: &ConnId) -> Result<(), NfError> {
        let now = ctx.now_ns();
        let mut gate = KeyBuf::new();
        gate.ip(IpAddr::V4(id.internal)).ip(IpAddr::V4(id.remote));
        let quiet = match ctx.get(EXHAUSTED, gate.as_bytes())? {
            Some(Value::Int(t)) => now < u64::try_from(t).unwrap_or(0).saturating_add(ALERT_INTERVAL_NS),
            _ => false,
        };
        if !quiet {
            ctx.set(EXHAUSTED, gate.as_bytes(), Value::Int(i64::try_from(now).unwrap_or(i64::MAX)))?;
            let mut payload = vec![TIMER_EXHAUSTED];
            payload.extend_from_slice(gate.as_bytes());
            ctx.schedule_timer(now.saturating_add(ALERT_INTERVAL_NS), payload);
            let action = match self.on_exhaustion {
                OnExhaustion::Drop => "drop",
                OnExhaustion::Pass => "pass",
            };
            ctx.alert(
                Alert::new("nat_port_exhausted")
                    .with("src_ip", id.internal.to_string())
                    .with("dst_ip", id.remote.to_string())
                    .with("dst_port", id.rport)
                    .with("proto", proto_name(id.proto))
                    .with("pool_size", self.pool_size())
                    .with("probed", self.pool_size().min(MAX_PROBES))
                    .with("action", action),
            );
        }
        match self.on_exhaustion {
            OnExhaustion::Drop => self.count(ctx, "drop_port_exhausted"),
            OnExhaustion::Pass => {
                ctx.forward(0);
                self.count(ctx, "pass_port_exhausted")
            }
        }
    }

    /// An inbound TCP/UDP/ICMP-reply packet to `external_ip:ext_port` from `remote:rport`.
    fn inbound(
        &self,
        pkt: &mut Packet,
        ctx: &mut dyn NfContext,
        proto: u8,
        ext_port: u16,
        remote: Ipv4Addr,
        rport: u16,
    ) -> Result<(), NfError> {
        if l4_fields(pkt, Side::Dst).is_none() {
            return self.count(ctx, "drop_unsolicited");
        }
        let now = ctx.now_ns();
        let Some((id, key, m)) = self.live_by_slot(ctx, proto, ext_port, remote, rport, now)? else {
            return self.count(ctx, "drop_unsolicited");
        };
        self.save(ctx, &id, &key, Some(m), self.touched(proto, m, now, Dir::In, pkt.hdr.tcp_flags()))?;
        if rewrite(pkt, Side::Dst, id.internal, id.iport) {
            self.count(ctx, proto_name(proto))?;
            ctx.forward(0);
        }
        Ok(())
    }

    /// An ICMP error crossing the NAT: from outside about a packet the NAT translated on
    /// its way out, or from inside about a reply the NAT translated on its way in. It does
    /// not refresh the mapping.
    fn icmp_error(&self, pkt: &mut Packet, ctx: &mut dyn NfContext, dir: Dir) -> Result<(), NfError> {
        let now = ctx.now_ns();
        let Some(e) = embedded(pkt) else { return self.count(ctx, "drop_icmp_error") };
        // What the outer address of `side` and the embedded packet's other side become.
        let target = match dir {
            // Embedded: the packet as it left, external_ip:port → remote. Restore the
            // internal endpoint.
            Dir::In if e.src == self.external_ip => self
                .live_by_slot(ctx, e.proto, e.sport, e.dst, e.dport, now)?
                .map(|(id, _, _)| (Side::Dst, id.internal, id.iport)),
            Dir::In => None,
            // Embedded: the reply as the internal host got it, remote → internal:port. Show
            // the external endpoint instead.
            Dir::Out => {
                let (iport, rport) = if e.proto == PROTO_ICMP { (e.sport, 0) } else { (e.dport, e.sport) };
                let id = ConnId { proto: e.proto, internal: e.dst, iport, remote: e.src, rport };
                self.live(ctx, &id, &id.key(), now)?.map(|m| (Side::Src, self.external_ip, m.port))
            }
        };
        let Some((side, addr, port)) = target else { return self.count(ctx, "drop_icmp_error") };
        if rewrite_error(pkt, &e, side, addr, port) {
            self.count(ctx, "icmp_error")?;
            ctx.forward(0);
        }
        Ok(())
    }
}

impl NetworkFunction for Nat {
    fn rewrites_headers(&self) -> bool {
        true
    }

    /// Outbound packets by destination, replies by source: the remote host either way. An
    /// ICMP error goes by the remote host of the packet it embeds (the error may come from
    /// a router on the path). Transit traffic uses the default split.
    fn partition_hash(&self, pkt: &Packet) -> Option<u64> {
        let ip = pkt.hdr.ip?;
        let outbound = self.is_internal(ip.src) && !self.is_internal(ip.dst);
        if !outbound && ip.dst != IpAddr::V4(self.external_ip) {
            return None;
        }
        let remote = match embedded(pkt) {
            Some(e) if outbound => IpAddr::V4(e.src),
            Some(e) => IpAddr::V4(e.dst),
            None if outbound => ip.dst,
            None => ip.src,
        };
        let mut k = KeyBuf::new();
        k.ip(remote);
        Some(stable_hash(k.as_bytes()))
    }

    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out")],
            state: vec![
                StateObjectSpec::per_flow("conn", Flowspace(vec![Field::Connection])),
                // Read for every inbound packet, written once per connection.
                StateObjectSpec { read_heavy: true, ..StateObjectSpec::shared("reverse") },
                StateObjectSpec::shared("counters"),
                StateObjectSpec::shared("exhausted"),
            ],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        match self.classify(pkt) {
            Class::NonIp => {
                self.count(ctx, "non_ip")?;
                ctx.forward(0);
                Ok(())
            }
            Class::Transit => {
                self.count(ctx, "transit")?;
                ctx.forward(0);
                Ok(())
            }
            Class::Untranslatable(reason) => self.count(ctx, reason),
            Class::Outbound(id) => self.outbound(pkt, ctx, id),
            Class::Inbound { proto, ext_port, remote, rport } => {
                self.inbound(pkt, ctx, proto, ext_port, remote, rport)
            }
            Class::IcmpError(dir) => self.icmp_error(pkt, ctx, dir),
        }
    }

    fn mode(&self) -> ProcessingMode {
        self.mode
    }

    /// Outbound packets read their connection's mapping; inbound ones the `reverse` slot of
    /// their external port and, once it has arrived, the mapping it names.
    fn prefetch(&self, _port: usize, pkt: &Packet, reads: &mut ReadSet<'_>) {
        match self.classify(pkt) {
            Class::Outbound(id) => reads.read(CONN, id.key().as_bytes()),
            Class::Inbound { proto, ext_port, remote, rport } => {
                let slot = reverse_key(proto, ext_port, remote, rport);
                reads.read(REVERSE, slot.as_bytes());
                if let Some(Some(Value::Int(v))) = reads.fetched(REVERSE, slot.as_bytes()) {
                    if let Some((internal, iport)) = decode_endpoint(v) {
                        let id = ConnId { proto, internal, iport, remote, rport };
                        reads.read(CONN, id.key().as_bytes());
                    }
                }
            }
            _ => {}
        }
    }

    /// Garbage collection only: retires the mapping (or forgets the alert rate-limit entry)
    /// the timer was set for if it is past its deadline at the timer's due time; otherwise
    /// does nothing. Never emits anything, so a late timer changes no output.
    fn on_timer(&self, payload: &[u8], ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let due = ctx.now_ns();
        match payload.split_first() {
            Some((&TIMER_CONN, key_bytes)) => {
                let Some(id) = ConnId::from_key(key_bytes) else { return Ok(()) };
                let key = id.key();
                match self.load(ctx, &key)? {
                    Some(m) if self.expired(id.proto, &m, due) => self.retire(ctx, &id, &key, &m),
                    _ => Ok(()),
                }
            }
            Some((&TIMER_EXHAUSTED, gate)) => match ctx.get(EXHAUSTED, gate)? {
                Some(Value::Int(t))
                    if u64::try_from(t).unwrap_or(0).saturating_add(ALERT_INTERVAL_NS) <= due =>
                {
                    ctx.state(EXHAUSTED, gate, Op::Delete).map(|_| ())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_record_roundtrips() {
        for m in [
            Mapping { port: 0, flags: 0, last_s: 0 },
            Mapping { port: 65535, flags: IN_SEEN | FIN_OUT | FIN_IN | RST, last_s: 1_700_000_123 },
            Mapping { port: 10_000, flags: RST, last_s: 18_446_744_073 },
        ] {
            assert_eq!(Mapping::decode(&m.encode()), Some(m));
        }
        assert_eq!(Mapping::decode(&Value::Int(-1)), None);
        assert_eq!(Mapping::decode(&Value::Bytes(vec![1])), None);
    }

    #[test]
    fn conn_key_roundtrips_and_endpoint_decodes() {
        let id = ConnId {
            proto: PROTO_UDP,
            internal: Ipv4Addr::new(10, 1, 2, 3),
            iport: 5353,
            remote: Ipv4Addr::new(198, 51, 100, 9),
            rport: 53,
        };
        assert_eq!(ConnId::from_key(id.key().as_bytes()), Some(id));
        assert_eq!(ConnId::from_key(&id.key().as_bytes()[..14]), None);
        let Value::Int(v) = id.endpoint() else { panic!("int endpoint") };
        assert_eq!(decode_endpoint(v), Some((id.internal, id.iport)));
        assert_eq!(decode_endpoint(-5), None);
    }

    #[test]
    fn a_mapping_never_expires_before_its_timeout() {
        let nat = Nat::default();
        let m = Mapping { port: 1, flags: 0, last_s: 100 };
        // Last seen anywhere in second 100: alive until at least 100.999… + 60 s.
        assert!(!nat.expired(PROTO_ICMP, &m, 160 * NS + 999_999_999));
        assert!(nat.expired(PROTO_ICMP, &m, 161 * NS));
        // TCP: transitory until something came back, established after, transitory after FIN both ways.
        assert_eq!(nat.timeout_s(PROTO_TCP, 0), 240);
        assert_eq!(nat.timeout_s(PROTO_TCP, IN_SEEN), 7440);
        assert_eq!(nat.timeout_s(PROTO_TCP, IN_SEEN | FIN_OUT), 7440);
        assert_eq!(nat.timeout_s(PROTO_TCP, IN_SEEN | FIN_OUT | FIN_IN), 240);
        assert_eq!(nat.timeout_s(PROTO_TCP, IN_SEEN | RST), 240);
    }
}
