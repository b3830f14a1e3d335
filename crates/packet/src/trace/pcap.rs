//! Classic pcap (libpcap) reading: global header, then 16-byte record headers and data.

use super::error::Damage;
use super::source::{Endian, Source};
use super::{RawRecord, MAX_CAPLEN};
use crate::headers::LinkType;

/// Length of the pcap global header.
pub(crate) const GLOBAL_HEADER_LEN: usize = 24;
/// Length of a pcap record header.
pub(crate) const RECORD_HEADER_LEN: usize = 16;

/// Recognises a pcap magic number (first four bytes): byte order and nanosecond flag.
pub(crate) fn detect(magic: [u8; 4]) -> Option<(Endian, bool)> {
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => Some((Endian::Little, false)),
        [0xa1, 0xb2, 0xc3, 0xd4] => Some((Endian::Big, false)),
        [0x4d, 0x3c, 0xb2, 0xa1] => Some((Endian::Little, true)),
        [0xa1, 0xb2, 0x3c, 0x4d] => Some((Endian::Big, true)),
        _ => None,
    }
}

/// Reader state of a pcap file after its global header.
pub(crate) struct PcapState {
    endian: Endian,
    nanos: bool,
    link: LinkType,
}

impl PcapState {
    /// Reads the rest of the global header (the 4 magic bytes were already consumed).
    pub(crate) fn open(src: &mut Source, endian: Endian, nanos: bool) -> Result<PcapState, Damage> {
        let mut rest = [0u8; GLOBAL_HEADER_LEN - 4];
        let n = src.read_up_to(&mut rest)?;
        if n < rest.len() {
            return Err(Damage::corrupt(
                0,
                format!("truncated pcap global header: {GLOBAL_HEADER_LEN} bytes needed, {} present", n + 4),
            ));
        }
        // Offsets within `rest` (global header offset minus 4): network at 16.
        let network = endian.u32(&rest, 16).unwrap_or(0);
        // Upper bits carry FCS-length information; the link type is in the low bits.
        let link = LinkType::from_linktype(network & 0x03FF_FFFF);
        Ok(PcapState { endian, nanos, link })
    }

    /// The file's link type.
    pub(crate) fn link(&self) -> LinkType {
        self.link
    }

    /// True for the nanosecond-timestamp variant.
    pub(crate) fn nanos(&self) -> bool {
        self.nanos
    }

    /// The next record, `None` at a clean end of file.
    pub(crate) fn next(&mut self, src: &mut Source) -> Result<Option<RawRecord>, Damage> {
        let start = src.pos();
        let mut hdr = [0u8; RECORD_HEADER_LEN];
        let n = src.read_up_to(&mut hdr)?;
        if n == 0 {
            return Ok(None);
        }
        if n < RECORD_HEADER_LEN {
            return Err(Damage::corrupt(
                start,
                format!("truncated record header: {RECORD_HEADER_LEN} bytes needed, {n} left"),
            ));
        }
        let e = self.endian;
        let (Some(sec), Some(frac), Some(incl), Some(orig)) =
            (e.u32(&hdr, 0), e.u32(&hdr, 4), e.u32(&hdr, 8), e.u32(&hdr, 12))
        else {
            return Err(Damage::corrupt(start, "unreadable record header"));
        };
        if incl > MAX_CAPLEN {
            return Err(Damage::corrupt(
                start,
                format!("captured length {incl} exceeds the {MAX_CAPLEN}-byte maximum"),
            ));
        }
        let data = src.read_vec(u64::from(incl))?;
        if data.len() < incl as usize {
            return Err(Damage::corrupt(
                start,
                format!("truncated record: header says {incl} bytes, {} left", data.len()),
            ));
        }
        let frac_ns = if self.nanos { u64::from(frac) } else { u64::from(frac) * 1000 };
        let ts_ns = u64::from(sec).saturating_mul(1_000_000_000).saturating_add(frac_ns);
        Ok(Some(RawRecord { link: self.link, ts_ns, orig_len: orig.max(incl), data }))
    }
}
