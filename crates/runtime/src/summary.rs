//! The run summary: `--summary-json` (the DESIGN.md contract) and the human summary on stderr.

use crate::engine::EngineReport;
use crate::stats::{LatencySummary, TaskStats};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Per-vertex counters plus each task's.
#[derive(Clone, Debug, Serialize)]
pub struct VertexSummary {
    /// NF type.
    pub nf: String,
    /// Totals over the vertex's tasks.
    #[serde(flatten)]
    pub totals: TaskStats,
    /// Per task (instance), in instance order.
    pub tasks: Vec<TaskStats>,
}

/// One run's summary.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Chain name.
    pub chain: String,
    /// Input trace.
    pub trace: String,
    /// Store backend (`embedded`, `local`, `redis` …).
    pub store: String,
    /// Packets read.
    pub packets_in: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Packets written per sink port.
    pub packets_out: BTreeMap<String, u64>,
    /// Malformed packets by reason.
    pub malformed: BTreeMap<String, u64>,
    /// Malformed policy in force.
    pub malformed_policy: String,
    /// Input packets none of whose descendants reached a sink.
    pub dropped: u64,
    /// Alerts per kind.
    pub alerts: BTreeMap<String, u64>,
    /// Per-vertex counters.
    pub vertices: BTreeMap<String, VertexSummary>,
    /// Packets per second over the processing time.
    pub throughput_pps: f64,
    /// Processing time in seconds (excludes reading the trace).
    pub processing_s: f64,
    /// Per-packet latency through the chain.
    pub latency: LatencySummary,
    /// Scale / fail / straggle events that happened (none without `--event`).
    pub events: Vec<serde_json::Value>,
    /// Duplicate suppression under churn (`null` unless fault tolerance is on): what was
    /// suppressed, or with guarantees off, what went through twice.
    pub guarantees: Option<serde_json::Value>,
    /// Output captures written.
    pub output_files: Vec<String>,
    /// The trace error that ended the run early, if any.
    pub trace_error: Option<String>,
    /// Worker threads.
    pub workers: usize,
    /// Vertex manager (§4.1): per-task windows and the hints it gave (parallel runs).
    pub manager: Option<crate::manager::ManagerReport>,
}

impl Summary {
    /// Builds the summary of a finished run.
    pub fn from_report(
        chain: &streamnf_dag::LogicalDag,
        trace: &str,
        store: &str,
        r: &EngineReport,
    ) -> Summary {
        let mut vertices = BTreeMap::new();
        for v in &chain.vertices {
            let tasks = r.tasks.get(&v.name).cloned().unwrap_or_default();
            let mut totals = TaskStats::default();
            for t in &tasks {
                totals.add(t);
            }
            vertices.insert(v.name.clone(), VertexSummary { nf: v.nf_name.clone(), totals, tasks });
        }
        let secs = r.busy.as_secs_f64();
        Summary {
            chain: chain.name.clone(),
            trace: trace.to_string(),
            store: store.to_string(),
            packets_in: r.chain.packets_in,
            bytes_in: r.chain.bytes_in,
            packets_out: r.chain.packets_out.clone(),
            malformed: r.chain.malformed.clone(),
            malformed_policy: format!("{:?}", chain.malformed).to_lowercase(),
            dropped: r.chain.dropped,
            alerts: r.alerts.clone(),
            vertices,
            throughput_pps: if secs > 0.0 { r.chain.packets_in as f64 / secs } else { 0.0 },
            processing_s: secs,
            latency: r.latency.percentiles(),
            events: r.events.clone(),
            guarantees: r.guarantees.clone(),
            output_files: r.output_files.iter().map(|p| p.display().to_string()).collect(),
            trace_error: None,
            workers: r.workers,
            manager: r.manager.clone(),
        }
    }

    /// The human summary printed on stderr.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "chain {} on {} (store: {})", self.chain, self.trace, self.store);
        let malformed: u64 = self.malformed.values().sum();
        let _ = writeln!(
            s,
            "  packets in {:>10}   malformed {} ({})   dropped {}",
            self.packets_in, malformed, self.malformed_policy, self.dropped
        );
        for (k, v) in &self.malformed {
            let _ = writeln!(s, "    malformed {k:<24} {v}");
        }
        for (k, v) in &self.packets_out {
            let _ = writeln!(s, "  output.{k:<16} {v:>10} packets");
        }
        for e in &self.events {
            let text = e.get("event").and_then(|v| v.as_str()).unwrap_or("?");
            let outcome = e.get("outcome").and_then(|v| v.as_str()).unwrap_or("");
            let _ = writeln!(s, "  event {text}: {outcome}");
        }
        if self.alerts.is_empty() {
            let _ = writeln!(s, "  alerts: none");
        }
        for (k, v) in &self.alerts {
            let _ = writeln!(s, "  alert {k:<20} {v:>10}");
        }
        let _ = writeln!(
            s,
            "  {:<12} {:>5} {:>10} {:>10} {:>8} {:>8} {:>10} {:>6}",
            "vertex", "tasks", "pkts in", "pkts out", "ctx out", "alerts", "state ops", "errors"
        );
        for (name, v) in &self.vertices {
            let t = &v.totals;
            let _ = writeln!(
                s,
                "  {:<12} {:>5} {:>10} {:>10} {:>8} {:>8} {:>10} {:>6}",
                name,
                v.tasks.len(),
                t.packets_in,
                t.packets_out,
                t.contexts_out,
                t.alerts,
                t.state_ops,
                t.nf_errors + t.nf_panics
            );
        }
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  throughput {:.0} pkt/s over {:.3} s; latency p50 {} ns, p99 {} ns, max {} ns",
            self.throughput_pps, self.processing_s, l.p50_ns, l.p99_ns, l.max_ns
        );
        let engine = if self.manager.is_some() { "parallel engine" } else { "reference engine" };
        let _ = writeln!(s, "  {engine}, {} worker thread(s)", self.workers);
        if let Some(m) = &self.manager {
            for (kind, n) in &m.hint_counts {
                let _ = writeln!(s, "  vertex-manager hint {kind:<20} {n:>6} (see --summary-json)");
            }
        }
        for f in &self.output_files {
            let _ = writeln!(s, "  wrote {f}");
        }
        s
    }
}
