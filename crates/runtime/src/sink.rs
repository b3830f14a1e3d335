//! Sinks: one output capture per sink port, written as the chain's packets arrive.
//!
//! Ports are addressed by index on the per-packet path (resolved once from their names).
//! Files are created lazily on the first packet so the link type is the packets' own; a
//! sink port that received nothing still gets an empty capture at finish, so every
//! declared port has a file.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use streamnf_packet::trace::{create_writer, CaptureWriter};
use streamnf_packet::{LinkType, Packet};

/// A packet as seen at a sink, kept in memory for comparisons.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SinkRecord {
    /// Logical clock of the packet.
    pub clock: u64,
    /// Frame bytes.
    pub data: Vec<u8>,
}

struct SinkPort {
    name: String,
    writer: Option<Box<dyn CaptureWriter>>,
    path: Option<PathBuf>,
    count: u64,
    kept: Vec<SinkRecord>,
}

/// All sink ports of a chain.
pub struct SinkSet {
    keep: bool,
    default_link: LinkType,
    ports: Vec<SinkPort>,
}

impl SinkSet {
    /// Sinks for `names`, writing `DIR/NAME.pcap` (or `.pcapng`) when `dir` is given, and
    /// keeping packets in memory when `keep`.
    pub fn new(
        names: &[String],
        dir: Option<&Path>,
        pcapng: bool,
        keep: bool,
        default_link: LinkType,
    ) -> SinkSet {
        let ext = if pcapng { "pcapng" } else { "pcap" };
        let ports = names
            .iter()
            .map(|n| SinkPort {
                name: n.clone(),
                writer: None,
                path: dir.map(|d| d.join(format!("{n}.{ext}"))),
                count: 0,
                kept: Vec::new(),
            })
            .collect();
        SinkSet { keep, default_link, ports }
    }

    /// Index of sink port `name` (for [`SinkSet::write`]).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// Writes `pkt` to the sink port with index `idx`.
    pub fn write(&mut self, idx: usize, pkt: &Packet) -> io::Result<()> {
        let Some(port) = self.ports.get_mut(idx) else {
            return Err(io::Error::other(format!("no sink port #{idx}")));
        };
        port.count += 1;
        if self.keep {
            port.kept.push(SinkRecord { clock: pkt.meta.clock, data: pkt.data.clone() });
        }
        if let Some(path) = &port.path {
            if port.writer.is_none() {
                port.writer = Some(open(path, pkt.hdr.link)?);
            }
            if let Some(w) = &mut port.writer {
                let orig_len = pkt.orig_len.max(u32::try_from(pkt.data.len()).unwrap_or(u32::MAX));
                w.write(pkt.ts_ns, orig_len, &pkt.data)?;
            }
        }
        Ok(())
    }

    /// Packets written per sink port.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.ports.iter().map(|p| (p.name.clone(), p.count)).collect()
    }

    /// Packets kept per sink port (when created with `keep`).
    pub fn kept(&self) -> BTreeMap<String, Vec<SinkRecord>> {
        self.ports.iter().map(|p| (p.name.clone(), p.kept.clone())).collect()
    }

    /// Removes and returns the packets kept so far, per sink port.
    pub fn take_kept(&mut self) -> BTreeMap<String, Vec<SinkRecord>> {
        self.ports.iter_mut().map(|p| (p.name.clone(), std::mem::take(&mut p.kept))).collect()
    }

    /// Closes every capture (creating empty ones for ports that got nothing); returns the paths.
    pub fn finish(&mut self) -> io::Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for port in self.ports.iter_mut() {
            if let Some(path) = &port.path {
                let w = match port.writer.take() {
                    Some(w) => w,
                    None => open(path, self.default_link)?,
                };
                w.finish()?;
                paths.push(path.clone());
            }
        }
        Ok(paths)
    }
}

fn open(path: &Path, link: LinkType) -> io::Result<Box<dyn CaptureWriter>> {
    create_writer(path, link).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
