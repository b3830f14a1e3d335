//! pcapng reading: sections (either byte order), interfaces with their own link types and
//! timestamp resolutions, and the three packet block kinds. Other blocks are skipped.

use super::error::Damage;
use super::source::{Endian, Source};
use super::{RawRecord, MAX_CAPLEN};
use crate::headers::LinkType;

/// Section Header Block type (a palindrome: the same in both byte orders).
pub(crate) const SHB_TYPE: u32 = 0x0A0D_0D0A;
/// Interface Description Block type.
pub(crate) const IDB_TYPE: u32 = 1;
/// Obsolete Packet Block type.
pub(crate) const PB_TYPE: u32 = 2;
/// Simple Packet Block type.
pub(crate) const SPB_TYPE: u32 = 3;
/// Enhanced Packet Block type.
pub(crate) const EPB_TYPE: u32 = 6;
/// Byte-order magic in the Section Header Block.
pub(crate) const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// IDB option: timestamp resolution.
pub(crate) const OPT_IF_TSRESOL: u16 = 9;
/// IDB option: timestamp offset in seconds.
pub(crate) const OPT_IF_TSOFFSET: u16 = 14;

/// Blocks whose bodies are parsed in memory may not exceed this (other blocks are skipped
/// without being held in memory, whatever their length).
const MAX_PARSED_BLOCK: u32 = 16 * 1024 * 1024;
/// Smallest block: type, length, trailing length.
const MIN_BLOCK: u32 = 12;
/// Smallest Section Header Block: header, byte-order magic, versions, section length, trailer.
const MIN_SHB: u32 = 28;

/// One Interface Description Block.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    snaplen: u32,
    /// Raw `if_tsresol` byte: MSB clear = 10^-n s, set = 2^-n s.
    tsresol: u8,
    /// `if_tsoffset` in seconds.
    tsoffset: i64,
}

impl Interface {
    fn ts_ns(&self, units: u64) -> u64 {
        ts_to_ns(units, self.tsresol, self.tsoffset)
    }
}

/// Converts a timestamp in `tsresol` units plus an offset in seconds to nanoseconds,
/// saturating at 0 and `u64::MAX`.
pub(crate) fn ts_to_ns(units: u64, tsresol: u8, tsoffset: i64) -> u64 {
    let units = i128::from(units);
    let exp = u32::from(tsresol & 0x7f);
    let ns: i128 = if tsresol & 0x80 == 0 {
        if exp <= 9 {
            units * 10i128.pow(9 - exp)
        } else {
            10i128.checked_pow(exp - 9).map_or(0, |d| units / d)
        }
    } else {
        (units * 1_000_000_000) >> exp
    };
    let total = ns.saturating_add(i128::from(tsoffset) * 1_000_000_000);
    u64::try_from(total.clamp(0, i128::from(u64::MAX))).unwrap_or(u64::MAX)
}

/// What one block turned out to be.
pub(crate) enum Step {
    /// A packet.
    Record(RawRecord),
    /// An Interface Description Block (the reader's first-link-type may need it).
    Interface,
    /// A section header or any other block.
    Other,
    /// Clean end of input at a block boundary.
    Eof,
}

/// Reader state of a pcapng file.
pub(crate) struct PcapNgState {
    endian: Endian,
    interfaces: Vec<Interface>,
    first_link: Option<LinkType>,
}

impl PcapNgState {
    /// Reads the first Section Header Block (its 4 type bytes were already consumed).
    pub(crate) fn open(src: &mut Source) -> Result<PcapNgState, Damage> {
        let mut st = PcapNgState { endian: Endian::Little, interfaces: Vec::new(), first_link: None };
        st.read_shb(src, 0)?;
        Ok(st)
    }

    /// Link type of the first interface described in the file, if one was seen yet.
    pub(crate) fn first_link(&self) -> Option<LinkType> {
        self.first_link
    }

    /// Reads a Section Header Block whose 4 type bytes (at `start`) were consumed.
    fn read_shb(&mut self, src: &mut Source, start: u64) -> Result<(), Damage> {
        let mut hdr = [0u8; 8];
        let n = src.read_up_to(&mut hdr)?;
        if n < hdr.len() {
            return Err(Damage::corrupt(
                start,
                format!("truncated section header block: {} bytes needed, {} left", MIN_SHB, n + 4),
            ));
        }
        let endian = match (Endian::Little.u32(&hdr, 4), Endian::Big.u32(&hdr, 4)) {
            (Some(BYTE_ORDER_MAGIC), _) => Endian::Little,
            (_, Some(BYTE_ORDER_MAGIC)) => Endian::Big,
            _ => {
                return Err(Damage::corrupt(
                    start,
                    format!(
                        "section header block has a bad byte-order magic 0x{:08x}",
                        Endian::Big.u32(&hdr, 4).unwrap_or(0)
                    ),
                ))
            }
        };
        let len = endian.u32(&hdr, 0).unwrap_or(0);
        check_len(start, len)?;
        if len < MIN_SHB {
            return Err(Damage::corrupt(
                start,
                format!("section header block length {len} is less than {MIN_SHB}"),
            ));
        }
        if len > MAX_PARSED_BLOCK {
            return Err(too_big(start, "section header", len));
        }
        let body = read_rest(src, start, len, 12, endian, true)?;
        let major = endian.u16(&body, 0).unwrap_or(0);
        let minor = endian.u16(&body, 2).unwrap_or(0);
        if major != 1 {
            return Err(Damage::corrupt(start, format!("unsupported pcapng version {major}.{minor}")));
        }
        self.endian = endian;
        self.interfaces.clear();
        Ok(())
    }

    /// Reads one block.
    pub(crate) fn step(&mut self, src: &mut Source) -> Result<Step, Damage> {
        let start = src.pos();
        let mut ty = [0u8; 4];
        let n = src.read_up_to(&mut ty)?;
        if n == 0 {
            return Ok(Step::Eof);
        }
        if n < ty.len() {
            return Err(Damage::corrupt(
                start,
                format!("truncated block header: {MIN_BLOCK} bytes needed, {n} left"),
            ));
        }
        let e = self.endian;
        let block_type = e.u32(&ty, 0).unwrap_or(0);
        if block_type == SHB_TYPE {
            self.read_shb(src, start)?;
            return Ok(Step::Other);
        }
        let mut lenb = [0u8; 4];
        let n = src.read_up_to(&mut lenb)?;
        if n < lenb.len() {
            return Err(Damage::corrupt(
                start,
                format!("truncated block header: {MIN_BLOCK} bytes needed, {} left", n + 4),
            ));
        }
        let len = e.u32(&lenb, 0).unwrap_or(0);
        check_len(start, len)?;
        match block_type {
            IDB_TYPE | EPB_TYPE | SPB_TYPE | PB_TYPE => {
                if len > MAX_PARSED_BLOCK {
                    return Err(too_big(start, block_name(block_type), len));
                }
                let body = read_rest(src, start, len, 8, e, true)?;
                match block_type {
                    IDB_TYPE => self.interface(start, &body).map(|()| Step::Interface),
                    EPB_TYPE => self.epb(start, &body).map(Step::Record),
                    SPB_TYPE => self.spb(start, &body).map(Step::Record),
                    _ => self.pb(start, &body).map(Step::Record),
                }
            }
            _ => {
                read_rest(src, start, len, 8, e, false)?;
                Ok(Step::Other)
            }
        }
    }

    fn interface(&mut self, start: u64, body: &[u8]) -> Result<(), Damage> {
        let e = self.endian;
        let (Some(link), Some(snaplen)) = (e.u16(body, 0), e.u32(body, 4)) else {
            return Err(Damage::corrupt(start, "interface description block shorter than 20 bytes"));
        };
        let mut ifc =
            Interface { link: LinkType::from_linktype(u32::from(link)), snaplen, tsresol: 6, tsoffset: 0 };
        let mut at = 8usize;
        while at < body.len() {
            let (Some(code), Some(olen)) = (e.u16(body, at), e.u16(body, at + 2)) else {
                return Err(Damage::corrupt(start, "truncated interface option header"));
            };
            if code == 0 {
                break;
            }
            let vstart = at + 4;
            let vend = vstart + usize::from(olen);
            let Some(value) = body.get(vstart..vend) else {
                return Err(Damage::corrupt(
                    start,
                    format!("interface option {code} length {olen} overruns the block"),
                ));
            };
            match code {
                OPT_IF_TSRESOL => match value {
                    [r] => ifc.tsresol = *r,
                    _ => {
                        return Err(Damage::corrupt(
                            start,
                            format!("if_tsresol option has length {olen}, expected 1"),
                        ))
                    }
                },
                OPT_IF_TSOFFSET => match e.u64(value, 0) {
                    Some(off) if value.len() == 8 => ifc.tsoffset = off as i64,
                    _ => {
                        return Err(Damage::corrupt(
                            start,
                            format!("if_tsoffset option has length {olen}, expected 8"),
                        ))
                    }
                },
                _ => {}
            }
            at = vstart + usize::from(olen).div_ceil(4) * 4;
        }
        if self.first_link.is_none() {
            self.first_link = Some(ifc.link);
        }
        self.interfaces.push(ifc);
        Ok(())
    }

    fn iface(&self, start: u64, id: u32) -> Result<Interface, Damage> {
        usize::try_from(id).ok().and_then(|i| self.interfaces.get(i)).copied().ok_or_else(|| {
            Damage::corrupt(
                start,
                format!(
                    "packet refers to interface {id}, but only {} interface(s) are described in this section",
                    self.interfaces.len()
                ),
            )
        })
    }

    /// Builds a record from a packet block's fixed fields and the bytes after them.
    fn record(
        start: u64,
        ifc: Interface,
        units: u64,
        caplen: u32,
        orig: u32,
        rest: &[u8],
    ) -> Result<RawRecord, Damage> {
        if caplen > MAX_CAPLEN {
            return Err(Damage::corrupt(
                start,
                format!("captured length {caplen} exceeds the {MAX_CAPLEN}-byte maximum"),
            ));
        }
        let Some(data) = rest.get(..caplen as usize) else {
            return Err(Damage::corrupt(
                start,
                format!("captured length {caplen} exceeds the block ({} bytes of packet data)", rest.len()),
            ));
        };
        Ok(RawRecord {
            link: ifc.link,
            ts_ns: ifc.ts_ns(units),
            orig_len: orig.max(caplen),
            data: data.to_vec(),
        })
    }

    fn epb(&self, start: u64, body: &[u8]) -> Result<RawRecord, Damage> {
        let e = self.endian;
        let (Some(id), Some(hi), Some(lo), Some(cap), Some(orig)) =
            (e.u32(body, 0), e.u32(body, 4), e.u32(body, 8), e.u32(body, 12), e.u32(body, 16))
        else {
            return Err(Damage::corrupt(start, "enhanced packet block shorter than 32 bytes"));
        };
        let ifc = self.iface(start, id)?;
        let units = (u64::from(hi) << 32) | u64::from(lo);
        Self::record(start, ifc, units, cap, orig, body.get(20..).unwrap_or(&[]))
    }

    fn pb(&self, start: u64, body: &[u8]) -> Result<RawRecord, Damage> {
        let e = self.endian;
        let (Some(id), Some(hi), Some(lo), Some(cap), Some(orig)) =
            (e.u16(body, 0), e.u32(body, 4), e.u32(body, 8), e.u32(body, 12), e.u32(body, 16))
        else {
            return Err(Damage::corrupt(start, "packet block shorter than 32 bytes"));
        };
        let ifc = self.iface(start, u32::from(id))?;
        let units = (u64::from(hi) << 32) | u64::from(lo);
        Self::record(start, ifc, units, cap, orig, body.get(20..).unwrap_or(&[]))
    }

    fn spb(&self, start: u64, body: &[u8]) -> Result<RawRecord, Damage> {
        let Some(orig) = self.endian.u32(body, 0) else {
            return Err(Damage::corrupt(start, "simple packet block shorter than 16 bytes"));
        };
        let Some(ifc) = self.interfaces.first().copied() else {
            return Err(Damage::corrupt(
                start,
                "simple packet block before any interface description block in this section",
            ));
        };
        let rest = body.get(4..).unwrap_or(&[]);
        let mut cap = orig.min(u32::try_from(rest.len()).unwrap_or(u32::MAX));
        if ifc.snaplen != 0 {
            cap = cap.min(ifc.snaplen);
        }
        let mut rec = Self::record(start, ifc, 0, cap, orig, rest)?;
        rec.ts_ns = 0;
        Ok(rec)
    }
}

fn block_name(ty: u32) -> &'static str {
    match ty {
        IDB_TYPE => "interface description",
        EPB_TYPE => "enhanced packet",
        SPB_TYPE => "simple packet",
        PB_TYPE => "packet",
        _ => "unknown",
    }
}

fn too_big(start: u64, name: &str, len: u32) -> Damage {
    Damage::corrupt(start, format!("{name} block length {len} exceeds the {MAX_PARSED_BLOCK}-byte maximum"))
}

fn check_len(start: u64, len: u32) -> Result<(), Damage> {
    if len < MIN_BLOCK {
        return Err(Damage::corrupt(start, format!("block total length {len} is less than {MIN_BLOCK}")));
    }
    if len % 4 != 0 {
        return Err(Damage::corrupt(start, format!("block total length {len} is not a multiple of 4")));
    }
    Ok(())
}

/// Reads the rest of a block of total length `len` starting at `start`, of which `done`
/// bytes were consumed, and checks the trailing length. Returns the body (without the
/// trailer) when `keep`, else skips it and returns an empty vector.
fn read_rest(
    src: &mut Source,
    start: u64,
    len: u32,
    done: u32,
    e: Endian,
    keep: bool,
) -> Result<Vec<u8>, Damage> {
    let body_len = u64::from(len.saturating_sub(done).saturating_sub(4));
    let (body, got) = if keep {
        let b = src.read_vec(body_len)?;
        let got = b.len() as u64;
        (b, got)
    } else {
        (Vec::new(), src.skip(body_len)?)
    };
    let mut trailer = [0u8; 4];
    let t = if got == body_len { src.read_up_to(&mut trailer)? } else { 0 };
    if got < body_len || t < trailer.len() {
        let left = u64::from(done) + got + t as u64;
        return Err(Damage::corrupt(start, format!("truncated block: header says {len} bytes, {left} left")));
    }
    let trailing = e.u32(&trailer, 0).unwrap_or(0);
    if trailing != len {
        return Err(Damage::corrupt(
            start,
            format!("trailing block length {trailing} does not match leading length {len}"),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::ts_to_ns;

    #[test]
    fn resolutions() {
        assert_eq!(ts_to_ns(1_500_000, 6, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(1_500_000_000, 9, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(15, 1, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(1_500_000_000_000, 12, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(3, 0x81, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(3 << 20, 0x80 | 21, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(1_000_000, 6, 100), 101_000_000_000);
        assert_eq!(ts_to_ns(1_000_000, 6, -100), 0);
        assert_eq!(ts_to_ns(u64::MAX, 0, 0), u64::MAX);
        assert_eq!(ts_to_ns(u64::MAX, 0xff, 0), 0);
        assert_eq!(ts_to_ns(u64::MAX, 127, 0), 0);
    }
}
