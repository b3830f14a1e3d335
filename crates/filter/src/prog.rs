//! The compiled form of a filter: a small tree of boolean nodes over primitives, and its
//! evaluation on one packet.
//!
//! Primitives read the packet the way libpcap's BPF code does: the link layer (and thus
//! where the network header starts and what protocol it carries) comes from the parsed
//! [`Headers`](streamnf_packet::Headers) (for Ethernet frames it is read from the frame
//! at the fixed offsets tcpdump uses, shifted 4 bytes per `vlan` keyword seen earlier in
//! the expression); network and transport fields are read from the frame bytes at fixed
//! offsets from there. A failed guard (wrong protocol, later fragment) makes a primitive
//! false; a read past the captured bytes aborts the whole evaluation and the packet does
//! not match, as in BPF. No evaluation allocates or panics.

use streamnf_packet::{LinkType, Packet};

/// Direction qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Src,
    Dst,
    /// `src or dst` (the default).
    Or,
    /// `src and dst`.
    And,
}

/// Relational operators (unsigned 32-bit comparisons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RelOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Binary arithmetic operators (wrapping unsigned 32-bit, like BPF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// What a `proto[...]` accessor is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// `ether[...]`: the start of the frame.
    Link,
    /// `ip[...]`, `ip6[...]`, `arp[...]`, `rarp[...]`: the network header, when the
    /// network protocol is this EtherType.
    Net(u16),
    /// `tcp[...]`, `udp[...]`, `icmp[...]` ...: the transport header of an IPv4 packet
    /// with this protocol number that is not a later fragment.
    Trans4(u8),
    /// `icmp6[...]`: 40 bytes after an IPv6 header whose next header is 58.
    Icmp6,
}

/// An arithmetic expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    Const(u32),
    /// The on-wire packet length (`len`).
    Len,
    Load {
        base: Base,
        idx: Box<Arith>,
        size: u8,
    },
    Bin(BinOp, Box<Arith>, Box<Arith>),
    Neg(Box<Arith>),
}

/// One primitive test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Prim {
    /// Network protocol (EtherType) equals.
    EtherType(u16),
    /// IPv4 protocol field equals.
    Ip4Proto(u8),
    /// IPv6 next header equals, directly or behind one fragment header.
    Ip6Proto(u8),
    /// `Ip4Proto(p) or Ip6Proto(p)` in one step (`tcp`, `udp`, `proto N`).
    IpProto(u8),
    /// IPv4 address under mask, in IPv4 and/or ARP/RARP packets.
    Host4 {
        dir: Dir,
        addr: u32,
        mask: u32,
        ip: bool,
        arp: bool,
        rarp: bool,
    },
    /// IPv6 address under mask.
    Host6 {
        dir: Dir,
        addr: u128,
        mask: u128,
    },
    /// Ethernet address.
    EtherAddr {
        dir: Dir,
        mac: [u8; 6],
    },
    /// TCP/UDP/SCTP port in `lo..=hi` over IPv4 (first fragments) and IPv6.
    Port {
        dir: Dir,
        lo: u16,
        hi: u16,
        tcp: bool,
        udp: bool,
        sctp: bool,
    },
    /// An 802.1Q/802.1ad tag at this depth, optionally with this VLAN ID.
    Vlan(Option<u16>),
    EtherBroadcast,
    EtherMulticast,
    Ip4Broadcast,
    Ip4Multicast,
    Ip6Multicast,
    /// `arith relop arith`.
    Rel {
        op: RelOp,
        lhs: Arith,
        rhs: Arith,
    },
}

/// A boolean tree of primitives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// The empty expression: matches everything.
    True,
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    /// A primitive and the number of `vlan` keywords before it in the expression.
    Prim(u8, Prim),
}

const ETH_IP: u16 = 0x0800;
const ETH_IP6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_RARP: u16 = 0x8035;

/// Why evaluating a primitive stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// A guard failed (wrong protocol, later fragment ...): the primitive is false.
    False,
    /// A read past the captured bytes (or a division by zero): like BPF, the whole
    /// filter rejects the packet.
    Abort,
}

type E<T> = Result<T, Stop>;

/// The whole filter rejects the packet (see [`Stop::Abort`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Aborted;

/// Per-packet evaluation context.
pub(crate) struct Ctx<'a> {
    data: &'a [u8],
    wirelen: u32,
    ethernet: bool,
    hdr_type: u16,
    hdr_l3: usize,
}

impl<'a> Ctx<'a> {
    #[inline]
    pub(crate) fn new(pkt: &'a Packet) -> Ctx<'a> {
        Ctx {
            data: &pkt.data,
            wirelen: pkt.orig_len,
            ethernet: pkt.hdr.link == LinkType::Ethernet,
            hdr_type: pkt.hdr.ether_type,
            hdr_l3: usize::from(pkt.hdr.l3_offset),
        }
    }

    #[inline]
    fn u8(&self, off: usize) -> E<u8> {
        self.data.get(off).copied().ok_or(Stop::Abort)
    }

    #[inline]
    fn bytes<const N: usize>(&self, off: usize) -> E<[u8; N]> {
        let end = off.checked_add(N).ok_or(Stop::Abort)?;
        match self.data.get(off..end) {
            Some(b) => b.try_into().map_err(|_| Stop::Abort),
            None => Err(Stop::Abort),
        }
    }

    #[inline]
    fn u16(&self, off: usize) -> E<u16> {
        self.bytes::<2>(off).map(u16::from_be_bytes)
    }

    #[inline]
    fn u32(&self, off: usize) -> E<u32> {
        self.bytes::<4>(off).map(u32::from_be_bytes)
    }

    #[inline]
    fn u128(&self, off: usize) -> E<u128> {
        self.bytes::<16>(off).map(u128::from_be_bytes)
    }

    /// Network protocol (as an EtherType) and network-header offset, `depth` tags in.
    /// Unknown network protocols on other link types read as EtherType 0.
    #[inline]
    fn net(&self, depth: u8) -> E<(u16, usize)> {
        if self.ethernet {
            let off = 12 + 4 * usize::from(depth);
            Ok((self.u16(off)?, off + 2))
        } else if depth == 0 {
            Ok((self.hdr_type, self.hdr_l3))
        } else {
            Ok((0, 0))
        }
    }

    /// Network-header offset when the network protocol is `ty`.
    #[inline]
    fn l3_if(&self, depth: u8, ty: u16) -> E<usize> {
        match self.net(depth)? {
            (t, l3) if t == ty => Ok(l3),
            _ => Err(Stop::False),
        }
    }

    /// IPv4 transport-header offset for protocol `proto`, first fragments only.
    #[inline]
    fn l4_v4(&self, depth: u8, proto: u8) -> E<usize> {
        let l3 = self.l3_if(depth, ETH_IP)?;
        if self.u8(l3 + 9)? != proto || self.u16(l3 + 6)? & 0x1fff != 0 {
            return Err(Stop::False);
        }
        Ok(l3 + usize::from(self.u8(l3)? & 0x0f) * 4)
    }
}

impl Arith {
    fn eval(&self, c: &Ctx<'_>, depth: u8) -> E<u32> {
        Ok(match self {
            Arith::Const(v) => *v,
            Arith::Len => c.wirelen,
            Arith::Load { base, idx, size } => {
                let i = usize::try_from(idx.eval(c, depth)?).map_err(|_| Stop::Abort)?;
                let start = match *base {
                    Base::Link => 0,
                    Base::Net(t) => c.l3_if(depth, t)?,
                    Base::Trans4(p) => c.l4_v4(depth, p)?,
                    Base::Icmp6 => {
                        let l3 = c.l3_if(depth, ETH_IP6)?;
                        if c.u8(l3 + 6)? != 58 {
                            return Err(Stop::False);
                        }
                        l3 + 40
                    }
                };
                let off = start.checked_add(i).ok_or(Stop::Abort)?;
                match size {
                    1 => u32::from(c.u8(off)?),
                    2 => u32::from(c.u16(off)?),
                    _ => c.u32(off)?,
                }
            }
            Arith::Neg(a) => a.eval(c, depth)?.wrapping_neg(),
            Arith::Bin(op, a, b) => {
                let x = a.eval(c, depth)?;
                let y = b.eval(c, depth)?;
                match op {
                    BinOp::Add => x.wrapping_add(y),
                    BinOp::Sub => x.wrapping_sub(y),
                    BinOp::Mul => x.wrapping_mul(y),
                    BinOp::Div => x.checked_div(y).ok_or(Stop::Abort)?,
                    BinOp::Mod => x.checked_rem(y).ok_or(Stop::Abort)?,
                    BinOp::And => x & y,
                    BinOp::Or => x | y,
                    BinOp::Xor => x ^ y,
                    BinOp::Shl => x.checked_shl(y).unwrap_or(0),
                    BinOp::Shr => x.checked_shr(y).unwrap_or(0),
                }
            }
        })
    }
}

impl Dir {
    #[inline]
    fn combine(self, src: impl FnOnce() -> E<bool>, dst: impl FnOnce() -> E<bool>) -> E<bool> {
        Ok(match self {
            Dir::Src => src()?,
            Dir::Dst => dst()?,
            Dir::Or => src()? || dst()?,
            Dir::And => src()? && dst()?,
        })
    }
}

impl Prim {
    #[inline]
    fn eval(&self, c: &Ctx<'_>, d: u8) -> Result<bool, Aborted> {
        match self.eval_e(c, d) {
            Ok(b) => Ok(b),
            Err(Stop::False) => Ok(false),
            Err(Stop::Abort) => Err(Aborted),
        }
    }

    fn eval_e(&self, c: &Ctx<'_>, d: u8) -> E<bool> {
        Ok(match *self {
            Prim::EtherType(t) => c.net(d)?.0 == t,
            Prim::Ip4Proto(p) => c.u8(c.l3_if(d, ETH_IP)? + 9)? == p,
            Prim::Ip6Proto(p) => {
                let l3 = c.l3_if(d, ETH_IP6)?;
                let nxt = c.u8(l3 + 6)?;
                nxt == p || (nxt == 44 && c.u8(l3 + 40)? == p)
            }
            Prim::IpProto(p) => match c.net(d)? {
                (ETH_IP, l3) => c.u8(l3 + 9)? == p,
                (ETH_IP6, l3) => {
                    let nxt = c.u8(l3 + 6)?;
                    nxt == p || (nxt == 44 && c.u8(l3 + 40)? == p)
                }
                _ => false,
            },
            Prim::Host4 { dir, addr, mask, ip, arp, rarp } => {
                let (t, l3) = c.net(d)?;
                let (s, t_off) = if ip && t == ETH_IP {
                    (l3 + 12, l3 + 16)
                } else if (arp && t == ETH_ARP) || (rarp && t == ETH_RARP) {
                    (l3 + 14, l3 + 24)
                } else {
                    return Ok(false);
                };
                let m = |off: usize| c.u32(off).map(|a| a & mask == addr);
                dir.combine(|| m(s), || m(t_off))?
            }
            Prim::Host6 { dir, addr, mask } => {
                let l3 = c.l3_if(d, ETH_IP6)?;
                let m = |off: usize| c.u128(off).map(|a| a & mask == addr);
                dir.combine(|| m(l3 + 8), || m(l3 + 24))?
            }
            Prim::EtherAddr { dir, mac } => {
                if !c.ethernet {
                    return Ok(false);
                }
                let m = |off: usize| c.bytes::<6>(off).map(|a| a == mac);
                dir.combine(|| m(6), || m(0))?
            }
            Prim::Port { dir, lo, hi, tcp, udp, sctp } => {
                let (t, l3) = c.net(d)?;
                let ok = |p: u8| (tcp && p == 6) || (udp && p == 17) || (sctp && p == 132);
                let l4 = if t == ETH_IP {
                    if !ok(c.u8(l3 + 9)?) || c.u16(l3 + 6)? & 0x1fff != 0 {
                        return Ok(false);
                    }
                    l3 + usize::from(c.u8(l3)? & 0x0f) * 4
                } else if t == ETH_IP6 {
                    if !ok(c.u8(l3 + 6)?) {
                        return Ok(false);
                    }
                    l3 + 40
                } else {
                    return Ok(false);
                };
                let m = |off: usize| c.u16(off).map(|p| lo <= p && p <= hi);
                dir.combine(|| m(l4), || m(l4 + 2))?
            }
            Prim::Vlan(id) => {
                if !c.ethernet {
                    return Ok(false);
                }
                let (t, off) = c.net(d)?;
                if !matches!(t, 0x8100 | 0x88a8 | 0x9100) {
                    return Ok(false);
                }
                match id {
                    None => true,
                    Some(id) => c.u16(off)? & 0x0fff == id,
                }
            }
            Prim::EtherBroadcast => c.ethernet && c.bytes::<6>(0)? == [0xff; 6],
            Prim::EtherMulticast => c.ethernet && c.u8(0)? & 1 == 1,
            Prim::Ip4Broadcast => {
                let a = c.u32(c.l3_if(d, ETH_IP)? + 16)?;
                a == 0 || a == u32::MAX
            }
            Prim::Ip4Multicast => c.u8(c.l3_if(d, ETH_IP)? + 16)? >= 224,
            Prim::Ip6Multicast => c.u8(c.l3_if(d, ETH_IP6)? + 24)? == 0xff,
            Prim::Rel { op, ref lhs, ref rhs } => {
                let a = lhs.eval(c, d)?;
                let b = rhs.eval(c, d)?;
                match op {
                    RelOp::Eq => a == b,
                    RelOp::Ne => a != b,
                    RelOp::Lt => a < b,
                    RelOp::Le => a <= b,
                    RelOp::Gt => a > b,
                    RelOp::Ge => a >= b,
                }
            }
        })
    }
}

impl Node {
    /// Evaluates the tree on one packet, left to right with short-circuiting (the order
    /// BPF code generated by libpcap tests things in). `Err` means a read went past the
    /// captured bytes: BPF rejects the packet whatever the rest of the expression says.
    pub(crate) fn eval(&self, c: &Ctx<'_>) -> Result<bool, Aborted> {
        Ok(match self {
            Node::True => true,
            Node::And(a, b) => a.eval(c)? && b.eval(c)?,
            Node::Or(a, b) => a.eval(c)? || b.eval(c)?,
            Node::Not(a) => !a.eval(c)?,
            Node::Prim(d, p) => p.eval(c, *d)?,
        })
    }
}
