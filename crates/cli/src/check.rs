//! `streamnf check`: runs a chain twice over one trace, once as the single-instance
//! reference and once with the requested workers and instances, and compares what they
//! produced with `streamnf_runtime::compare` (per-port packet multisets, alerts, final
//! state). Exit 0 = equivalent, 1 = not (the differences on stdout), 2 = error.

use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use streamnf_dag::chain_file::load_chain;
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::{run_trace, RunOptions};
use streamnf_store::EmbeddedStore;

/// Arguments of `streamnf check`.
#[derive(Args)]
pub struct CheckArgs {
    /// Chain file (TOML).
    pub chain: PathBuf,
    /// Input trace: pcap or pcapng.
    #[arg(long)]
    pub trace: PathBuf,
    /// Worker threads of the checked run [default: the number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Instances of a vertex in the checked run, VERTEX=N (repeatable).
    #[arg(long = "instances", value_name = "VERTEX=N")]
    pub instances: Vec<String>,
    /// Scale/fail/straggle event during the checked run (not in this build yet).
    #[arg(long = "event", value_name = "SPEC")]
    pub events: Vec<String>,
    /// K random events (not in this build yet).
    #[arg(long = "random-events", value_name = "K")]
    pub random_events: Option<u32>,
    /// Seed of the random events.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the checked run's summary plus the verdict as JSON to this file.
    #[arg(long = "summary-json")]
    pub summary_json: Option<PathBuf>,
}

/// Runs the check; `Ok(true)` = equivalent.
pub fn check(a: CheckArgs) -> Result<bool, String> {
    if !a.events.is_empty() || a.random_events.is_some() {
        return Err(
            "--event/--random-events: scale, fail and straggle events are not in this build yet".into()
        );
    }
    if a.workers == Some(0) {
        return Err("--workers must be at least 1".into());
    }
    let registry = streamnf_nfs::builtin_registry();
    let dag = Arc::new(load_chain(&a.chain, &registry).map_err(|e| e.to_string())?);
    let instances = crate::run::parse_instances(&a.instances, &dag, &a.chain)?;
    let mut reference = RunOptions::new(&a.trace);
    reference.keep = true;
    reference.workers = Some(1);
    reference.instances = dag.vertices.iter().map(|v| (v.name.clone(), 1)).collect();
    let mut checked = RunOptions::new(&a.trace);
    checked.keep = true;
    checked.workers = a.workers;
    checked.instances = instances;
    let want =
        run_trace(Arc::clone(&dag), Arc::new(EmbeddedStore::new()), &reference).map_err(|e| e.to_string())?;
    if let Some(e) = &want.trace_error {
        return Err(format!("{e} (a damaged trace cannot be checked)"));
    }
    let got =
        run_trace(Arc::clone(&dag), Arc::new(EmbeddedStore::new()), &checked).map_err(|e| e.to_string())?;
    let summary = got.summary.clone();
    let packets = want.summary.packets_in;
    let diff = differences(
        &RunOutputs::from_report(want.report, want.final_state),
        &RunOutputs::from_report(got.report, got.final_state),
        40,
    );
    if let Some(p) = &a.summary_json {
        let mut j = serde_json::to_value(&summary).map_err(|e| format!("summary: {e}"))?;
        if let Some(o) = j.as_object_mut() {
            o.insert("equivalent".into(), diff.is_empty().into());
            o.insert("differences".into(), diff.clone().into());
        }
        let text = serde_json::to_string_pretty(&j).map_err(|e| format!("summary: {e}"))?;
        std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if diff.is_empty() {
        println!(
            "equivalent: {packets} packets; {} workers, tasks per vertex {:?}",
            summary.workers,
            summary.vertices.iter().map(|(k, v)| format!("{k}={}", v.tasks.len())).collect::<Vec<_>>()
        );
        Ok(true)
    } else {
        println!("NOT equivalent to the single-instance run:");
        for d in &diff {
            println!("  {d}");
        }
        Ok(false)
    }
}
