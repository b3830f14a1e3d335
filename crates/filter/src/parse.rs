//! Recursive-descent parser from tokens to a [`Node`] tree, following libpcap's grammar:
//! `and`/`or` have equal precedence and associate to the left, `not` binds tightest, and
//! a bare value after `and`/`or` reuses the qualifiers of the previous primitive
//! (`port 80 or 443`, `host a and not b`, `host a or (b or c)`).

use crate::error::FilterError;
use crate::lex::{Kw, Pq, Tok, Token};
use crate::names::{self, PortProto};
use crate::prog::{Arith, Base, BinOp, Dir, Node, Prim, RelOp};
use std::net::Ipv6Addr;

/// Address-kind qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Addr {
    Default,
    Host,
    Net,
    Port,
    Portrange,
    Proto,
}

impl Addr {
    fn name(self) -> &'static str {
        match self {
            Addr::Default | Addr::Host => "host",
            Addr::Net => "net",
            Addr::Port => "port",
            Addr::Portrange => "portrange",
            Addr::Proto => "proto",
        }
    }
}

/// The qualifiers in force for a value: protocol, direction, address kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Qual {
    proto: Option<Pq>,
    dir: Option<Dir>,
    addr: Addr,
}

/// Qualifiers a following bare value inherits; `None` after a primitive that takes no
/// value (`tcp`, `len > 5`), where a bare value is an error as in libpcap.
type Q = Option<Qual>;

type R<T> = Result<T, FilterError>;

const MAX_NESTING: usize = 100;
const MAX_STEPS: usize = 200_000;

pub(crate) struct Parser<'a> {
    expr: &'a str,
    toks: Vec<Token>,
    pos: usize,
    /// Number of `vlan` keywords parsed so far.
    depth: u8,
    nesting: usize,
    steps: usize,
}

fn describe(t: &Token) -> String {
    if t.tok == Tok::Eof {
        "end of expression".to_string()
    } else {
        format!("'{}'", t.text)
    }
}

fn and(a: Node, b: Node) -> Node {
    Node::And(Box::new(a), Box::new(b))
}

fn or(a: Node, b: Node) -> Node {
    Node::Or(Box::new(a), Box::new(b))
}

impl<'a> Parser<'a> {
    pub(crate) fn new(expr: &'a str, toks: Vec<Token>) -> Parser<'a> {
        Parser { expr, toks, pos: 0, depth: 0, nesting: 0, steps: 0 }
    }

    fn peek(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn err_at<T>(&self, col: usize, msg: impl Into<String>) -> R<T> {
        Err(FilterError::new(self.expr, col, msg))
    }

    fn expected<T>(&self, what: &str) -> R<T> {
        let t = self.peek();
        self.err_at(t.col, format!("expected {what}, found {}", describe(t)))
    }

    fn tick(&mut self) -> R<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return self.err_at(1, "expression too complex");
        }
        Ok(())
    }

    /// Tries `first`; on failure rewinds and tries `second`; if both fail, reports the
    /// error that got further into the expression (the later one on a tie).
    fn alt<T>(
        &mut self,
        first: impl FnOnce(&mut Self) -> R<T>,
        second: impl FnOnce(&mut Self) -> R<T>,
    ) -> R<T> {
        let (pos, depth) = (self.pos, self.depth);
        match first(self) {
            Ok(v) => Ok(v),
            Err(e1) => {
                if e1.message == "expression too complex" {
                    return Err(e1);
                }
                self.pos = pos;
                self.depth = depth;
                match second(self) {
                    Ok(v) => Ok(v),
                    Err(e2) if e1.column > e2.column => Err(e1),
                    Err(e2) => Err(e2),
                }
            }
        }
    }

    /// Parses the whole expression.
    pub(crate) fn program(&mut self) -> R<Node> {
        if self.peek().tok == Tok::Eof {
            return Ok(Node::True);
        }
        let (n, _) = self.expr(None)?;
        let t = self.peek();
        match t.tok {
            Tok::Eof => Ok(n),
            Tok::RParen => self.err_at(t.col, "unmatched ')'"),
            _ => self
                .err_at(t.col, format!("expected 'and', 'or' or end of expression, found {}", describe(t))),
        }
    }

    fn enter(&mut self) -> R<()> {
        self.tick()?;
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return self.err_at(self.peek().col, "expression nested too deeply");
        }
        Ok(())
    }

    fn expr(&mut self, q: Q) -> R<(Node, Q)> {
        self.enter()?;
        let r = self.expr_inner(q);
        self.nesting -= 1;
        r
    }

    fn expr_inner(&mut self, q: Q) -> R<(Node, Q)> {
        let (mut left, mut q) = self.term(q)?;
        loop {
            let is_and = match self.peek().tok {
                Tok::Kw(Kw::And) => true,
                Tok::Kw(Kw::Or) => false,
                _ => return Ok((left, q)),
            };
            self.bump();
            let qq = q;
            let (right, q2) = self.alt(|p| p.term(qq), |p| p.id(qq).map(|n| (n, qq)))?;
            left = if is_and { and(left, right) } else { or(left, right) };
            q = q2;
        }
    }

    fn term(&mut self, q: Q) -> R<(Node, Q)> {
        self.enter()?;
        let r = if self.peek().tok == Tok::Kw(Kw::Not) {
            self.bump();
            self.term(q).map(|(n, q)| (Node::Not(Box::new(n)), q))
        } else {
            self.rterm(q)
        };
        self.nesting -= 1;
        r
    }

    fn rterm(&mut self, q: Q) -> R<(Node, Q)> {
        let t = self.peek().clone();
        match t.tok {
            Tok::LParen => self.alt(
                |p| p.relation().map(|n| (n, None)),
                |p| {
                    p.bump();
                    let (n, _) = p.expr(q)?;
                    p.close_paren(t.col)?;
                    Ok((n, q))
                },
            ),
            Tok::Kw(Kw::P(pq)) => match self.peek_at(1) {
                Tok::LBracket => self.relation().map(|n| (n, None)),
                Tok::Kw(Kw::Src | Kw::Dst | Kw::Host | Kw::Net | Kw::Port | Kw::Portrange | Kw::Proto) => {
                    self.bump();
                    self.head(Some(pq))
                }
                Tok::Kw(Kw::Broadcast | Kw::Multicast) => {
                    self.bump();
                    self.other_cast(Some(pq))
                }
                _ => {
                    self.bump();
                    Ok((self.abbrev(pq, t.col)?, None))
                }
            },
            Tok::Kw(Kw::Src | Kw::Dst | Kw::Host | Kw::Net | Kw::Port | Kw::Portrange | Kw::Proto) => {
                self.head(None)
            }
            Tok::Kw(Kw::Broadcast | Kw::Multicast) => self.other_cast(None),
            Tok::Kw(Kw::Less | Kw::Greater) => {
                self.bump();
                let n = match self.peek().tok {
                    Tok::Num(n) => n,
                    _ => return self.expected(&format!("a number after '{}'", t.text)),
                };
                self.bump();
                let op = if t.tok == Tok::Kw(Kw::Less) { RelOp::Le } else { RelOp::Ge };
                let p = Prim::Rel { op, lhs: Arith::Len, rhs: Arith::Const(n) };
                Ok((Node::Prim(self.depth, p), None))
            }
            Tok::Kw(Kw::Vlan) => {
                self.bump();
                let id = match self.peek().tok {
                    Tok::Num(n) => {
                        let c = self.bump().col;
                        if n > 4095 {
                            return self.err_at(c, format!("VLAN tag {n} greater than maximum 4095"));
                        }
                        Some(n as u16)
                    }
                    _ => None,
                };
                let node = Node::Prim(self.depth, Prim::Vlan(id));
                if self.depth == u8::MAX {
                    return self.err_at(t.col, "too many 'vlan' keywords");
                }
                self.depth += 1;
                Ok((node, None))
            }
            Tok::Num(_) | Tok::Kw(Kw::Len) | Tok::Minus => self.relation().map(|n| (n, None)),
            Tok::Kw(Kw::Unsupported) => {
                self.err_at(t.col, format!("'{}' is not supported by streamnf-filter", t.text))
            }
            Tok::Hid { .. } | Tok::Hid6(_) | Tok::Eid(_) | Tok::Id(_) => self.err_at(
                t.col,
                format!(
                    "expected a filter primitive, found {}; add a qualifier such as 'host' or 'port'",
                    describe(&t)
                ),
            ),
            _ => self.expected("a filter primitive"),
        }
    }

    fn close_paren(&mut self, open_col: usize) -> R<()> {
        if self.peek().tok == Tok::RParen {
            self.bump();
            Ok(())
        } else {
            self.expected(&format!("')' to close the '(' at column {open_col}"))
        }
    }

    /// `[proto] [dir] [host|net|port|portrange] value` or `[proto] proto value`.
    fn head(&mut self, proto: Option<Pq>) -> R<(Node, Q)> {
        let mut dir = None;
        let first = match self.peek().tok {
            Tok::Kw(Kw::Src) => Some(Dir::Src),
            Tok::Kw(Kw::Dst) => Some(Dir::Dst),
            _ => None,
        };
        if let Some(d) = first {
            self.bump();
            let other = if d == Dir::Src { Kw::Dst } else { Kw::Src };
            dir = Some(d);
            match (self.peek_at(0), self.peek_at(1)) {
                (Tok::Kw(Kw::Or), Tok::Kw(k)) if *k == other => {
                    self.pos += 2;
                    dir = Some(Dir::Or);
                }
                (Tok::Kw(Kw::And), Tok::Kw(k)) if *k == other => {
                    self.pos += 2;
                    dir = Some(Dir::And);
                }
                _ => {}
            }
        }
        let addr = match self.peek().tok {
            Tok::Kw(Kw::Host) => Addr::Host,
            Tok::Kw(Kw::Net) => Addr::Net,
            Tok::Kw(Kw::Port) => Addr::Port,
            Tok::Kw(Kw::Portrange) => Addr::Portrange,
            Tok::Kw(Kw::Proto) if dir.is_none() => Addr::Proto,
            _ => Addr::Default,
        };
        if addr != Addr::Default {
            self.bump();
        }
        let q = Qual { proto, dir, addr };
        let n = self.id(Some(q))?;
        Ok((n, Some(q)))
    }

    /// `[proto] broadcast` / `[proto] multicast`.
    fn other_cast(&mut self, proto: Option<Pq>) -> R<(Node, Q)> {
        let t = self.bump();
        let bc = t.tok == Tok::Kw(Kw::Broadcast);
        let prim = match (proto, bc) {
            (None | Some(Pq::Link), true) => Prim::EtherBroadcast,
            (Some(Pq::Ip), true) => Prim::Ip4Broadcast,
            (None | Some(Pq::Link), false) => Prim::EtherMulticast,
            (Some(Pq::Ip), false) => Prim::Ip4Multicast,
            (Some(Pq::Ip6), false) => Prim::Ip6Multicast,
            (Some(p), _) => {
                return self.err_at(t.col, format!("'{}' modifier applied to '{}'", p.name(), t.text));
            }
        };
        Ok((Node::Prim(self.depth, prim), None))
    }

    /// A protocol keyword standing alone (`tcp`, `ip6`, `arp` ...).
    fn abbrev(&self, pq: Pq, col: usize) -> R<Node> {
        let d = self.depth;
        let p = |prim: Prim| Node::Prim(d, prim);
        let both = |v: u8| p(Prim::IpProto(v));
        Ok(match pq {
            Pq::Link => {
                return self.err_at(
                    col,
                    "'ether' needs 'host', 'src', 'dst', 'proto', 'broadcast', 'multicast' or '[...]'",
                );
            }
            Pq::Ip => p(Prim::EtherType(0x0800)),
            Pq::Ip6 => p(Prim::EtherType(0x86dd)),
            Pq::Arp => p(Prim::EtherType(0x0806)),
            Pq::Rarp => p(Prim::EtherType(0x8035)),
            Pq::Tcp => both(6),
            Pq::Udp => both(17),
            Pq::Sctp => both(132),
            Pq::Pim => both(103),
            Pq::Ah => both(51),
            Pq::Esp => both(50),
            Pq::Icmp => p(Prim::Ip4Proto(1)),
            Pq::Igmp => p(Prim::Ip4Proto(2)),
            Pq::Igrp => p(Prim::Ip4Proto(9)),
            Pq::Vrrp | Pq::Carp => p(Prim::Ip4Proto(112)),
            Pq::Icmp6 => p(Prim::Ip6Proto(58)),
        })
    }

    /// A value in a qualified context: `id` in libpcap's grammar.
    fn id(&mut self, q: Q) -> R<Node> {
        self.enter()?;
        let r = self.id_inner(q);
        self.nesting -= 1;
        r
    }

    fn id_inner(&mut self, q: Q) -> R<Node> {
        let t = self.peek().clone();
        let Some(qual) = q else {
            return match t.tok {
                Tok::Num(_) | Tok::Hid { .. } | Tok::Hid6(_) | Tok::Eid(_) | Tok::Id(_) => self.err_at(
                    t.col,
                    format!(
                        "{} has no qualifier to continue; write e.g. 'host' or 'port' before it",
                        describe(&t)
                    ),
                ),
                _ => self.expected("a filter primitive"),
            };
        };
        match t.tok {
            Tok::Kw(Kw::Not) => {
                self.bump();
                Ok(Node::Not(Box::new(self.id(q)?)))
            }
            Tok::LParen => {
                self.bump();
                let mut n = self.id(q)?;
                loop {
                    match self.peek().tok {
                        Tok::Kw(Kw::And) => {
                            self.bump();
                            n = and(n, self.id(q)?);
                        }
                        Tok::Kw(Kw::Or) => {
                            self.bump();
                            n = or(n, self.id(q)?);
                        }
                        _ => break,
                    }
                }
                self.close_paren(t.col)?;
                Ok(n)
            }
            Tok::Num(v) => {
                self.bump();
                self.ncode_num(v, qual, t.col)
            }
            Tok::Hid { addr, bits } => {
                self.bump();
                let (value, mask, text) = match self.peek().tok {
                    Tok::Slash => {
                        self.bump();
                        let Tok::Num(len) = self.peek().tok else {
                            return self.expected("a prefix length after '/'");
                        };
                        let lt = self.bump();
                        self.check_not_port(qual, t.col, "IP address and prefix length")?;
                        if len > 32 {
                            return self.err_at(lt.col, "mask length must be <= 32");
                        }
                        let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                        (addr << (32 - bits), m, format!("{}/{}", t.text, len))
                    }
                    Tok::Kw(Kw::Mask) => {
                        self.bump();
                        let Tok::Hid { addr: m, bits: mb } = self.peek().tok else {
                            return self.expected("a dotted netmask after 'mask'");
                        };
                        let mt = self.bump();
                        self.check_not_port(qual, t.col, "IP address and netmask")?;
                        (addr << (32 - bits), m << (32 - mb), format!("{} mask {}", t.text, mt.text))
                    }
                    _ => {
                        self.check_not_port(qual, t.col, "IP address")?;
                        let shift = 32 - u32::from(bits);
                        return self.host4(addr << shift, u32::MAX << shift, qual, t.col);
                    }
                };
                if value & !mask != 0 {
                    return self.err_at(t.col, format!("non-network bits set in \"{text}\""));
                }
                if qual.addr != Addr::Net {
                    return self.err_at(t.col, "Mask syntax for networks only");
                }
                self.host4(value, mask, qual, t.col)
            }
            Tok::Hid6(a) => {
                self.bump();
                let mut len = 128;
                if self.peek().tok == Tok::Slash {
                    self.bump();
                    let Tok::Num(l) = self.peek().tok else {
                        return self.expected("a prefix length after '/'");
                    };
                    let lt = self.bump();
                    self.check_not_port(qual, t.col, "IP address and prefix length")?;
                    if l > 128 {
                        return self.err_at(lt.col, "mask length must be <= 128");
                    }
                    len = l;
                }
                self.check_not_port(qual, t.col, "IP address")?;
                self.host6(a, len, qual, t.col)
            }
            Tok::Eid(mac) => {
                self.bump();
                if qual.proto != Some(Pq::Link) || !matches!(qual.addr, Addr::Default | Addr::Host) {
                    return self.err_at(t.col, "ethernet address used in non-ether expression");
                }
                let dir = qual.dir.unwrap_or(Dir::Or);
                Ok(Node::Prim(self.depth, Prim::EtherAddr { dir, mac }))
            }
            Tok::Id(ref name) => {
                self.bump();
                self.scode(name, qual, t.col)
            }
            _ => match qual.addr {
                Addr::Port => self.expected("a port number or name after 'port'"),
                Addr::Portrange => self.expected("a port range such as 1000-2000 after 'portrange'"),
                Addr::Proto => self.expected("a protocol number or \\name after 'proto'"),
                Addr::Net => self.expected("a network address after 'net'"),
                _ => self.expected("an address"),
            },
        }
    }

    fn check_not_port(&self, q: Qual, col: usize, what: &str) -> R<()> {
        match q.addr {
            Addr::Port | Addr::Portrange | Addr::Proto => {
                self.err_at(col, format!("'{}' modifier applied to {what}", q.addr.name()))
            }
            _ => Ok(()),
        }
    }

    fn host4(&self, addr: u32, mask: u32, q: Qual, col: usize) -> R<Node> {
        let (ip, arp, rarp) = match q.proto {
            None => (true, true, true),
            Some(Pq::Ip) => (true, false, false),
            Some(Pq::Arp) => (false, true, false),
            Some(Pq::Rarp) => (false, false, true),
            Some(Pq::Link) => return self.err_at(col, "illegal link layer address"),
            Some(Pq::Ip6) => return self.err_at(col, "'ip6' modifier applied to ip host"),
            Some(p) => return self.err_at(col, format!("'{}' modifier applied to host", p.name())),
        };
        let dir = q.dir.unwrap_or(Dir::Or);
        Ok(Node::Prim(self.depth, Prim::Host4 { dir, addr: addr & mask, mask, ip, arp, rarp }))
    }

    fn host6(&self, a: Ipv6Addr, len: u32, q: Qual, col: usize) -> R<Node> {
        let addr = u128::from(a);
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
        if addr & !mask != 0 {
            return self.err_at(col, format!("non-network bits set in \"{a}/{len}\""));
        }
        if q.addr == Addr::Host && len != 128 {
            return self.err_at(col, "Mask syntax for networks only");
        }
        match q.proto {
            None | Some(Pq::Ip6) => {}
            Some(p) => return self.err_at(col, format!("'{}' modifier applied to ip6 host", p.name())),
        }
        let dir = q.dir.unwrap_or(Dir::Or);
        Ok(Node::Prim(self.depth, Prim::Host6 { dir, addr, mask }))
    }

    fn ncode_num(&self, v: u32, q: Qual, col: usize) -> R<Node> {
        match q.addr {
            Addr::Default | Addr::Host | Addr::Net => {
                if q.proto == Some(Pq::Link) {
                    return self.err_at(col, "illegal link layer address");
                }
                let (mut v, mut mask) = (v, u32::MAX);
                if q.addr == Addr::Net {
                    while v != 0 && v & 0xff00_0000 == 0 {
                        v <<= 8;
                        mask <<= 8;
                    }
                }
                self.host4(v, mask, q, col)
            }
            Addr::Port | Addr::Portrange => {
                if v > 65535 {
                    return self.err_at(col, format!("illegal port number {v} > 65535"));
                }
                self.port(v as u16, v as u16, q, PortProto::Both, col)
            }
            Addr::Proto => self.proto(v, q, col),
        }
    }

    fn proto(&self, v: u32, q: Qual, col: usize) -> R<Node> {
        let d = self.depth;
        match q.proto {
            Some(Pq::Link) => {
                let Ok(t) = u16::try_from(v) else {
                    return self.err_at(col, format!("ether proto {v} > 65535"));
                };
                Ok(Node::Prim(d, Prim::EtherType(t)))
            }
            None | Some(Pq::Ip) | Some(Pq::Ip6) => {
                let Ok(p) = u8::try_from(v) else {
                    return self.err_at(col, format!("ip proto {v} > 255"));
                };
                Ok(match q.proto {
                    Some(Pq::Ip) => Node::Prim(d, Prim::Ip4Proto(p)),
                    Some(Pq::Ip6) => Node::Prim(d, Prim::Ip6Proto(p)),
                    _ => Node::Prim(d, Prim::IpProto(p)),
                })
            }
            Some(p) => self.err_at(col, format!("'{} proto' is not supported", p.name())),
        }
    }

    fn port(&self, lo: u16, hi: u16, q: Qual, named: PortProto, col: usize) -> R<Node> {
        let (tcp, udp, sctp) = match (q.proto, named) {
            (None, PortProto::Both) => (true, true, true),
            (None, PortProto::Tcp) => (true, false, false),
            (None, PortProto::Udp) => (false, true, false),
            (Some(Pq::Tcp), PortProto::Both | PortProto::Tcp) => (true, false, false),
            (Some(Pq::Udp), PortProto::Both | PortProto::Udp) => (false, true, false),
            (Some(Pq::Sctp), PortProto::Both) => (false, false, true),
            (Some(Pq::Tcp | Pq::Udp | Pq::Sctp), p) => {
                let is = if p == PortProto::Tcp { "tcp" } else { "udp" };
                return self.err_at(col, format!("port '{}' is {is}", self.toks[self.pos - 1].text));
            }
            (Some(_), _) => return self.err_at(col, format!("illegal qualifier of '{}'", q.addr.name())),
        };
        let dir = q.dir.unwrap_or(Dir::Or);
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        Ok(Node::Prim(self.depth, Prim::Port { dir, lo, hi, tcp, udp, sctp }))
    }

    /// A name in a qualified context.
    fn scode(&self, name: &str, q: Qual, col: usize) -> R<Node> {
        match q.addr {
            Addr::Default | Addr::Host => {
                self.err_at(col, format!("host names are not supported; use an address (found '{name}')"))
            }
            Addr::Net => {
                self.err_at(col, format!("network names are not supported; use an address (found '{name}')"))
            }
            Addr::Port => match names::port(name) {
                Some((p, pp)) => self.port(p, p, q, pp, col),
                None => self.err_at(
                    col,
                    format!("expected a port number after 'port', found '{name}' (unknown port name)"),
                ),
            },
            Addr::Portrange => {
                let bad = || self.err_at(col, format!("unknown port in range '{name}'"));
                let Some((a, b)) = name.split_once('-') else {
                    return bad();
                };
                let one = |s: &str| -> Option<(u32, PortProto)> {
                    match crate::lex::number(s).ok().flatten() {
                        Some(v) => Some((v, PortProto::Both)),
                        None => names::port(s).map(|(p, pp)| (u32::from(p), pp)),
                    }
                };
                let (Some((lo, p1)), Some((hi, p2))) = (one(a), one(b)) else {
                    return bad();
                };
                for v in [lo, hi] {
                    if v > 65535 {
                        return self.err_at(col, format!("illegal port number {v} > 65535"));
                    }
                }
                let pp = match (p1, p2) {
                    (PortProto::Both, p) | (p, PortProto::Both) => p,
                    (a, b) if a == b => a,
                    _ => return self.err_at(col, format!("port range '{name}' mixes tcp and udp ports")),
                };
                self.port(lo as u16, hi as u16, q, pp, col)
            }
            Addr::Proto => match q.proto {
                Some(Pq::Link) => match names::ether_proto(name) {
                    Some(t) => Ok(Node::Prim(self.depth, Prim::EtherType(t))),
                    None => self.err_at(col, format!("unknown ether proto '{name}'")),
                },
                _ => match names::ip_proto(name) {
                    Some(p) => self.proto(u32::from(p), q, col),
                    None => self.err_at(col, format!("unknown ip proto '{name}'")),
                },
            },
        }
    }

    /// `arith relop arith`.
    fn relation(&mut self) -> R<Node> {
        let lhs = self.arith(0)?;
        let op = match self.peek().tok {
            Tok::Eq => RelOp::Eq,
            Tok::Ne => RelOp::Ne,
            Tok::Lt => RelOp::Lt,
            Tok::Le => RelOp::Le,
            Tok::Gt => RelOp::Gt,
            Tok::Ge => RelOp::Ge,
            _ => return self.expected("a comparison operator (=, !=, <, <=, >, >=)"),
        };
        self.bump();
        let rhs = self.arith(0)?;
        Ok(Node::Prim(self.depth, Prim::Rel { op, lhs, rhs }))
    }

    fn binop(tok: &Tok) -> Option<(BinOp, u8)> {
        Some(match tok {
            Tok::Pipe => (BinOp::Or, 1),
            Tok::Caret => (BinOp::Xor, 2),
            Tok::Amp => (BinOp::And, 3),
            Tok::Shl => (BinOp::Shl, 4),
            Tok::Shr => (BinOp::Shr, 4),
            Tok::Plus => (BinOp::Add, 5),
            Tok::Minus => (BinOp::Sub, 5),
            Tok::Star => (BinOp::Mul, 6),
            Tok::Slash => (BinOp::Div, 6),
            Tok::Percent => (BinOp::Mod, 6),
            _ => return None,
        })
    }

    /// Precedence climbing over left-associative binary operators.
    fn arith(&mut self, min_prec: u8) -> R<Arith> {
        self.enter()?;
        let r = self.arith_inner(min_prec);
        self.nesting -= 1;
        r
    }

    fn arith_inner(&mut self, min_prec: u8) -> R<Arith> {
        let mut lhs = self.atom()?;
        while let Some((op, prec)) = Self::binop(&self.peek().tok) {
            if prec <= min_prec {
                break;
            }
            let opt = self.bump();
            let rhs = self.arith(prec)?;
            if let Arith::Const(c) = rhs {
                match op {
                    BinOp::Div if c == 0 => return self.err_at(opt.col, "division by zero"),
                    BinOp::Mod if c == 0 => return self.err_at(opt.col, "modulus by zero"),
                    BinOp::Shl | BinOp::Shr if c > 31 => {
                        return self.err_at(opt.col, "shift by more than 31 bits")
                    }
                    _ => {}
                }
            }
            lhs = Arith::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn atom(&mut self) -> R<Arith> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Num(v) => {
                self.bump();
                Ok(Arith::Const(v))
            }
            Tok::Kw(Kw::Len) => {
                self.bump();
                Ok(Arith::Len)
            }
            Tok::Minus => {
                self.bump();
                self.enter()?;
                let a = self.atom();
                self.nesting -= 1;
                Ok(Arith::Neg(Box::new(a?)))
            }
            Tok::LParen => {
                self.bump();
                let a = self.arith(0)?;
                self.close_paren(t.col)?;
                Ok(a)
            }
            Tok::Kw(Kw::P(pq)) if *self.peek_at(1) == Tok::LBracket => {
                self.bump();
                self.bump();
                let base = match pq {
                    Pq::Link => Base::Link,
                    Pq::Ip => Base::Net(0x0800),
                    Pq::Ip6 => Base::Net(0x86dd),
                    Pq::Arp => Base::Net(0x0806),
                    Pq::Rarp => Base::Net(0x8035),
                    Pq::Tcp => Base::Trans4(6),
                    Pq::Udp => Base::Trans4(17),
                    Pq::Sctp => Base::Trans4(132),
                    Pq::Icmp => Base::Trans4(1),
                    Pq::Igmp => Base::Trans4(2),
                    Pq::Igrp => Base::Trans4(9),
                    Pq::Pim => Base::Trans4(103),
                    Pq::Vrrp | Pq::Carp => Base::Trans4(112),
                    Pq::Icmp6 => Base::Icmp6,
                    Pq::Ah | Pq::Esp => {
                        return self.err_at(t.col, format!("'{}[...]' is not supported", pq.name()));
                    }
                };
                let idx = self.arith(0)?;
                let mut size = 1;
                if self.peek().tok == Tok::Colon {
                    self.bump();
                    let st = self.peek().clone();
                    let Tok::Num(s) = st.tok else {
                        return self.expected("a size (1, 2 or 4) after ':'");
                    };
                    self.bump();
                    if !matches!(s, 1 | 2 | 4) {
                        return self.err_at(st.col, "data size must be 1, 2, or 4");
                    }
                    size = s as u8;
                }
                if self.peek().tok != Tok::RBracket {
                    return self.expected("']'");
                }
                self.bump();
                Ok(Arith::Load { base, idx: Box::new(idx), size })
            }
            _ => self.expected("a number, 'len' or an accessor such as 'tcp[13]'"),
        }
    }
}
