//! Actors: lazily expanded scripts of connection-level operations.
//!
//! An actor owns one or more conversations and a queue of operations
//! ("handshake", "send this message", "close"). Operations are expanded into
//! frames on demand, a couple of frames at a time, so even huge transfers need
//! only bounded memory.

use std::collections::VecDeque;

use crate::flows::{Ctx, ScanState, TrojanState};
use crate::frame::{Conv, Dir, ACK, FIN, PSH, RST, SYN};
use crate::rng::{mix64, Rng};

/// Something worth counting in [`crate::GenStats`], attached to the frame that
/// makes it visible on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    TcpStart { v6: bool },
    UdpStart { v6: bool, dns: bool },
    Http(UrlKey),
    ScanProbe,
    ScanOpen,
    TrojanConn,
}

/// Identity of a requested URI for distinct/repeat accounting.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UrlKey {
    /// URL `k` of the pool.
    Pool(u32),
    /// XSS variant of pool URL `k`.
    Xss(u32),
    /// A URI that is requested exactly once (trojan downloads).
    Unique,
}

/// Filler used for the body of a message beyond its explicit head.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fill {
    Text,
    Binary(u64),
}

const LOREM: &[u8] = b"<!DOCTYPE html><html><head><title>streamnf synthetic page</title></head><body>\
<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore \
et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut \
aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum \
dolore eu fugiat nulla pariatur.</p><div class=\"item\"><a href=\"/news/article17.html\">more</a></div>\n";

/// An application-level message: explicit bytes followed by generated filler.
#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub head: Vec<u8>,
    pub body_len: usize,
    pub fill: Fill,
}

impl Msg {
    /// A message consisting only of the given bytes.
    pub(crate) fn bytes(head: impl Into<Vec<u8>>) -> Msg {
        Msg { head: head.into(), body_len: 0, fill: Fill::Text }
    }

    /// Explicit head plus `body_len` bytes of filler.
    pub(crate) fn with_body(head: impl Into<Vec<u8>>, body_len: usize, fill: Fill) -> Msg {
        Msg { head: head.into(), body_len, fill }
    }

    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body_len
    }

    /// Appends bytes `off..off + len` of the message to `out`.
    fn write(&self, off: usize, len: usize, out: &mut Vec<u8>) {
        let end = off + len;
        let hl = self.head.len();
        if off < hl {
            out.extend_from_slice(&self.head[off..end.min(hl)]);
        }
        let mut p = off.max(hl) - hl;
        let body_end = end.max(hl) - hl;
        match self.fill {
            Fill::Text => {
                while p < body_end {
                    let i = p % LOREM.len();
                    let n = (LOREM.len() - i).min(body_end - p);
                    out.extend_from_slice(&LOREM[i..i + n]);
                    p += n;
                }
            }
            Fill::Binary(salt) => {
                while p < body_end {
                    let word =
                        mix64(salt ^ ((p / 8) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes();
                    let i = p % 8;
                    let n = (8 - i).min(body_end - p);
                    out.extend_from_slice(&word[i..i + n]);
                    p += n;
                }
            }
        }
    }
}

/// Kind of a multi-datagram UDP stream.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StreamKind {
    Rtp,
    Quic,
}

/// One connection-level operation.
#[derive(Debug)]
pub(crate) enum Op {
    /// A bare TCP control segment (SYN, SYN-ACK, ACK, FIN, RST...).
    Ctl { conv: usize, dir: Dir, flags: u8, event: Option<Event> },
    /// A TCP message, segmented at the MSS and ACKed every two segments.
    Send { conv: usize, dir: Dir, msg: Msg, off: usize, unacked: u8, event: Option<Event> },
    /// One UDP datagram.
    Datagram { conv: usize, dir: Dir, msg: Msg, event: Option<Event> },
    /// `remaining` UDP datagrams, mostly server to client.
    UdpStream { conv: usize, kind: StreamKind, remaining: u64, seq: u16 },
}

/// What drives an actor once its operation queue runs dry.
#[derive(Debug)]
pub(crate) enum Role {
    /// A regular TCP/UDP flow; fully scripted at creation.
    Regular,
    /// A SYN scanner; scripts one probe at a time.
    Scanner(ScanState),
    /// A trojan-infected (or decoy) host; scripts one step at a time.
    Trojan(TrojanState),
}

/// A frame ready for timestamping plus its accounting event.
pub(crate) type Frame = (Vec<u8>, Option<Event>);

/// A scripted traffic source.
#[derive(Debug)]
pub(crate) struct Actor {
    pub convs: Vec<Conv>,
    pub ops: VecDeque<Op>,
    pending: VecDeque<Frame>,
    pub role: Role,
}

impl Actor {
    pub(crate) fn new(role: Role) -> Actor {
        Actor { convs: Vec::new(), ops: VecDeque::new(), pending: VecDeque::new(), role }
    }

    /// Adds a conversation and returns its index.
    pub(crate) fn add_conv(&mut self, conv: Conv) -> usize {
        self.convs.push(conv);
        self.convs.len() - 1
    }

    pub(crate) fn ctl(&mut self, conv: usize, dir: Dir, flags: u8, event: Option<Event>) {
        self.ops.push_back(Op::Ctl { conv, dir, flags, event });
    }

    /// Three-way handshake; `event` goes on the SYN.
    pub(crate) fn handshake(&mut self, conv: usize, event: Option<Event>) {
        self.ctl(conv, Dir::C2S, SYN, event);
        self.ctl(conv, Dir::S2C, SYN | ACK, None);
        self.ctl(conv, Dir::C2S, ACK, None);
    }

    /// Sends a TCP message; `event` goes on its first segment.
    pub(crate) fn send(&mut self, conv: usize, dir: Dir, msg: Msg, event: Option<Event>) {
        if msg.len() == 0 {
            return;
        }
        self.ops.push_back(Op::Send { conv, dir, msg, off: 0, unacked: 0, event });
    }

    /// Orderly FIN / FIN-ACK / ACK teardown initiated by `first`.
    pub(crate) fn fin(&mut self, conv: usize, first: Dir) {
        self.ctl(conv, first, FIN | ACK, None);
        self.ctl(conv, first.other(), FIN | ACK, None);
        self.ctl(conv, first, ACK, None);
    }

    /// Random teardown: mostly FIN (client first more often), sometimes RST.
    pub(crate) fn close(&mut self, conv: usize, rng: &mut Rng) {
        let p = rng.below(100);
        match p {
            0..=59 => self.fin(conv, Dir::C2S),
            60..=86 => self.fin(conv, Dir::S2C),
            87..=95 => self.ctl(conv, Dir::C2S, RST | ACK, None),
            _ => self.ctl(conv, Dir::S2C, RST | ACK, None),
        }
    }

    pub(crate) fn datagram(&mut self, conv: usize, dir: Dir, msg: Msg, event: Option<Event>) {
        self.ops.push_back(Op::Datagram { conv, dir, msg, event });
    }

    /// Next frame of this actor, or `None` when it has finished.
    pub(crate) fn next_frame(&mut self, ctx: &mut Ctx) -> Option<Frame> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            if let Some(op) = self.ops.pop_front() {
                self.expand(op, ctx);
                continue;
            }
            self.convs.clear();
            if !ctx.refill(self) {
                return None;
            }
        }
    }

    fn expand(&mut self, op: Op, ctx: &mut Ctx) {
        match op {
            Op::Ctl { conv, dir, flags, event } => {
                let f = self.convs[conv].tcp_segment(dir, flags, &[]);
                self.pending.push_back((f, event));
            }
            Op::Send { conv, dir, msg, off, mut unacked, event } => {
                let c = &mut self.convs[conv];
                let total = msg.len();
                let n = (total - off).min(c.mss);
                let scratch = &mut ctx.scratch;
                scratch.clear();
                msg.write(off, n, scratch);
                let off = off + n;
                let last = off >= total;
                let flags = if last { ACK | PSH } else { ACK };
                let f = c.tcp_segment(dir, flags, scratch);
                self.pending.push_back((f, event));
                unacked += 1;
                if unacked >= 2 || last {
                    let a = c.tcp_segment(dir.other(), ACK, &[]);
                    self.pending.push_back((a, None));
                    unacked = 0;
                }
                if !last {
                    self.ops.push_front(Op::Send { conv, dir, msg, off, unacked, event: None });
                }
            }
            Op::Datagram { conv, dir, msg, event } => {
                let scratch = &mut ctx.scratch;
                scratch.clear();
                msg.write(0, msg.len(), scratch);
                let f = self.convs[conv].udp_datagram(dir, scratch);
                self.pending.push_back((f, event));
            }
            Op::UdpStream { conv, kind, remaining, seq } => {
                if remaining == 0 {
                    return;
                }
                let rng = &mut ctx.rng;
                let dir = if rng.chance(0.8) { Dir::S2C } else { Dir::C2S };
                let scratch = &mut ctx.scratch;
                scratch.clear();
                match kind {
                    StreamKind::Rtp => {
                        scratch.extend_from_slice(&[0x80, 96]);
                        scratch.extend_from_slice(&seq.to_be_bytes());
                        scratch.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                        scratch.extend_from_slice(&0x5354_4e46u32.to_be_bytes());
                        let n = 160;
                        Msg::with_body(Vec::new(), n, Fill::Binary(rng.next_u64())).write(0, n, scratch);
                    }
                    StreamKind::Quic => {
                        scratch.push(0x40 | (rng.below(4) as u8));
                        let n =
                            if dir == Dir::S2C { rng.range(900, 1250) } else { rng.range(30, 120) } as usize;
                        Msg::with_body(Vec::new(), n, Fill::Binary(rng.next_u64())).write(0, n, scratch);
                    }
                }
                let f = self.convs[conv].udp_datagram(dir, scratch);
                self.pending.push_back((f, None));
                if remaining > 1 {
                    self.ops.push_front(Op::UdpStream {
                        conv,
                        kind,
                        remaining: remaining - 1,
                        seq: seq.wrapping_add(1),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_write_segments_concatenate() {
        for fill in [Fill::Text, Fill::Binary(42)] {
            let m = Msg::with_body(b"HEAD".to_vec(), 3000, fill);
            let mut whole = Vec::new();
            m.write(0, m.len(), &mut whole);
            assert_eq!(whole.len(), 3004);
            assert_eq!(&whole[..4], b"HEAD");
            let mut parts = Vec::new();
            let mut off = 0;
            while off < m.len() {
                let n = 7.min(m.len() - off);
                m.write(off, n, &mut parts);
                off += n;
            }
            assert_eq!(whole, parts);
        }
    }
}
