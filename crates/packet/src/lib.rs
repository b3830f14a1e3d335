//! # streamnf-packet
//!
//! The packet layer of streamnf: one parsed packet ([`Packet`]) with its header
//! offsets and fields ([`Headers`]), the small fixed-size metadata the runtime attaches
//! to it ([`Meta`]: logical clock, marks, target task), flowspace keys ([`Flowspace`],
//! [`FlowKey`]), and trace files (pcap / pcapng reading and writing, in [`trace`]).
//!
//! This crate owns bytes-on-the-wire concerns only. It never touches NF state, never
//! schedules work and never panics on input: every malformed packet becomes a
//! [`Malformed`] reason that the caller counts and handles by [`MalformedPolicy`].

pub mod checksum;
pub mod flow;
pub mod headers;
pub mod malformed;
pub mod meta;
pub mod packet;
pub mod parse;
pub mod trace;

pub use flow::{Field, FieldValue, FlowKey, Flowspace};
pub use headers::{EthernetInfo, Headers, IpInfo, LinkType, TcpFlags, Transport};
pub use malformed::{Malformed, MalformedPolicy};
pub use meta::{Marks, Meta, TaskId};
pub use packet::Packet;
pub use parse::parse;
