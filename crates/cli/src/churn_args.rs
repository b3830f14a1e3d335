//! Churn flags shared by `run` and `check`: `--event`, `--events FILE`, `--random-events K
//! --seed S` and `--guarantees on|off`, plus the chain file's `events = [...]`. Turns them
//! into event specs with one clear error per bad spec (naming the flag, file and line).

use clap::Args;
use std::path::{Path, PathBuf};
use streamnf_dag::LogicalDag;
use streamnf_runtime::events::{random_events, EventSpec};

/// Churn flags.
#[derive(Args, Clone, Default)]
pub struct ChurnArgs {
    /// Churn event, e.g. "at=40% scale ids to 3", "at=500000 fail nat/1",
    /// "at=20% straggle scan/0 delay=10us", "at=2s clone nat/0", "at=50% kill ids/1"
    /// (repeatable). WHEN is a packet number, a percentage of the trace or a time after
    /// the first packet (ns, us, ms, s).
    #[arg(long = "event", value_name = "SPEC")]
    pub events: Vec<String>,
    /// File of event specs, one per line (`#` starts a comment).
    #[arg(long = "events", value_name = "FILE")]
    pub events_file: Option<PathBuf>,
    /// K random events (scale up/down, fail, kill, clone, straggle) drawn from --seed.
    #[arg(long = "random-events", value_name = "K")]
    pub random_events: Option<u32>,
    /// Seed of --random-events [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Chain-wide guarantees: on (default), or off for the naive baseline of existing
    /// frameworks (no clock tags, no replay, no duplicate suppression, naive handover).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub guarantees: String,
    /// Let the vertex manager trigger churn: an overloaded task scales its vertex up (to at
    /// most MAX instances), an underloaded one scales it down, a suspected straggler is
    /// cloned. The events that happen are listed in --summary-json.
    #[arg(long = "auto-churn", value_name = "MAX", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub auto_churn: Option<u32>,
}

/// Most instances a random schedule scales a vertex to.
const RANDOM_MAX_INSTANCES: u32 = 4;

impl ChurnArgs {
    /// True when guarantees are on.
    pub fn guarantees_on(&self) -> bool {
        self.guarantees != "off"
    }

    /// Every event of the run: the chain file's, `--events FILE`, `--event`, then the
    /// random ones (which need the trace's packet count).
    pub fn resolve(
        &self,
        dag: &LogicalDag,
        instances: &[(String, u32)],
        trace: &Path,
    ) -> Result<Vec<EventSpec>, String> {
        let mut out = Vec::new();
        for e in &dag.events {
            out.push(e.text.parse::<EventSpec>().map_err(|m| format!("{}: {m}", e.location))?);
        }
        if let Some(f) = &self.events_file {
            let text = std::fs::read_to_string(f).map_err(|e| format!("--events {}: {e}", f.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                out.push(line.parse().map_err(|m| format!("{}:{}: {m}", f.display(), i + 1))?);
            }
        }
        for e in &self.events {
            out.push(e.parse().map_err(|m| format!("--event: {m}"))?);
        }
        for e in &out {
            e.validate(dag)?;
        }
        if let Some(k) = self.random_events {
            let (records, _) = streamnf_packet::trace::read_all(trace).map_err(|e| e.to_string())?;
            let mut start: Vec<u32> = dag.vertices.iter().map(|v| v.instances.max(1)).collect();
            for (name, n) in instances {
                if let Some(v) = dag.vertex_id(name) {
                    start[v] = *n;
                }
            }
            let seed = self.seed.unwrap_or(1);
            out.extend(random_events(dag, &start, k, seed, records.len() as u64, RANDOM_MAX_INSTANCES));
        } else if self.seed.is_some() {
            return Err("--seed goes with --random-events K".into());
        }
        Ok(out)
    }
}
