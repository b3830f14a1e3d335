//! `streamnf check`: runs a chain twice over one trace, once as the single-instance
//! reference and once with the requested workers, instances and churn events (or
//! `--random-events K --seed S`), and compares what they produced with `streamnf_runtime::compare` (per-port packet multisets, alerts, final
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
    /// Replay pace of the checked run: max, recorded, or packets per second (the reference
    /// always runs at max: its output does not depend on the pace). A paced run exercises
    /// the root running the chain itself between packets, and gives `at=TIME` events their
    /// meaning.
    #[arg(long, default_value = "max")]
    pub pace: String,
    /// Churn events of the checked run, and its guarantees.
    #[command(flatten)]
    pub churn: crate::churn_args::ChurnArgs,
    /// Write the checked run's summary plus the verdict as JSON to this file.
    #[arg(long = "summary-json")]
    pub summary_json: Option<PathBuf>,
}

/// Runs the check; `Ok(true)` = equivalent.
pub fn check(a: CheckArgs) -> Result<bool, String> {
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
    checked.pace = a.pace.parse().map_err(|e| format!("--pace: {e}"))?;
    checked.keep = true;
    checked.workers = a.workers;
    checked.events = a.churn.resolve(&dag, &instances, &a.trace)?;
    checked.guarantees = a.churn.guarantees_on();
    checked.auto_churn = a.churn.auto_churn;
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
    for e in &summary.events {
        let text = e.get("event").and_then(|v| v.as_str()).unwrap_or("?");
        let outcome = e.get("outcome").and_then(|v| v.as_str()).unwrap_or("");
        println!("event {text}: {outcome}");
    }
    if diff.is_empty() {
        println!(
            "EQUIVALENT: {packets} packets; {} workers, tasks per vertex {:?}, {} events",
            summary.workers,
            summary.vertices.iter().map(|(k, v)| format!("{k}={}", v.tasks.len())).collect::<Vec<_>>(),
            summary.events.len()
        );
        Ok(true)
    } else {
        println!("NOT EQUIVALENT to the single-instance run:");
        for d in &diff {
            println!("  {d}");
        }
        Ok(false)
    }
}
