//! A buffered byte source that knows its offset, plus bounds-checked integer decoding.

use std::io::{self, BufReader, Read};

use super::error::Damage;

/// Byte order of a trace file (pcap: from the magic; pcapng: per section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endian {
    Little,
    Big,
}

impl Endian {
    fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
        let end = at.checked_add(N)?;
        b.get(at..end)?.try_into().ok()
    }

    /// The `u16` at `at`, or `None` when `b` is too short.
    pub(crate) fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let a = Self::bytes::<2>(b, at)?;
        Some(match self {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        })
    }

    /// The `u32` at `at`, or `None` when `b` is too short.
    pub(crate) fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let a = Self::bytes::<4>(b, at)?;
        Some(match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        })
    }

    /// The `u64` at `at`, or `None` when `b` is too short.
    pub(crate) fn u64(self, b: &[u8], at: usize) -> Option<u64> {
        let a = Self::bytes::<8>(b, at)?;
        Some(match self {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        })
    }
}

/// Buffered reader that counts the bytes consumed so far.
pub(crate) struct Source {
    inner: BufReader<Box<dyn Read + Send>>,
    pos: u64,
}

impl Source {
    pub(crate) fn new(r: Box<dyn Read + Send>) -> Source {
        Source { inner: BufReader::with_capacity(64 * 1024, r), pos: 0 }
    }

    /// Offset of the next byte to be read.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Fills `buf` as far as the input allows; returns the number of bytes read
    /// (less than `buf.len()` only at end of input).
    pub(crate) fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, Damage> {
        let mut filled = 0;
        while let Some(rest) = buf.get_mut(filled..) {
            if rest.is_empty() {
                break;
            }
            match self.inner.read(rest) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Damage::io(self.pos, e)),
            }
        }
        Ok(filled)
    }

    /// Reads up to `n` bytes into a new vector (shorter only at end of input). Memory grows
    /// with the bytes actually present, never with `n` alone.
    pub(crate) fn read_vec(&mut self, n: u64) -> Result<Vec<u8>, Damage> {
        let mut v = Vec::with_capacity(usize::try_from(n.min(64 * 1024)).unwrap_or(0));
        let start = self.pos;
        let res = (&mut self.inner).take(n).read_to_end(&mut v);
        self.pos = start + v.len() as u64;
        match res {
            Ok(_) => Ok(v),
            Err(e) => Err(Damage::io(self.pos, e)),
        }
    }

    /// Skips up to `n` bytes; returns how many were skipped (fewer only at end of input).
    pub(crate) fn skip(&mut self, n: u64) -> Result<u64, Damage> {
        let res = io::copy(&mut (&mut self.inner).take(n), &mut io::sink());
        match res {
            Ok(k) => {
                self.pos += k;
                Ok(k)
            }
            Err(e) => Err(Damage::io(self.pos, e)),
        }
    }
}
