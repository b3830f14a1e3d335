//! Cache entries: the completed response's record (URL, length, completion clock) and
//! the store keys of its data. Owns the encoding only.

use super::*;

/// Entry format version.
pub(super) const ENTRY_VERSION: u8 = 2;

/// A complete cache entry's descriptor, stored in `cache`: `version ‖ completion clock ‖
/// filler id ‖ length ‖ url`. The response bytes themselves are the list in `data` under
/// `key ‖ filler`, exactly as the fill copied them, so publishing an entry copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Logical clock of the packet that brought the response's last byte.
    pub clock: u64,
    /// Id of the fill that copied the response (second half of its `data` key).
    pub filler: u64,
    /// Length of the response (status line, headers and body) in bytes.
    pub len: u32,
    /// URL identity: origin address key ‖ lower-cased host ‖ path.
    pub url: Vec<u8>,
}

impl Entry {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(25 + self.url.len());
        b.push(ENTRY_VERSION);
        b.extend_from_slice(&self.clock.to_be_bytes());
        b.extend_from_slice(&self.filler.to_be_bytes());
        b.extend_from_slice(&self.len.to_be_bytes());
        put_bytes(&mut b, &self.url);
        b
    }

    /// Inverse of [`Entry::encode`]; `None` for anything it did not write.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        let mut r = Reader(b);
        if r.u8()? != ENTRY_VERSION {
            return None;
        }
        let e = Entry { clock: r.u64()?, filler: r.u64()?, len: r.u32()?, url: r.bytes()? };
        r.0.is_empty().then_some(e)
    }
}

pub(super) fn key8(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

pub(super) fn data_key(key: u64, filler: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&key.to_be_bytes());
    b[8..].copy_from_slice(&filler.to_be_bytes());
    b
}
