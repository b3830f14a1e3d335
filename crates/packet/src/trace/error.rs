//! [`TraceError`]: where a trace file is damaged, and how.

use std::io;
use std::path::PathBuf;

/// What went wrong while opening or reading a trace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceErrorKind {
    /// The file could not be opened.
    #[error("cannot open: {0}")]
    Open(io::Error),
    /// Reading from an opened file failed.
    #[error("read error: {0}")]
    Io(io::Error),
    /// The file holds no bytes at all.
    #[error("empty file")]
    Empty,
    /// The first four bytes are neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (magic 0x{magic:08x})")]
    NotACapture {
        /// The first four bytes, read big-endian (as a hex dump shows them).
        magic: u32,
    },
    /// The file's structure is damaged (truncated, inconsistent lengths, absurd sizes...).
    #[error("{0}")]
    Corrupt(String),
}

/// A trace file could not be opened, or is damaged at a known place.
///
/// Displays as `capture.pcap: byte 1234 (record 17): truncated record: header says 1514
/// bytes, 200 left`, or `capture.pcap: cannot open: ...` for [`TraceErrorKind::Open`].
#[derive(Debug, thiserror::Error)]
#[error("{}{kind}", self.prefix())]
pub struct TraceError {
    /// The trace file (or the name given to [`super::TraceReader::from_reader`]).
    pub path: PathBuf,
    /// Byte offset in the file where the damage starts (start of the damaged record or
    /// block; 0 for header and open errors).
    pub offset: u64,
    /// 0-based index of the damaged record, i.e. the number of good records before it.
    pub record: u64,
    /// What went wrong.
    pub kind: TraceErrorKind,
}

impl TraceError {
    /// Builds an error for `path` at `offset` / `record`.
    pub fn new(path: impl Into<PathBuf>, offset: u64, record: u64, kind: TraceErrorKind) -> Self {
        TraceError { path: path.into(), offset, record, kind }
    }

    /// An open failure for `path`.
    pub fn open(path: impl Into<PathBuf>, err: io::Error) -> Self {
        TraceError::new(path, 0, 0, TraceErrorKind::Open(err))
    }

    fn prefix(&self) -> String {
        match self.kind {
            TraceErrorKind::Open(_) => format!("{}: ", self.path.display()),
            _ => format!("{}: byte {} (record {}): ", self.path.display(), self.offset, self.record),
        }
    }
}

/// Damage found by a format reader: where it starts and what it is. The reader adds the
/// path and record index to make a [`TraceError`].
#[derive(Debug)]
pub(crate) struct Damage {
    pub(crate) offset: u64,
    pub(crate) kind: TraceErrorKind,
}

impl Damage {
    /// Structural damage at `offset`.
    pub(crate) fn corrupt(offset: u64, message: impl Into<String>) -> Damage {
        Damage { offset, kind: TraceErrorKind::Corrupt(message.into()) }
    }

    /// An I/O failure at `offset`.
    pub(crate) fn io(offset: u64, err: io::Error) -> Damage {
        Damage { offset, kind: TraceErrorKind::Io(err) }
    }
}
