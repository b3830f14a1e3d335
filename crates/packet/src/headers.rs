//! Parsed header fields and offsets of one packet.
//!
//! Produced once by [`crate::parse()`] and read by everything after it (filters, splitters,
//! NFs). It owns no bytes: offsets index into [`crate::Packet::data`]. Fields an NF
//! rewrites (NAT) must be re-parsed or patched together with the bytes.

use std::net::IpAddr;

/// Link-layer type of a trace, as numbered by the tcpdump.org LINKTYPE registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101) / DLT_RAW (12, 14): raw IPv4 or IPv6, version from the first nibble.
    RawIp,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2.
    LinuxSll2,
    /// LINKTYPE_NULL (0): BSD loopback, 4-byte host-order address family.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, 4-byte big-endian address family.
    Loop,
    /// Any other link type: packets are counted as malformed (`unsupported_link`).
    Other(u32),
}

impl LinkType {
    /// Maps a pcap/pcapng link-type number.
    pub fn from_linktype(n: u32) -> LinkType {
        match n {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::RawIp,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            n => LinkType::Other(n),
        }
    }

    /// The pcap/pcapng link-type number.
    pub fn to_linktype(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
            LinkType::Other(n) => n,
        }
    }
}

/// Ethernet header fields (after any 802.1Q / 802.1ad tags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetInfo {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType after all VLAN tags (e.g. 0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP).
    pub ether_type: u16,
    /// VLAN IDs, outermost first; `vlan_count` of them are valid.
    pub vlan_ids: [u16; 2],
    /// Number of 802.1Q/802.1ad tags seen (at most 2 are recorded; more are malformed).
    pub vlan_count: u8,
}

/// IPv4 or IPv6 header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    /// 4 or 6.
    pub version: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol number (IPv6: after extension headers).
    pub proto: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Header length in bytes (IPv6: fixed header plus extension headers).
    pub header_len: u16,
    /// IPv4 total length / IPv6 payload length + 40, as stated in the header.
    pub total_len: u16,
    /// Fragment offset in 8-byte units (0 for the first or an unfragmented packet).
    pub frag_offset: u16,
    /// More-fragments flag, or an IPv6 fragment header with M set.
    pub more_fragments: bool,
}

impl IpInfo {
    /// True when this is a fragment other than the first (no transport header follows).
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }
}

/// TCP flag bits as in the TCP header byte 13.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;

    /// True when all bits in `mask` are set.
    pub fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

/// The transport layer of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// No transport header (non-IP, later fragment, or unknown protocol parsed no further).
    None,
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgement number.
        ack: u32,
        /// Flags byte.
        flags: TcpFlags,
        /// Header length in bytes (data offset * 4).
        header_len: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// SCTP (ports only).
    Sctp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMPv4.
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
    /// ICMPv6.
    Icmpv6 {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
}

impl Transport {
    /// Source and destination ports for TCP, UDP and SCTP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            Transport::Tcp { src_port, dst_port, .. }
            | Transport::Udp { src_port, dst_port }
            | Transport::Sctp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }
}

/// All parsed headers of one packet, with byte offsets into the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Link type the frame was parsed as.
    pub link: LinkType,
    /// Ethernet fields, when the link layer is Ethernet.
    pub eth: Option<EthernetInfo>,
    /// Network-layer protocol as an EtherType (0x0800, 0x86dd, 0x0806 ...), 0 if unknown.
    pub ether_type: u16,
    /// Offset of the network-layer header.
    pub l3_offset: u16,
    /// IP fields, when the packet is IPv4 or IPv6.
    pub ip: Option<IpInfo>,
    /// Offset of the transport header (equals `payload_offset` when there is none).
    pub l4_offset: u16,
    /// Transport fields.
    pub transport: Transport,
    /// Offset of the transport payload (application data).
    pub payload_offset: u16,
    /// Length of the transport payload actually present in the frame (bounded by the IP length).
    pub payload_len: u16,
}

impl Headers {
    /// Headers of a frame that carries nothing parseable beyond its link layer.
    pub fn empty(link: LinkType) -> Headers {
        Headers {
            link,
            eth: None,
            ether_type: 0,
            l3_offset: 0,
            ip: None,
            l4_offset: 0,
            transport: Transport::None,
            payload_offset: 0,
            payload_len: 0,
        }
    }

    /// IP protocol number, if IP.
    pub fn ip_proto(&self) -> Option<u8> {
        self.ip.map(|i| i.proto)
    }

    /// TCP flags, if TCP.
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        match self.transport {
            Transport::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }
}
