//! Per-connection state and Ethernet frame construction.

use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, TcpHeader};

use crate::rng::Rng;

/// MAC of the edge router through which every external host is reached.
pub(crate) const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

/// Linux-like SYN options: MSS placeholder, SACK permitted, NOP, window scale 7.
const SYN_OPTS: [u8; 12] = [2, 4, 0, 0, 4, 2, 1, 3, 3, 7, 1, 1];

/// An IP address of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// Sender direction inside a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the connection initiator ("client").
    C2S = 0,
    /// From the responder ("server").
    S2C = 1,
}

impl Dir {
    pub(crate) fn other(self) -> Dir {
        match self {
            Dir::C2S => Dir::S2C,
            Dir::S2C => Dir::C2S,
        }
    }
}

/// One side of a connection.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub ip: Ip,
    pub port: u16,
    pub mac: [u8; 6],
    pub ttl: u8,
    pub ip_id: u16,
    /// Next sequence number this side will send.
    pub seq: u32,
    pub syn_sent: bool,
    pub win: u16,
}

/// A TCP connection or UDP conversation.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    pub ep: [Endpoint; 2],
    pub mss: usize,
    pub flow_label: u32,
}

fn endpoint(rng: &mut Rng, ip: Ip, port: u16, internal: bool) -> Endpoint {
    let init_ttl = match rng.below(20) {
        0 => 255,
        1..=5 => 128,
        _ => 64,
    };
    // The capture point sits at the network edge: internal hosts are at most
    // one hop away, external ones a realistic number of hops.
    let hops = if internal { rng.below(2) } else { rng.range(5, 22) };
    let mac = if internal {
        let b = match ip {
            Ip::V4(a) => a,
            Ip::V6(a) => [a[12], a[13], a[14], a[15]],
        };
        [0x02, 0x1a, b[0], b[1], b[2], b[3]]
    } else {
        ROUTER_MAC
    };
    Endpoint {
        ip,
        port,
        mac,
        ttl: (init_ttl - hops) as u8,
        ip_id: rng.below(65536) as u16,
        seq: rng.next_u64() as u32,
        syn_sent: false,
        win: rng.pick(&[64240u16, 65535, 29200, 28960, 14600, 65160, 8192]),
    }
}

impl Conv {
    /// Creates a conversation between `client` (initiator) and `server`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rng: &mut Rng,
        client: Ip,
        cport: u16,
        client_internal: bool,
        server: Ip,
        sport: u16,
        server_internal: bool,
    ) -> Conv {
        let c = endpoint(rng, client, cport, client_internal);
        let s = endpoint(rng, server, sport, server_internal);
        let v6 = matches!(client, Ip::V6(_));
        Conv {
            ep: [c, s],
            mss: if v6 { 1440 } else { 1460 },
            flow_label: if v6 { rng.below(1 << 20) as u32 } else { 0 },
        }
    }

    /// Builds a TCP segment from `dir` with `flags`, advancing sequence state
    /// (SYN and FIN consume one sequence number, payload its length).
    pub(crate) fn tcp_segment(&mut self, dir: Dir, flags: u8, payload: &[u8]) -> Vec<u8> {
        let s = dir as usize;
        let o = 1 - s;
        // A host answering a SYN on a closed port has no sequence space yet.
        let seq = if flags & RST != 0 && !self.ep[s].syn_sent { 0 } else { self.ep[s].seq };
        let ack_no = if flags & ACK != 0 { self.ep[o].seq } else { 0 };
        let mut th = TcpHeader::new(self.ep[s].port, self.ep[o].port, seq, self.ep[s].win);
        th.fin = flags & FIN != 0;
        th.syn = flags & SYN != 0;
        th.rst = flags & RST != 0;
        th.psh = flags & PSH != 0;
        th.ack = flags & ACK != 0;
        th.acknowledgment_number = ack_no;
        if th.syn {
            let mut opts = SYN_OPTS;
            opts[2..4].copy_from_slice(&(self.mss as u16).to_be_bytes());
            th.set_options_raw(&opts).expect("valid static options");
            self.ep[s].syn_sent = true;
        }
        let adv = payload.len() as u32 + u32::from(th.syn) + u32::from(th.fin);
        if !th.rst {
            self.ep[s].seq = self.ep[s].seq.wrapping_add(adv);
        }
        let builder = PacketBuilder::ethernet2(self.ep[s].mac, self.ep[o].mac)
            .ip(self.ip_header(dir, IpNumber::TCP))
            .tcp_header(th);
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, payload).expect("frame fits");
        out
    }

    /// Builds a UDP datagram from `dir`.
    pub(crate) fn udp_datagram(&mut self, dir: Dir, payload: &[u8]) -> Vec<u8> {
        let s = dir as usize;
        let o = 1 - s;
        let builder = PacketBuilder::ethernet2(self.ep[s].mac, self.ep[o].mac)
            .ip(self.ip_header(dir, IpNumber::UDP))
            .udp(self.ep[s].port, self.ep[o].port);
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, payload).expect("frame fits");
        out
    }

    fn ip_header(&mut self, dir: Dir, proto: IpNumber) -> IpHeaders {
        let s = dir as usize;
        let o = 1 - s;
        match (self.ep[s].ip, self.ep[o].ip) {
            (Ip::V4(src), Ip::V4(dst)) => {
                let mut h = Ipv4Header::new(0, self.ep[s].ttl, proto, src, dst).expect("len 0");
                h.identification = self.ep[s].ip_id;
                self.ep[s].ip_id = self.ep[s].ip_id.wrapping_add(1);
                IpHeaders::Ipv4(h, Default::default())
            }
            (Ip::V6(src), Ip::V6(dst)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::try_new(self.flow_label).unwrap_or(Ipv6FlowLabel::ZERO),
                    payload_length: 0,
                    next_header: proto,
                    hop_limit: self.ep[s].ttl,
                    source: src,
                    destination: dst,
                },
                Default::default(),
            ),
            _ => unreachable!("mixed address families in one conversation"),
        }
    }
}
