//! Alerts as JSON lines: `kind`, `vertex`, `task`, `clock`, `ts`, `ts_ns` and the NF's fields.

use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};

/// One alert as written out.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRecord {
    /// Kind, e.g. `syn_flood`.
    pub kind: String,
    /// Vertex that raised it.
    pub vertex: String,
    /// Instance of the vertex.
    pub task: u32,
    /// Logical clock of the packet that caused it.
    pub clock: u64,
    /// Trace timestamp of that packet, ns since the epoch.
    pub ts_ns: u64,
    /// The NF's subject fields.
    pub fields: Map<String, Json>,
}

impl AlertRecord {
    /// The JSON object written as one line.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("kind".into(), Json::from(self.kind.clone()));
        m.insert("vertex".into(), Json::from(self.vertex.clone()));
        m.insert("task".into(), Json::from(self.task));
        m.insert("clock".into(), Json::from(self.clock));
        m.insert("ts".into(), Json::from(self.ts_ns as f64 / 1e9));
        m.insert("ts_ns".into(), Json::from(self.ts_ns));
        for (k, v) in &self.fields {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Json::Object(m)
    }
}

/// Collects alerts, counts them per kind, and optionally writes them as JSON lines.
pub struct AlertSink {
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    per_kind: BTreeMap<String, u64>,
    kept: Option<Vec<AlertRecord>>,
}

impl AlertSink {
    /// A sink writing to `out` (or only counting when `None`); `keep` retains every record
    /// in memory for comparisons.
    pub fn new(out: Option<Box<dyn Write + Send>>, keep: bool) -> AlertSink {
        AlertSink { out: out.map(BufWriter::new), per_kind: BTreeMap::new(), kept: keep.then(Vec::new) }
    }

    /// Records one alert.
    pub fn push(&mut self, rec: AlertRecord) -> io::Result<()> {
        *self.per_kind.entry(rec.kind.clone()).or_insert(0) += 1;
        if let Some(w) = &mut self.out {
            serde_json::to_writer(&mut *w, &rec.to_json())?;
            w.write_all(b"\n")?;
        }
        if let Some(k) = &mut self.kept {
            k.push(rec);
        }
        Ok(())
    }

    /// Counts per kind.
    pub fn per_kind(&self) -> &BTreeMap<String, u64> {
        &self.per_kind
    }

    /// Records kept in memory (when created with `keep`).
    pub fn kept(&self) -> &[AlertRecord] {
        self.kept.as_deref().unwrap_or(&[])
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}
