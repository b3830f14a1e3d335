//! Trace writers: nanosecond pcap and pcapng (one interface, nanosecond resolution).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::pcapng::{BYTE_ORDER_MAGIC, EPB_TYPE, IDB_TYPE, OPT_IF_TSRESOL, SHB_TYPE};
use super::MAX_CAPLEN;
use crate::headers::LinkType;

/// Something packets can be written to as a capture file.
pub trait CaptureWriter: Send {
    /// Appends one packet captured at `ts_ns` (ns since the Unix epoch) that was
    /// `orig_len` bytes on the wire. Bytes beyond the 262144-byte snap length are dropped;
    /// an `orig_len` smaller than `data` is raised to `data.len()`.
    fn write(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()>;

    /// Flushes everything and returns the number of packets written.
    fn finish(self: Box<Self>) -> io::Result<u64>;
}

/// Captured bytes (cut to the snap length) and the on-wire length to record for them.
fn clip(orig_len: u32, data: &[u8]) -> (&[u8], u32) {
    let data = data.get(..MAX_CAPLEN as usize).unwrap_or(data);
    // `data.len()` ≤ MAX_CAPLEN here, so the conversion cannot fail.
    let caplen = u32::try_from(data.len()).unwrap_or(MAX_CAPLEN);
    (data, orig_len.max(caplen))
}

/// Writes a classic pcap file: little-endian, nanosecond magic `0xa1b23c4d`, snap length
/// 262144.
pub struct PcapWriter<W: Write> {
    out: W,
    packets: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (truncates) `path` and writes the global header.
    pub fn create(path: impl AsRef<Path>, link: LinkType) -> io::Result<Self> {
        PcapWriter::new(BufWriter::new(create_file(path.as_ref())?), link)
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header for `link` to `out` (wrap it in a `BufWriter` if unbuffered).
    pub fn new(mut out: W, link: LinkType) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&MAX_CAPLEN.to_le_bytes());
        h.extend_from_slice(&link.to_linktype().to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out, packets: 0 })
    }

    /// Appends one packet (see [`CaptureWriter::write`]). Fails with `InvalidInput` for a
    /// timestamp past the pcap limit (year 2106).
    pub fn write_packet(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let (data, orig_len) = clip(orig_len, data);
        let sec = u32::try_from(ts_ns / 1_000_000_000).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "timestamp beyond the pcap range (year 2106)")
        })?;
        let nsec = (ts_ns % 1_000_000_000) as u32;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&sec.to_le_bytes());
        h[4..8].copy_from_slice(&nsec.to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)?;
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write + Send> CaptureWriter for PcapWriter<W> {
    fn write(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        self.write_packet(ts_ns, orig_len, data)
    }

    fn finish(mut self: Box<Self>) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.packets)
    }
}

/// Writes a little-endian pcapng file: one Section Header Block, one Interface Description
/// Block (snap length 262144, `if_tsresol` = 9, i.e. nanoseconds), then Enhanced Packet
/// Blocks.
pub struct PcapNgWriter<W: Write> {
    out: W,
    packets: u64,
}

impl PcapNgWriter<BufWriter<File>> {
    /// Creates (truncates) `path` and writes the section and interface headers.
    pub fn create(path: impl AsRef<Path>, link: LinkType) -> io::Result<Self> {
        PcapNgWriter::new(BufWriter::new(create_file(path.as_ref())?), link)
    }
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the Section Header Block and the Interface Description Block for `link`.
    pub fn new(mut out: W, link: LinkType) -> io::Result<Self> {
        let mut b = Vec::with_capacity(64);
        // Section Header Block, no options, section length unknown (-1).
        b.extend_from_slice(&SHB_TYPE.to_le_bytes());
        b.extend_from_slice(&28u32.to_le_bytes());
        b.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        b.extend_from_slice(&28u32.to_le_bytes());
        // Interface Description Block with if_tsresol = 9 and opt_endofopt.
        let link16 = u16::try_from(link.to_linktype()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "link type does not fit pcapng's 16 bits")
        })?;
        b.extend_from_slice(&IDB_TYPE.to_le_bytes());
        b.extend_from_slice(&32u32.to_le_bytes());
        b.extend_from_slice(&link16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&MAX_CAPLEN.to_le_bytes());
        b.extend_from_slice(&OPT_IF_TSRESOL.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&[9, 0, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&32u32.to_le_bytes());
        out.write_all(&b)?;
        Ok(PcapNgWriter { out, packets: 0 })
    }

    /// Appends one packet as an Enhanced Packet Block (see [`CaptureWriter::write`]).
    pub fn write_packet(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let (data, orig_len) = clip(orig_len, data);
        let caplen = data.len() as u32;
        let padded = (caplen + 3) & !3;
        let total = 32 + padded;
        let mut h = [0u8; 28];
        h[0..4].copy_from_slice(&EPB_TYPE.to_le_bytes());
        h[4..8].copy_from_slice(&total.to_le_bytes());
        h[8..12].copy_from_slice(&0u32.to_le_bytes());
        h[12..16].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        h[16..20].copy_from_slice(&(ts_ns as u32).to_le_bytes());
        h[20..24].copy_from_slice(&caplen.to_le_bytes());
        h[24..28].copy_from_slice(&orig_len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)?;
        let pad = [0u8; 3];
        self.out.write_all(pad.get(..(padded - caplen) as usize).unwrap_or(&[]))?;
        self.out.write_all(&total.to_le_bytes())?;
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write + Send> CaptureWriter for PcapNgWriter<W> {
    fn write(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        self.write_packet(ts_ns, orig_len, data)
    }

    fn finish(mut self: Box<Self>) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.packets)
    }
}

fn create_file(path: &Path) -> io::Result<File> {
    File::create(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Creates a buffered capture writer for `path`: pcapng when the extension is `.pcapng`
/// (any case), nanosecond pcap otherwise.
pub fn create_writer(path: impl AsRef<Path>, link: LinkType) -> io::Result<Box<dyn CaptureWriter>> {
    let path = path.as_ref();
    let ng = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("pcapng"));
    if ng {
        Ok(Box::new(PcapNgWriter::create(path, link)?))
    } else {
        Ok(Box::new(PcapWriter::create(path, link)?))
    }
}
