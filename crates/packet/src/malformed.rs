//! Reasons a packet is malformed, and the policy for what to do with one.
//!
//! Owns only the vocabulary; counting is the runtime's job.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a frame could not be parsed as far as its headers claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    /// Frame shorter than its link-layer header.
    TruncatedLink,
    /// More than two VLAN tags, or a truncated tag.
    BadVlan,
    /// IPv4 header shorter than 20 bytes, bad IHL, or truncated.
    TruncatedIpv4,
    /// IPv4 version nibble not 4, or total length smaller than the header.
    BadIpv4Header,
    /// IPv6 header truncated.
    TruncatedIpv6,
    /// IPv6 version nibble not 6.
    BadIpv6Header,
    /// IPv6 extension header chain truncated or too long.
    BadIpv6ExtHeader,
    /// TCP header truncated or data offset < 5.
    TruncatedTcp,
    /// UDP header truncated or length field inconsistent.
    TruncatedUdp,
    /// ICMP / ICMPv6 header truncated.
    TruncatedIcmp,
    /// SCTP common header truncated.
    TruncatedSctp,
    /// Link type the parser does not handle.
    UnsupportedLink,
    /// Frame exceeds the maximum snap length streamnf accepts.
    Oversized,
}

impl Malformed {
    /// Stable snake_case name used in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::TruncatedLink => "truncated_link",
            Malformed::BadVlan => "bad_vlan",
            Malformed::TruncatedIpv4 => "truncated_ipv4",
            Malformed::BadIpv4Header => "bad_ipv4_header",
            Malformed::TruncatedIpv6 => "truncated_ipv6",
            Malformed::BadIpv6Header => "bad_ipv6_header",
            Malformed::BadIpv6ExtHeader => "bad_ipv6_ext_header",
            Malformed::TruncatedTcp => "truncated_tcp",
            Malformed::TruncatedUdp => "truncated_udp",
            Malformed::TruncatedIcmp => "truncated_icmp",
            Malformed::TruncatedSctp => "truncated_sctp",
            Malformed::UnsupportedLink => "unsupported_link",
            Malformed::Oversized => "oversized",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime does with a malformed packet (always after counting it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedPolicy {
    /// Count and drop (default).
    #[default]
    Drop,
    /// Count and pass on with the headers parsed so far.
    Pass,
}
