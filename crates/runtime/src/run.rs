//! `run_trace`: read a trace into memory, replay it through an engine at the chosen pace
//! with a progress bar, and summarise. One worker with one instance per vertex runs the
//! reference [`Engine`] (the single-instance semantics every other run must match); any
//! other shape runs the [`ParallelEngine`]. A damaged trace still has its packets before
//! the damage processed; the error is returned beside the summary.

use crate::engine::{Engine, EngineConfig, EngineReport};
use crate::events::{Action, EventSpec, Schedule};
use crate::pace::{Pace, Pacer};
use crate::parallel::{ParallelConfig, ParallelEngine};
use crate::summary::Summary;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use streamnf_dag::LogicalDag;
use streamnf_packet::trace::{read_all, TraceError};
use streamnf_packet::LinkType;
use streamnf_store::StateStore;

/// Options of one run.
pub struct RunOptions {
    /// Input trace (pcap or pcapng).
    pub trace: PathBuf,
    /// Directory for one capture per sink port.
    pub out_dir: Option<PathBuf>,
    /// Write pcapng instead of pcap.
    pub pcapng: bool,
    /// Alerts file (JSON lines).
    pub alerts: Option<PathBuf>,
    /// Replay pace.
    pub pace: Pace,
    /// Show a progress bar on a terminal for runs longer than a second.
    pub progress: bool,
    /// Keep outputs and alerts in memory (comparisons, tests).
    pub keep: bool,
    /// Worker threads (default: the number of cores).
    pub workers: Option<usize>,
    /// Instances per vertex by vertex name (default: the chain file's, else 1).
    pub instances: Vec<(String, u32)>,
    /// Where the parallel engine's root logs packets in flight.
    pub packet_log: crate::parallel::PacketLogMode,
    /// Churn events (scale, fail, kill, clone, straggle); any event runs the parallel
    /// engine with fault tolerance on.
    pub events: Vec<EventSpec>,
    /// Chain-wide guarantees (default on; off = the naive baseline, parallel engine).
    pub guarantees: bool,
    /// Let the vertex manager's hints scale vertices up to this many instances and clone
    /// stragglers (`None`: only scheduled events).
    pub auto_churn: Option<u32>,
}

impl RunOptions {
    /// True when the run needs fault tolerance (lineages, logged reads, replay): it has
    /// events, automatic churn, or guarantees off. Such a run uses the parallel engine.
    pub fn fault_tolerance(&self) -> bool {
        !self.events.is_empty() || !self.guarantees || self.auto_churn.is_some()
    }

    /// Defaults: no outputs, max pace, no progress bar.
    pub fn new(trace: &Path) -> RunOptions {
        RunOptions {
            trace: trace.to_path_buf(),
            out_dir: None,
            pcapng: false,
            alerts: None,
            pace: Pace::Max,
            progress: false,
            keep: false,
            workers: None,
            instances: Vec::new(),
            packet_log: crate::parallel::PacketLogMode::Local,
            events: Vec::new(),
            guarantees: true,
            auto_churn: None,
        }
    }
}

/// Errors that stop a run before or while it processes packets.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The trace cannot be opened or is not a capture.
    #[error("{0}")]
    Trace(#[from] TraceError),
    /// An output cannot be written.
    #[error("{what}: {err}")]
    Io {
        /// What was being written.
        what: String,
        /// The I/O error.
        err: std::io::Error,
    },
    /// The chain cannot run on this store.
    #[error("{0}")]
    Setup(String),
}

/// What a run produced.
pub struct RunOutcome {
    /// Summary (also for a run ended by a damaged trace).
    pub summary: Summary,
    /// Everything the engine recorded.
    pub report: EngineReport,
    /// The damage that ended the trace early, if any.
    pub trace_error: Option<TraceError>,
    /// Final state of the chain in the store (only with `keep`; empty otherwise).
    pub final_state: std::collections::BTreeMap<String, streamnf_store::Value>,
}

/// Runs `dag` over the trace in `opts` on `store`.
pub fn run_trace(
    dag: Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    opts: &RunOptions,
) -> Result<RunOutcome, RunError> {
    let (records, trace_error) = read_all(&opts.trace)?;
    let records = Arc::new(records);
    for e in &opts.events {
        e.validate(&dag).map_err(RunError::Setup)?;
    }
    if let Some(dir) = &opts.out_dir {
        std::fs::create_dir_all(dir).map_err(|err| RunError::Io {
            what: format!("cannot create output directory {}", dir.display()),
            err,
        })?;
    }
    let alerts_out: Option<Box<dyn std::io::Write + Send>> = match &opts.alerts {
        Some(p) => Some(Box::new(std::fs::File::create(p).map_err(|err| RunError::Io {
            what: format!("cannot create alerts file {}", p.display()),
            err,
        })?)),
        None => None,
    };
    let default_link = records.first().map(|r| r.link).unwrap_or(LinkType::Ethernet);
    let cfg = EngineConfig {
        out_dir: opts.out_dir.clone(),
        pcapng: opts.pcapng,
        alerts_out,
        keep: opts.keep,
        default_link,
    };
    let backend = store.backend_name().to_string();
    let mut engine = AnyEngine::new(&dag, store, cfg, opts)?;
    let total = records.len() as u64;
    let mut schedule = Schedule::new(&opts.events, total, |i| records[i as usize].ts_ns);
    if let AnyEngine::Parallel(p) = &mut engine {
        p.set_replay_input(crate::parallel::replay_input(Arc::clone(&records)));
    }

    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} packets ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let show_bar = opts.progress && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut bar_visible = false;
    let mut pacer = Pacer::new(opts.pace);
    let io_err = |err| RunError::Io { what: "writing outputs".into(), err };
    for (i, rec) in records.iter().enumerate() {
        while let Some(ev) = schedule.next_before(i as u64) {
            engine.apply_event(ev, i as u64).map_err(io_err)?;
        }
        if !pacer.time_to(i as u64, rec.ts_ns).is_zero() {
            // The next packet is not due yet: hand over what is batched before waiting,
            // not after (a paced packet would otherwise wait out the gap in the root).
            engine.before_idle();
        }
        let waited = pacer.wait(i as u64, rec.ts_ns);
        engine.add_idle(waited);
        engine.process_frame(rec.link, &rec.data, rec.ts_ns, rec.orig_len).map_err(io_err)?;
        if i % 4096 == 0 {
            if show_bar && !bar_visible && started.elapsed() > Duration::from_secs(1) {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar_visible = true;
            }
            bar.set_position(i as u64);
        }
    }
    bar.finish_and_clear();
    while let Some(ev) = schedule.next_before(u64::MAX) {
        engine.apply_event(ev, total).map_err(io_err)?;
    }
    let store = Arc::clone(engine.store());
    let report = engine.finish().map_err(io_err)?;
    let final_state = if opts.keep { store.snapshot(dag.id) } else { Default::default() };
    let mut summary = Summary::from_report(&dag, &opts.trace.display().to_string(), &backend, &report);
    summary.trace_error = trace_error.as_ref().map(|e| e.to_string());
    Ok(RunOutcome { summary, report, trace_error, final_state })
}

/// The reference engine or the parallel one, chosen by the run's shape (one value per
/// run: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum AnyEngine {
    Reference(Engine),
    Parallel(ParallelEngine),
}

impl AnyEngine {
    fn new(
        dag: &Arc<LogicalDag>,
        store: Arc<dyn StateStore>,
        cfg: EngineConfig,
        opts: &RunOptions,
    ) -> Result<AnyEngine, RunError> {
        let workers = opts.workers.unwrap_or_else(|| ParallelConfig::default().workers).max(1);
        let mut instances: Vec<u32> = dag.vertices.iter().map(|v| v.instances).collect();
        for (name, n) in &opts.instances {
            let Some(v) = dag.vertex_id(name) else {
                return Err(RunError::Setup(format!(
                    "--instances {name}={n}: no vertex `{name}` in chain {}",
                    dag.name
                )));
            };
            instances[v] = (*n).max(1);
        }
        let churn = opts.fault_tolerance();
        if workers == 1 && instances.iter().all(|&n| n == 1) && !churn {
            return Engine::new(Arc::clone(dag), store, cfg)
                .map(AnyEngine::Reference)
                .map_err(RunError::Setup);
        }
        let mut slots = event_slots(dag, &instances, &opts.events);
        if let Some(max) = opts.auto_churn {
            // Room to scale every vertex to `max`, plus one clone.
            for s in slots.iter_mut() {
                *s = (*s).max(max.saturating_add(1));
            }
        }
        let par = ParallelConfig {
            workers,
            instances,
            packet_log: opts.packet_log,
            slots,
            fault_tolerance: churn,
            guarantees: opts.guarantees,
            auto_churn: opts.auto_churn,
            ..ParallelConfig::default()
        };
        ParallelEngine::new(Arc::clone(dag), store, cfg, par)
            .map(AnyEngine::Parallel)
            .map_err(RunError::Setup)
    }

    fn process_frame(
        &mut self,
        link: LinkType,
        frame: &[u8],
        ts_ns: u64,
        orig_len: u32,
    ) -> std::io::Result<()> {
        match self {
            AnyEngine::Reference(e) => e.process_frame(link, frame, ts_ns, orig_len),
            AnyEngine::Parallel(e) => e.process_frame(link, frame, ts_ns, orig_len),
        }
    }

    fn apply_event(&mut self, ev: &EventSpec, packet: u64) -> std::io::Result<()> {
        match self {
            AnyEngine::Reference(_) => {
                Err(std::io::Error::other(format!("event `{}`: events need the parallel engine", ev.text)))
            }
            AnyEngine::Parallel(e) => e.apply_event(ev, packet),
        }
    }

    fn before_idle(&mut self) {
        if let AnyEngine::Parallel(e) = self {
            e.before_idle();
        }
    }

    fn add_idle(&mut self, d: Duration) {
        match self {
            AnyEngine::Reference(e) => e.add_idle(d),
            AnyEngine::Parallel(e) => e.add_idle(d),
        }
    }

    fn store(&self) -> &Arc<dyn StateStore> {
        match self {
            AnyEngine::Reference(e) => e.store(),
            AnyEngine::Parallel(e) => e.store(),
        }
    }

    fn finish(self) -> std::io::Result<EngineReport> {
        match self {
            AnyEngine::Reference(e) => e.finish(),
            AnyEngine::Parallel(e) => e.finish(),
        }
    }
}

/// Task slots each vertex needs for `events`: its largest instance count over the schedule
/// plus one per clone (a clone runs beside its original until one is retired).
pub fn event_slots(dag: &LogicalDag, instances: &[u32], events: &[EventSpec]) -> Vec<u32> {
    let mut most: Vec<u32> = instances.to_vec();
    let mut clones = vec![0u32; most.len()];
    for e in events {
        let Some(v) = dag.vertex_id(e.action.vertex()) else { continue };
        match &e.action {
            Action::Scale { to, .. } => {
                most[v] = most[v].max(*to);
            }
            Action::Clone { .. } => clones[v] += 1,
            _ => {}
        }
    }
    most.iter().zip(&clones).map(|(m, c)| m + c).collect()
}
