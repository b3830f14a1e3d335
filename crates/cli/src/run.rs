//! `streamnf run`: load a chain, open the store, replay a trace, write outputs, alerts,
//! the human summary (stderr) and `--summary-json`.

use crate::store_url::StoreUrl;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use streamnf_dag::chain_file::load_chain;
use streamnf_runtime::{run_trace, Pace, RunOptions};
use streamnf_store::{EmbeddedStore, LocalStore, StateStore};

/// Arguments of `streamnf run`.
#[derive(Args)]
pub struct RunArgs {
    /// Chain file (TOML), e.g. examples/figure1.toml.
    pub chain: PathBuf,
    /// Input trace: pcap or pcapng (auto-detected).
    #[arg(long)]
    pub trace: PathBuf,
    /// Directory for the output captures, one per sink port (`DIR/NAME.pcap`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write output captures as pcapng instead of pcap.
    #[arg(long)]
    pub pcapng: bool,
    /// Alerts file, one JSON object per line.
    #[arg(long)]
    pub alerts: Option<PathBuf>,
    /// Write the run summary as one JSON object to this file.
    #[arg(long = "summary-json")]
    pub summary_json: Option<PathBuf>,
    /// Write the chain's final state to this file, one JSON object per key (vertex and
    /// object names, owning task, key, value).
    #[arg(long = "state-json")]
    pub state_json: Option<PathBuf>,
    /// State store: embedded, redis://HOST:PORT, redis+cluster://H:P,H:P,...
    #[arg(long, default_value = "embedded")]
    pub store: String,
    /// Cache per-flow state at its owning task and read-heavy shared objects with
    /// invalidation (§4.4); updates still reach the store, logged under their clocks. Pays
    /// off on Redis; on the embedded store it changes nothing but speed.
    #[arg(long)]
    pub cache: bool,
    /// Keep NF state in a plain in-process map without clock tags: the "traditional NF"
    /// baseline, for benchmarks only (no failover or scaling guarantees).
    #[arg(long)]
    pub local_state: bool,
    /// Worker threads [default: the number of cores]. One worker with one instance per
    /// vertex runs the single-instance reference engine.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Instances (tasks) of a vertex, VERTEX=N (repeatable; default: the chain file's
    /// `instances`, else 1). Independent of --workers: 8 tasks run on 2 threads.
    #[arg(long = "instances", value_name = "VERTEX=N")]
    pub instances: Vec<String>,
    /// Where the parallel root logs packets in flight: local (input indexes in memory) or
    /// store (whole frames in the state store; much slower).
    #[arg(long = "packet-log", default_value = "local")]
    pub packet_log: String,
    /// Replay pace: max, recorded, or packets per second.
    #[arg(long, default_value = "max")]
    pub pace: String,
    /// Churn events and guarantees.
    #[command(flatten)]
    pub churn: crate::churn_args::ChurnArgs,
    /// Serve Prometheus metrics on ADDR (host:port).
    #[arg(long)]
    pub metrics: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// No human summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs the chain.
pub fn run(a: RunArgs) -> Result<(), String> {
    let pace: Pace = a.pace.parse().map_err(|e| format!("--pace: {e}"))?;
    let store_url = StoreUrl::parse(&a.store)?;
    let registry = streamnf_nfs::builtin_registry();
    let dag = load_chain(&a.chain, &registry).map_err(|e| e.to_string())?;
    let instances = parse_instances(&a.instances, &dag, &a.chain)?;
    if a.workers == Some(0) {
        return Err("--workers must be at least 1".into());
    }
    let events = a.churn.resolve(&dag, &instances, &a.trace)?;
    let opts = RunOptions {
        trace: a.trace.clone(),
        out_dir: a.out.clone(),
        pcapng: a.pcapng,
        alerts: a.alerts.clone(),
        pace,
        progress: !a.no_progress,
        keep: false,
        workers: a.workers,
        instances,
        packet_log: a.packet_log.parse().map_err(|e| format!("--packet-log: {e}"))?,
        events,
        guarantees: a.churn.guarantees_on(),
        auto_churn: a.churn.auto_churn,
    };
    if opts.fault_tolerance() && (a.local_state || a.cache) {
        return Err(
            "events and --guarantees off need the store's clock logs: not with --local-state or --cache"
                .into(),
        );
    }
    if a.metrics.is_some() {
        return Err("--metrics: the Prometheus exporter is not in this build yet".into());
    }
    let store: Arc<dyn StateStore> = match (store_url, a.local_state) {
        (StoreUrl::Embedded, false) => Arc::new(EmbeddedStore::new()),
        (StoreUrl::Embedded, true) => Arc::new(LocalStore::new()),
        (StoreUrl::Redis { .. } | StoreUrl::Cluster(_), false) => {
            Arc::new(crate::store_url::open_redis(&a.store, &dag.name)?)
        }
        (_, true) => {
            return Err(format!(
                "--local-state keeps state in process: it needs --store embedded, not {}",
                a.store
            ))
        }
    };
    let store: Arc<dyn StateStore> = if a.cache {
        if a.local_state {
            return Err("--cache caches an external store: it cannot go with --local-state".into());
        }
        Arc::new(streamnf_store::CachedStore::with_read_heavy(store, dag.read_heavy_objects()))
    } else {
        store
    };
    let dag = Arc::new(dag);
    let outcome = run_trace(Arc::clone(&dag), Arc::clone(&store), &opts).map_err(|e| e.to_string())?;
    if let Some(p) = &a.state_json {
        crate::state_dump::write_state(p, &dag, &store.snapshot(dag.id))?;
    }
    if !a.quiet {
        eprint!("{}", outcome.summary.human());
    }
    if let Some(p) = &a.summary_json {
        let json = serde_json::to_string_pretty(&outcome.summary).map_err(|e| format!("summary: {e}"))?;
        std::fs::write(p, json + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    match outcome.trace_error {
        Some(e) => Err(format!("{e} (the {} packets before it were processed)", outcome.summary.packets_in)),
        None => Ok(()),
    }
}

/// Parses `--instances VERTEX=N` flags against the chain's vertices.
pub(crate) fn parse_instances(
    specs: &[String],
    dag: &streamnf_dag::LogicalDag,
    chain: &std::path::Path,
) -> Result<Vec<(String, u32)>, String> {
    let mut instances = Vec::new();
    for spec in specs {
        let (v, n) = spec.split_once('=').ok_or_else(|| format!("--instances {spec}: expected VERTEX=N"))?;
        if dag.vertex_id(v).is_none() {
            let names: Vec<&str> = dag.vertices.iter().map(|x| x.name.as_str()).collect();
            return Err(format!(
                "--instances {spec}: no vertex `{v}` in {} (vertices: {})",
                chain.display(),
                names.join(", ")
            ));
        }
        match n.parse::<u32>() {
            Ok(n @ 1..=4096) => instances.push((v.to_string(), n)),
            _ => return Err(format!("--instances {spec}: N must be an integer from 1 to 4096")),
        }
    }
    Ok(instances)
}
