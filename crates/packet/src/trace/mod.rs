//! Trace files: pcap and pcapng reading (auto-detected) and writing.
//!
//! This module owns the capture file formats: it turns the bytes of a pcap (µs or ns,
//! either byte order) or pcapng file (any number of sections and interfaces, Enhanced,
//! Simple and obsolete Packet Blocks) into [`RawRecord`]s, one at a time through a
//! buffered [`TraceReader`], and writes packets back out with a [`CaptureWriter`]
//! ([`PcapWriter`], [`PcapNgWriter`], [`create_writer`]).
//!
//! It never parses the frames themselves (that is [`crate::parse()`], reached through
//! [`RawRecord::into_packet`]), never loads a whole file behind the caller's back
//! ([`read_all`] is the explicit exception), and never panics on input: damage ends the
//! stream with one [`TraceError`] saying at which byte and record it starts.

mod error;
mod pcap;
mod pcapng;
mod source;
mod writer;

use std::fs::File;
use std::io::Read;
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};

pub use error::{TraceError, TraceErrorKind};
pub use writer::{create_writer, CaptureWriter, PcapNgWriter, PcapWriter};

use crate::headers::LinkType;
use crate::packet::Packet;
use error::Damage;
use pcap::PcapState;
use pcapng::{PcapNgState, Step};
use source::Source;

/// Largest captured length accepted (and written): 262144 bytes, libpcap's maximum
/// snapshot length. Longer records are treated as corruption.
pub const MAX_CAPLEN: u32 = 262_144;

/// One captured frame as stored in a trace, not yet parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// Link type of the interface the frame was captured on.
    pub link: LinkType,
    /// Capture timestamp in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (at least `data.len()`).
    pub orig_len: u32,
    /// Captured bytes.
    pub data: Vec<u8>,
}

impl RawRecord {
    /// Parses the frame into a [`Packet`]. Never panics.
    pub fn into_packet(self) -> Packet {
        Packet::with_orig_len(self.link, self.data, self.ts_ns, self.orig_len)
    }
}

/// The detected file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    /// Classic libpcap format.
    Pcap {
        /// True for the nanosecond variant (magic `0xa1b23c4d`), false for microseconds.
        nanos: bool,
    },
    /// pcapng.
    PcapNg,
}

enum Inner {
    Pcap(PcapState),
    PcapNg(PcapNgState),
}

/// Streaming reader of a pcap or pcapng file, detected from its magic number.
///
/// Iterates over `Result<RawRecord, TraceError>`; after the first error it yields `None`.
pub struct TraceReader {
    path: PathBuf,
    src: Source,
    inner: Inner,
    format: TraceFormat,
    records: u64,
    /// A result read ahead while looking for the first pcapng interface.
    pending: Option<Result<RawRecord, Damage>>,
    done: bool,
}

impl std::fmt::Debug for TraceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceReader")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("records", &self.records)
            .field("offset", &self.src.pos())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl TraceReader {
    /// Opens `path` and reads its file header. Fails for a missing/unreadable file, an
    /// empty file, an unknown magic number or a damaged file header.
    pub fn open(path: impl AsRef<Path>) -> Result<TraceReader, TraceError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| TraceError::open(path, e))?;
        TraceReader::from_reader(path, file)
    }

    /// Reads a trace from any byte stream; `name` is used in errors.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        reader: impl Read + Send + 'static,
    ) -> Result<TraceReader, TraceError> {
        let path = name.into();
        let mut src = Source::new(Box::new(reader));
        let fail = |path: &PathBuf, d: Damage| TraceError::new(path.clone(), d.offset, 0, d.kind);
        let mut magic = [0u8; 4];
        let n = src.read_up_to(&mut magic).map_err(|d| fail(&path, d))?;
        if n == 0 {
            return Err(TraceError::new(path, 0, 0, TraceErrorKind::Empty));
        }
        if n < magic.len() {
            let d = Damage::corrupt(0, format!("file too short ({n} bytes) to be a pcap or pcapng file"));
            return Err(fail(&path, d));
        }
        let (inner, format) = if let Some((endian, nanos)) = pcap::detect(magic) {
            let st = PcapState::open(&mut src, endian, nanos).map_err(|d| fail(&path, d))?;
            let nanos = st.nanos();
            (Inner::Pcap(st), TraceFormat::Pcap { nanos })
        } else if u32::from_be_bytes(magic) == pcapng::SHB_TYPE {
            let st = PcapNgState::open(&mut src).map_err(|d| fail(&path, d))?;
            (Inner::PcapNg(st), TraceFormat::PcapNg)
        } else {
            let kind = TraceErrorKind::NotACapture { magic: u32::from_be_bytes(magic) };
            return Err(TraceError::new(path, 0, 0, kind));
        };
        let mut r = TraceReader { path, src, inner, format, records: 0, pending: None, done: false };
        r.find_first_interface();
        Ok(r)
    }

    /// pcapng: reads blocks up to the first interface description so that
    /// [`TraceReader::link_type`] is known; anything else met on the way is kept for the
    /// iterator.
    fn find_first_interface(&mut self) {
        let Inner::PcapNg(st) = &mut self.inner else {
            return;
        };
        while st.first_link().is_none() {
            match st.step(&mut self.src) {
                Ok(Step::Interface) | Ok(Step::Eof) => return,
                Ok(Step::Other) => {}
                Ok(Step::Record(r)) => {
                    self.pending = Some(Ok(r));
                    return;
                }
                Err(d) => {
                    self.pending = Some(Err(d));
                    return;
                }
            }
        }
    }

    /// The trace's path (or the name given to [`TraceReader::from_reader`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The detected format.
    pub fn format(&self) -> TraceFormat {
        self.format
    }

    /// Link type of the file (pcap) or of its first interface (pcapng); `None` for a
    /// pcapng file whose first interface could not be found before a packet, damage or
    /// the end of the file. Each [`RawRecord`] carries its own interface's link type.
    pub fn link_type(&self) -> Option<LinkType> {
        match &self.inner {
            Inner::Pcap(st) => Some(st.link()),
            Inner::PcapNg(st) => st.first_link(),
        }
    }

    /// Records returned so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// Bytes consumed from the file so far.
    pub fn offset(&self) -> u64 {
        self.src.pos()
    }

    fn next_inner(&mut self) -> Result<Option<RawRecord>, Damage> {
        if let Some(p) = self.pending.take() {
            return p.map(Some);
        }
        match &mut self.inner {
            Inner::Pcap(st) => st.next(&mut self.src),
            Inner::PcapNg(st) => loop {
                match st.step(&mut self.src)? {
                    Step::Record(r) => return Ok(Some(r)),
                    Step::Eof => return Ok(None),
                    Step::Interface | Step::Other => {}
                }
            },
        }
    }
}

impl Iterator for TraceReader {
    type Item = Result<RawRecord, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_inner() {
            Ok(Some(r)) => {
                self.records += 1;
                Some(Ok(r))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(d) => {
                self.done = true;
                Some(Err(TraceError::new(self.path.clone(), d.offset, self.records, d.kind)))
            }
        }
    }
}

impl FusedIterator for TraceReader {}

/// Reads a whole trace into memory (for replay): the records before any damage, and the
/// damage if there was some. Open errors (missing file, empty file, unknown magic,
/// damaged file header) are returned as `Err`.
pub fn read_all(path: impl AsRef<Path>) -> Result<(Vec<RawRecord>, Option<TraceError>), TraceError> {
    let reader = TraceReader::open(path)?;
    let mut out = Vec::new();
    for r in reader {
        match r {
            Ok(rec) => out.push(rec),
            Err(e) => return Ok((out, Some(e))),
        }
    }
    Ok((out, None))
}
