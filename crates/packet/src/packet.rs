//! [`Packet`]: one frame's bytes, timestamp, parsed headers and metadata.

use crate::headers::{Headers, LinkType};
use crate::malformed::Malformed;
use crate::meta::Meta;

/// A frame read from a trace (or built by a test) with its parse result and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Frame bytes as captured (possibly shorter than `orig_len`).
    pub data: Vec<u8>,
    /// Capture timestamp in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire.
    pub orig_len: u32,
    /// Parsed headers (as far as parsing got for a malformed frame).
    pub hdr: Headers,
    /// Why parsing stopped early, if it did.
    pub malformed: Option<Malformed>,
    /// Runtime metadata.
    pub meta: Meta,
}

impl Packet {
    /// Parses `data` captured on `link` at `ts_ns`. Never panics.
    pub fn new(link: LinkType, data: Vec<u8>, ts_ns: u64) -> Packet {
        let orig_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        Packet::with_orig_len(link, data, ts_ns, orig_len)
    }

    /// Like [`Packet::new`] with an explicit on-wire length.
    pub fn with_orig_len(link: LinkType, data: Vec<u8>, ts_ns: u64, orig_len: u32) -> Packet {
        let (hdr, malformed) = match crate::parse::parse(link, &data) {
            Ok(h) => (h, None),
            Err((h, m)) => (h, Some(m)),
        };
        Packet { data, ts_ns, orig_len, hdr, malformed, meta: Meta::default() }
    }

    /// Re-parses the headers after the bytes were rewritten.
    pub fn reparse(&mut self) {
        match crate::parse::parse(self.hdr.link, &self.data) {
            Ok(h) => {
                self.hdr = h;
                self.malformed = None;
            }
            Err((h, m)) => {
                self.hdr = h;
                self.malformed = Some(m);
            }
        }
    }

    /// The transport payload bytes.
    pub fn payload(&self) -> &[u8] {
        let start = usize::from(self.hdr.payload_offset);
        let end = start + usize::from(self.hdr.payload_len);
        self.data.get(start..end).unwrap_or(&[])
    }
}
