//! `nat`: source NAT (§6).
//!
//! Outbound TCP/UDP packets (source inside one of `internal_nets`, destination outside)
//! get the source address `external_ip` and a port from a pool shared by every instance;
//! the mapping is remembered per connection, and replies to `external_ip:port` are
//! translated back to the original endpoint. IPv4 header and TCP/UDP checksums are fixed
//! incrementally. Traffic that is neither (transit, internal-to-internal) passes
//! unchanged; unsolicited inbound packets and untranslatable outbound ones (ICMP, SCTP,
//! IPv6, later fragments) are dropped and counted.
//!
//! Limits (a later issue): mappings are never removed (no idle or teardown timeouts yet),
//! and ICMP is not translated.
//!
//! Port choice is deterministic, so runs with any number of instances translate exactly
//! as one instance does: a connection's external port is `port_min + hash(connection) mod
//! pool`, probing the next ports while that (port, remote endpoint) pair is taken. The
//! claim is one compare-and-set on `reverse`, so two tasks can never take one pair. The
//! NF partitions its input by the remote address ([`NetworkFunction::partition_hash`]):
//! every connection to a remote host, and the replies from it, reach one task in the order
//! the root sent them, so collisions resolve in logical-clock order, as in the
//! single-instance run. (Behind a vertex with several instances, packets reach the NAT
//! in per-upstream-task order; two new connections to one remote endpoint that hash to one
//! port may then swap ports. docs/nfs/nat.md states this equivalence.)
//!
//! State (all in the store):
//! - `conn` (per-flow, `[connection]`): outbound connection → external port.
//! - `reverse` (shared): (proto, external port, remote address, remote port) → internal
//!   endpoint; claimed once per connection by compare-and-set, read by replies.
//! - `counters` (shared): per-protocol and per-outcome counters.

use crate::net::{ip_from_key, ip_key, Cidr, KeyBuf};
use std::net::IpAddr;
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::checksum::{update16, update_bytes};
use streamnf_packet::{Field, Flowspace, Packet, Transport};
use streamnf_store::{Op, Value};

const CONN: usize = 0;
const REVERSE: usize = 1;
const COUNTERS: usize = 2;

/// Ports tried for one new connection before the pool counts as exhausted for its remote
/// endpoint.
const MAX_PROBES: u32 = 256;

/// Source NAT.
#[derive(Debug, Clone)]
pub struct Nat {
    external_ip: IpAddr,
    internal: Vec<Cidr>,
    port_min: u16,
    port_max: u16,
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            external_ip: IpAddr::from([100, 64, 0, 1]),
            internal: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
                .iter()
                .filter_map(|s| Cidr::parse(s).ok())
                .collect(),
            port_min: 10_000,
            port_max: 65_535,
        }
    }
}

impl Nat {
    /// A NAT translating `internal` prefixes to `external_ip` with ports `port_min..=port_max`.
    pub fn new(
        external_ip: IpAddr,
        internal: Vec<Cidr>,
        port_min: u16,
        port_max: u16,
    ) -> Result<Nat, String> {
        if !external_ip.is_ipv4() {
            return Err(format!("external_ip {external_ip}: only IPv4 translation is supported"));
        }
        if port_min == 0 || port_min > port_max {
            return Err(format!("port range {port_min}-{port_max} is empty or starts at 0"));
        }
        if internal.iter().any(|c| c.contains(external_ip)) {
            return Err(format!("external_ip {external_ip} lies inside internal_nets"));
        }
        Ok(Nat { external_ip, internal, port_min, port_max })
    }

    /// Chain-file constructor: `external_ip`, `internal_nets`, `port_min`, `port_max`.
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["external_ip", "internal_nets", "port_min", "port_max"])?;
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
        let nat =
            Nat::new(external_ip, internal, port("port_min", d.port_min)?, port("port_max", d.port_max)?)
                .map_err(|e| format!("parameter error: {e}"))?;
        Ok(Arc::new(nat))
    }

    fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal.iter().any(|c| c.contains(ip))
    }

    fn count(&self, ctx: &mut dyn NfContext, what: &str) -> Result<(), NfError> {
        ctx.incr_nb(COUNTERS, what.as_bytes(), 1)
    }

    /// Claims an external port for a new connection to `remote:remote_port`, or None when
    /// every probed port is taken for that endpoint. The first port tried depends only on
    /// the connection, so the choice does not depend on which instance runs it.
    fn allocate(
        &self,
        ctx: &mut dyn NfContext,
        conn: &KeyBuf,
        proto: u8,
        remote: IpAddr,
        remote_port: u16,
        internal: &[u8],
    ) -> Result<Option<u16>, NfError> {
        let size = u32::from(self.port_max) - u32::from(self.port_min) + 1;
        let start = (stable_hash(conn.as_bytes()) % u64::from(size)) as u32;
        for i in 0..size.min(MAX_PROBES) {
            let port = self.port_min + ((start + i) % size) as u16;
            let claim = Op::CompareAndSet { expected: None, new: Some(Value::Bytes(internal.to_vec())) };
            let key = reverse_key(proto, port, remote, remote_port);
            if ctx.state(REVERSE, key.as_bytes(), claim)? == Some(Value::Int(1)) {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }

    fn outbound(&self, pkt: &mut Packet, ctx: &mut dyn NfContext, proto_name: &str) -> Result<(), NfError> {
        let (Some(ip), Some((sport, dport))) = (pkt.hdr.ip, pkt.hdr.transport.ports()) else {
            return Ok(());
        };
        let conn = conn_key(ip.proto, ip.src, sport, ip.dst, dport);
        let ext_port = match ctx.get(CONN, conn.as_bytes())? {
            Some(Value::Int(p)) => {
                u16::try_from(p).map_err(|_| NfError::State(format!("bad stored port {p}")))?
            }
            _ => {
                let mut internal = ip_key(ip.src);
                internal.extend_from_slice(&sport.to_be_bytes());
                let Some(port) = self.allocate(ctx, &conn, ip.proto, ip.dst, dport, &internal)? else {
                    self.count(ctx, "port_exhausted")?;
                    ctx.alert(
                        Alert::new("nat_port_exhausted")
                            .with("src_ip", ip.src.to_string())
                            .with("src_port", sport)
                            .with("dst_ip", ip.dst.to_string())
                            .with("dst_port", dport),
                    );
                    return Ok(());
                };
                ctx.set(CONN, conn.as_bytes(), Value::Int(i64::from(port)))?;
                self.count(ctx, "connections")?;
                port
            }
        };
        rewrite(pkt, Side::Src, self.external_ip, ext_port);
        self.count(ctx, proto_name)?;
        ctx.forward(0);
        Ok(())
    }

    fn inbound(&self, pkt: &mut Packet, ctx: &mut dyn NfContext, proto_name: &str) -> Result<(), NfError> {
        let (Some(ip), Some((sport, dport))) = (pkt.hdr.ip, pkt.hdr.transport.ports()) else {
            return Ok(());
        };
        match ctx.get(REVERSE, reverse_key(ip.proto, dport, ip.src, sport).as_bytes())? {
            Some(Value::Bytes(b)) => {
                let addr_len = b.len().saturating_sub(2);
                let (Some(addr), Some(port)) = (
                    ip_from_key(&b[..addr_len]),
                    b.get(addr_len..).and_then(|p| <[u8; 2]>::try_from(p).ok()).map(u16::from_be_bytes),
                ) else {
                    return Err(NfError::State("corrupt reverse mapping".into()));
                };
                rewrite(pkt, Side::Dst, addr, port);
                self.count(ctx, proto_name)?;
                ctx.forward(0);
            }
            _ => self.count(ctx, "unsolicited_inbound")?,
        }
        Ok(())
    }
}

fn conn_key(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> KeyBuf {
    let mut k = KeyBuf::new();
    k.push(&[proto]).ip(src).u16(sport).ip(dst).u16(dport);
    k
}

fn reverse_key(proto: u8, ext_port: u16, remote: IpAddr, remote_port: u16) -> KeyBuf {
    let mut k = KeyBuf::new();
    k.push(&[proto]).u16(ext_port).ip(remote).u16(remote_port);
    k
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// Rewrites the IPv4 source (or destination) address and port, fixing the IPv4 header
/// checksum and the TCP/UDP checksum incrementally, and patches the parsed headers.
fn rewrite(pkt: &mut Packet, side: Side, addr: IpAddr, port: u16) {
    let (IpAddr::V4(new_ip), Some(ip)) = (addr, pkt.hdr.ip) else {
        return;
    };
    let l3 = usize::from(pkt.hdr.l3_offset);
    let l4 = usize::from(pkt.hdr.l4_offset);
    let (ip_at, port_at) = match side {
        Side::Src => (l3 + 12, l4),
        Side::Dst => (l3 + 16, l4 + 2),
    };
    let ck_at = match pkt.hdr.transport {
        Transport::Tcp { .. } => Some(l4 + 16),
        Transport::Udp { .. } => Some(l4 + 6),
        _ => None,
    };
    let d = &mut pkt.data;
    let (Some(old_ip), Some(old_port)) = (
        d.get(ip_at..ip_at + 4).map(|b| [b[0], b[1], b[2], b[3]]),
        d.get(port_at..port_at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])),
    ) else {
        return;
    };
    let new = new_ip.octets();
    // IPv4 header checksum.
    if let Some(b) = d.get(l3 + 10..l3 + 12) {
        let ck = update_bytes(u16::from_be_bytes([b[0], b[1]]), &old_ip, &new);
        d[l3 + 10..l3 + 12].copy_from_slice(&ck.to_be_bytes());
    }
    // Transport checksum covers the pseudo-header address and the port.
    if let Some(at) = ck_at {
        if let Some(b) = d.get(at..at + 2) {
            let old_ck = u16::from_be_bytes([b[0], b[1]]);
            let is_udp = matches!(pkt.hdr.transport, Transport::Udp { .. });
            if !(is_udp && old_ck == 0) {
                let mut ck = update_bytes(old_ck, &old_ip, &new);
                ck = update16(ck, old_port, port);
                if is_udp && ck == 0 {
                    ck = 0xffff;
                }
                d[at..at + 2].copy_from_slice(&ck.to_be_bytes());
            }
        }
    }
    d[ip_at..ip_at + 4].copy_from_slice(&new);
    d[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    // Patch the parsed fields to match the bytes (cheaper than parsing again).
    let mut ip = ip;
    match side {
        Side::Src => ip.src = addr,
        Side::Dst => ip.dst = addr,
    }
    pkt.hdr.ip = Some(ip);
    match &mut pkt.hdr.transport {
        Transport::Tcp { src_port, dst_port, .. } | Transport::Udp { src_port, dst_port } => match side {
            Side::Src => *src_port = port,
            Side::Dst => *dst_port = port,
        },
        _ => {}
    }
}

/// FNV-1a, stable across runs and platforms (the port choice must not change with them).
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl NetworkFunction for Nat {
    fn rewrites_headers(&self) -> bool {
        true
    }

    /// Outbound packets by destination, replies by source: the remote host either way.
    /// Transit traffic uses the default split.
    fn partition_hash(&self, pkt: &Packet) -> Option<u64> {
        let ip = pkt.hdr.ip?;
        let remote = if self.is_internal(ip.src) && !self.is_internal(ip.dst) {
            ip.dst
        } else if ip.dst == self.external_ip {
            ip.src
        } else {
            return None;
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
                StateObjectSpec::shared("reverse"),
                StateObjectSpec::shared("counters"),
            ],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let Some(ip) = pkt.hdr.ip else {
            self.count(ctx, "non_ip")?;
            ctx.forward(0);
            return Ok(());
        };
        let proto_name = match pkt.hdr.transport {
            Transport::Tcp { .. } => "tcp",
            Transport::Udp { .. } => "udp",
            _ => "other",
        };
        let translatable = proto_name != "other" && ip.version == 4;
        if self.is_internal(ip.src) && !self.is_internal(ip.dst) {
            if translatable {
                return self.outbound(pkt, ctx, proto_name);
            }
            return self.count(ctx, "untranslatable_outbound");
        }
        if ip.dst == self.external_ip {
            if translatable {
                return self.inbound(pkt, ctx, proto_name);
            }
            return self.count(ctx, "unsolicited_inbound");
        }
        self.count(ctx, "transit")?;
        ctx.forward(0);
        Ok(())
    }
}
