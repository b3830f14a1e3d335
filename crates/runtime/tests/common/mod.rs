//! Packets shared by the runtime's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use etherparse::PacketBuilder;
use streamnf_packet::{LinkType, Packet};

/// An Ethernet/IPv4/UDP packet with `payload`, captured at `ts` ns.
pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8], ts: u64) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("build");
    Packet::new(LinkType::Ethernet, v, ts)
}
