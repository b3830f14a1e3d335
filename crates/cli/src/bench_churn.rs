//! `streamnf bench churn | duplicates | ordering`: the churn figures of the paper (§5,
//! §7.2, §7.3, Table 2) measured on the parallel engine through `run_trace`.
//!
//! * `churn`: (a) partition handover when the port-scan firewall scales from 1 to 2
//!   instances, (b) failover of the NAT by replay, (c) NAT latency with fault tolerance on
//!   and off at a fixed input rate.
//! * `duplicates`: Table 2, a straggling NAT cloned at 25/50/75 % load, duplicate packets at
//!   the sinks and duplicate state updates with guarantees off and on.
//! * `ordering`: §7.3, trojans found by the trojan analyzer behind three detector
//!   instances slowed down by stragglers, with guarantees off and on.
//!
//! Traces are generated in-process and written to a private temporary directory, removed
//! at the end. Variants alternate round by round (the machine is shared and noisy).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use streamnf_dag::LogicalDag;
use streamnf_packet::trace::create_writer;
use streamnf_packet::LinkType;
use streamnf_runtime::events::EventSpec;
use streamnf_runtime::{run_trace, Pace, RunOptions, RunOutcome};
use streamnf_store::{CachedStore, EmbeddedStore, StateStore};
use streamnf_tracegen::{GenConfig, Generator, ScanConfig, TrojanConfig};

use crate::bench::{chain, NAT_CHAIN, PORT_SCAN_CHAIN, TROJAN_CHAIN};

/// Fixed input rate of the paced runs of `bench churn`, packets per second.
const PACED_PPS: f64 = 200_000.0;
/// Packets of the NAT trace (`churn` b and c, `duplicates`).
const NAT_PACKETS: u64 = 400_000;
/// Flows of the port-scan trace active at once (the paper moves 1,700 flows).
const SCAN_ACTIVE_FLOWS: u32 = 1_700;
/// Packets of the port-scan trace.
const SCAN_PACKETS: u64 = 200_000;
/// Packets of the trojan trace: the 11 hosts' steps fall within the first half of it.
const TROJAN_PACKETS: u64 = 15_000;
/// Trojan-infected hosts (the paper adds the trojan's signature at 11 points).
const TROJAN_HOSTS: u32 = 11;
/// Per-message delay of the straggling NAT in `duplicates` (the paper: 3–10 µs, random).
const NAT_STRAGGLE: &str = "5us";

/// A private temporary directory, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates `streamnf-bench-WHAT-PID` in the system's temporary directory.
    pub(crate) fn new(what: &str) -> Result<TempDir, String> {
        let p = std::env::temp_dir().join(format!("streamnf-bench-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    /// Path of `name` inside it.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Generates a trace with `cfg` into `path` (pcap); returns the packets written.
fn write_trace(cfg: GenConfig, path: &Path) -> Result<u64, String> {
    let t = Instant::now();
    let mut w = create_writer(path, LinkType::Ethernet).map_err(|e| format!("{}: {e}", path.display()))?;
    for p in Generator::new(cfg).map_err(|e| e.to_string())? {
        let len = u32::try_from(p.data.len()).unwrap_or(u32::MAX);
        w.write(p.ts_ns, len, &p.data).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let n = w.finish().map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("generated {n} packets into {} in {:.1} s", path.display(), t.elapsed().as_secs_f64());
    Ok(n)
}

fn nat_trace(dir: &TempDir) -> Result<PathBuf, String> {
    let path = dir.file("nat.pcap");
    write_trace(GenConfig { packets: NAT_PACKETS, flows: 8_000, ..GenConfig::default() }, &path)?;
    Ok(path)
}

/// Chain, trace, worker threads and instances shared by the runs of one measurement.
struct Shape<'a> {
    dag: Arc<LogicalDag>,
    trace: &'a Path,
    workers: usize,
    instances: Vec<(String, u32)>,
    /// Per-flow and read-heavy state cached in front of the store (`CachedStore`).
    cached: bool,
}

/// What changes between the runs of one shape.
struct Variant<'a> {
    events: &'a [String],
    guarantees: bool,
    pace: Pace,
    keep: bool,
}

/// One finished run: its outcome, the store's applied updates and the wall time.
struct Ran {
    out: RunOutcome,
    applied: u64,
    wall_s: f64,
}

/// Runs `shape` as `v` on a fresh embedded store.
fn run(shape: &Shape, v: &Variant) -> Result<Ran, String> {
    let mut opts = RunOptions::new(shape.trace);
    opts.workers = Some(shape.workers);
    opts.instances = shape.instances.clone();
    opts.guarantees = v.guarantees;
    opts.pace = v.pace;
    opts.keep = v.keep;
    opts.events = v.events.iter().map(|e| e.parse::<EventSpec>()).collect::<Result<_, _>>()?;
    let store = Arc::new(EmbeddedStore::new());
    let backend: Arc<dyn StateStore> = if shape.cached {
        Arc::new(CachedStore::with_read_heavy(Arc::clone(&store) as _, shape.dag.read_heavy_objects()))
    } else {
        Arc::clone(&store) as _
    };
    let t = Instant::now();
    let out = run_trace(Arc::clone(&shape.dag), backend, &opts).map_err(|e| e.to_string())?;
    let wall_s = t.elapsed().as_secs_f64();
    if let Some(e) = &out.trace_error {
        return Err(format!("{}: {e}", shape.trace.display()));
    }
    let applied = store.update_counts().map_or(0, |c| c.0);
    Ok(Ran { out, applied, wall_s })
}

/// Field `name` of the `idx`-th event record, as a number.
fn event_num(out: &RunOutcome, idx: usize, name: &str) -> Option<f64> {
    out.summary.events.get(idx)?.get(name)?.as_f64()
}

/// Field `name` of the event record `idx`, as text.
fn event_text(out: &RunOutcome, idx: usize, name: &str) -> String {
    let v = out.summary.events.get(idx).and_then(|e| e.get(name)).and_then(|v| v.as_str());
    v.unwrap_or("").to_string()
}

/// Counter `name` of the run's duplicate report (0 when absent).
fn guarantee(out: &RunOutcome, name: &str) -> u64 {
    out.summary.guarantees.as_ref().and_then(|g| g.get(name)).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// Packets written to all sinks.
fn sink_packets(out: &RunOutcome) -> u64 {
    out.summary.packets_out.values().sum()
}

/// Median of `xs` (NaN when empty).
pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn pace_name(p: Pace) -> String {
    match p {
        Pace::Max => "max".into(),
        Pace::Recorded => "recorded".into(),
        Pace::Pps(r) => format!("{r:.0} pps"),
    }
}

/// Per-run values, rounded, in run order.
pub(crate) fn list(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------
// bench churn

/// `streamnf bench churn`: handover, failover and fault-tolerance latency, `rounds` (at
/// least 5) runs of each variant, alternating.
pub fn churn(rounds: u32) -> Result<(), String> {
    let rounds = rounds.max(5);
    let dir = TempDir::new("churn")?;
    let scan = scan_trace(&dir)?;
    let nat = nat_trace(&dir)?;
    handover(&scan, rounds)?;
    failover(&nat, rounds)?;
    ft_latency(&nat, rounds)
}

/// Handover times of the scale event at one pace, per run.
pub(crate) struct HandoverRuns {
    /// Input pace.
    pub(crate) pace: Pace,
    /// From the event to the last moved partition's release, µs, per run.
    pub(crate) handover_us: Vec<f64>,
    /// Applying the event at the root, µs, per run.
    pub(crate) apply_us: Vec<f64>,
    /// Partitions (of 256) that changed task.
    pub(crate) moved: f64,
}

/// Runs the scale event at each pace, alternating, `rounds` times (`tick` after each run).
fn handover_runs(
    shape: &Shape,
    events: &[String],
    paces: &[Pace],
    rounds: u32,
    tick: &dyn Fn(),
) -> Result<Vec<HandoverRuns>, String> {
    let mut rows: Vec<HandoverRuns> = paces
        .iter()
        .map(|&pace| HandoverRuns { pace, handover_us: Vec::new(), apply_us: Vec::new(), moved: f64::NAN })
        .collect();
    for _ in 0..rounds {
        for row in rows.iter_mut() {
            let r = run(shape, &Variant { events, guarantees: true, pace: row.pace, keep: false })?;
            row.handover_us.push(event_num(&r.out, 0, "handover_us").unwrap_or(f64::NAN));
            row.apply_us.push(event_num(&r.out, 0, "apply_us").unwrap_or(f64::NAN));
            row.moved = event_num(&r.out, 0, "moved_partitions").unwrap_or(f64::NAN);
            tick();
        }
    }
    Ok(rows)
}

/// Prints the median handover and apply times per pace.
fn handover_rows(shape: &Shape, events: &[String], paces: &[Pace], rounds: u32) -> Result<(), String> {
    let rows = handover_runs(shape, events, paces, rounds, &|| {})?;
    println!(
        "  {:<12} {:>12} {:>10} {:>6}   handover_us per run",
        "pace", "handover_us", "apply_us", "moved"
    );
    for r in &rows {
        println!(
            "  {:<12} {:>12.1} {:>10.1} {:>6.0}   {}",
            pace_name(r.pace),
            median(&r.handover_us),
            median(&r.apply_us),
            r.moved,
            list(&r.handover_us)
        );
    }
    Ok(())
}

/// The port-scan trace of the handover, [`SCAN_ACTIVE_FLOWS`] flows active at once.
fn scan_trace(dir: &TempDir) -> Result<PathBuf, String> {
    let scan = dir.file("scan.pcap");
    let cfg = GenConfig {
        packets: SCAN_PACKETS,
        flows: 2 * SCAN_ACTIVE_FLOWS,
        concurrency: SCAN_ACTIVE_FLOWS,
        scan: Some(ScanConfig::default()),
        ..GenConfig::default()
    };
    write_trace(cfg, &scan)?;
    Ok(scan)
}

/// The scale event of the handover measurement.
const SCALE_EVENT: &str = "at=50% scale fw to 2";

fn scan_shape(trace: &Path, cached: bool) -> Result<Shape<'_>, String> {
    Ok(Shape { dag: chain(PORT_SCAN_CHAIN, "port_scan.toml")?, trace, workers: 2, instances: vec![], cached })
}

/// The state move of §7.2 for the paper report: the port-scan firewall's flows move to a
/// second instance mid-trace at 200 kpps, without and with cached state, `rounds` runs
/// each (alternating; `tick` after each run). Returns (uncached, cached).
pub(crate) fn state_move(rounds: u32, tick: &dyn Fn()) -> Result<(HandoverRuns, HandoverRuns), String> {
    let dir = TempDir::new("state-move")?;
    let trace = scan_trace(&dir)?;
    let events = vec![SCALE_EVENT.to_string()];
    let paces = [Pace::Pps(PACED_PPS)];
    let mut plain = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..rounds.max(1) {
        plain.extend(handover_runs(&scan_shape(&trace, false)?, &events, &paces, 1, tick)?);
        cached.extend(handover_runs(&scan_shape(&trace, true)?, &events, &paces, 1, tick)?);
    }
    let merge = |runs: Vec<HandoverRuns>| HandoverRuns {
        pace: Pace::Pps(PACED_PPS),
        moved: runs.first().map_or(f64::NAN, |r| r.moved),
        handover_us: runs.iter().flat_map(|r| r.handover_us.clone()).collect(),
        apply_us: runs.iter().flat_map(|r| r.apply_us.clone()).collect(),
    };
    Ok((merge(plain), merge(cached)))
}

/// (a) The port-scan firewall scales from 1 to 2 instances mid-trace.
fn handover(trace: &Path, rounds: u32) -> Result<(), String> {
    let shape = scan_shape(trace, false)?;
    let events = vec![SCALE_EVENT.to_string()];
    println!(
        "bench churn (a) handover: port_scan (fw -> analyzer), {SCAN_PACKETS} packets, {SCAN_ACTIVE_FLOWS} \
         flows active at once (concurrency {SCAN_ACTIVE_FLOWS}, flows {}, one scanner), \"{}\", 2 workers, \
         median of {rounds}",
        2 * SCAN_ACTIVE_FLOWS,
        events[0]
    );
    handover_rows(&shape, &events, &[Pace::Pps(PACED_PPS), Pace::Max], rounds)?;
    println!("  moved = partitions of 256 that changed task (about half of the active flows)");
    println!("  paper (reference): StreamNF 311 us, OpenNF 5,700 us; target here <= 50 us (embedded store)");
    Ok(())
}

/// Medians of one failover variant: recovery, replayed, apply, suppressed, sink delta.
#[derive(Default)]
struct FailoverRuns {
    recovery: Vec<f64>,
    replayed: Vec<f64>,
    apply: Vec<f64>,
    suppressed: Vec<f64>,
    sink_delta: Vec<f64>,
}

impl FailoverRuns {
    fn add(&mut self, r: &Ran) {
        self.recovery.push(event_num(&r.out, 0, "recovery_us").unwrap_or(f64::NAN));
        self.replayed.push(event_num(&r.out, 0, "replayed").unwrap_or(f64::NAN));
        self.apply.push(event_num(&r.out, 0, "apply_us").unwrap_or(f64::NAN));
        self.suppressed.push(guarantee(&r.out, "duplicate_packets_suppressed") as f64);
        self.sink_delta.push(sink_packets(&r.out) as f64 - r.out.summary.packets_in as f64);
    }
}

/// (b) NAT instance 0 fails mid-trace; a new one takes over after replay.
fn failover(trace: &Path, rounds: u32) -> Result<(), String> {
    let shape =
        Shape { dag: chain(NAT_CHAIN, "nat.toml")?, trace, workers: 2, instances: vec![], cached: false };
    let events = vec!["at=50% fail nat/0".to_string()];
    let paces = [Pace::Pps(PACED_PPS), Pace::Max];
    let mut runs: Vec<FailoverRuns> = paces.iter().map(|_| FailoverRuns::default()).collect();
    for _ in 0..rounds {
        for (i, &pace) in paces.iter().enumerate() {
            runs[i].add(&run(&shape, &Variant { events: &events, guarantees: true, pace, keep: false })?);
        }
    }
    println!(
        "bench churn (b) failover: nat, {NAT_PACKETS} packets, \"{}\" (detected 256 packets later), \
         2 workers, median of {rounds}",
        events[0]
    );
    println!(
        "  {:<12} {:>12} {:>9} {:>9} {:>11} {:>13}   recovery_us per run",
        "pace", "recovery_us", "replayed", "apply_us", "suppressed", "sink - input"
    );
    for (i, &pace) in paces.iter().enumerate() {
        let r = &runs[i];
        println!(
            "  {:<12} {:>12.0} {:>9.0} {:>9.1} {:>11.0} {:>13.0}   {}",
            pace_name(pace),
            median(&r.recovery),
            median(&r.replayed),
            median(&r.apply),
            median(&r.suppressed),
            median(&r.sink_delta),
            list(&r.recovery)
        );
    }
    println!(
        "  suppressed = duplicate packets dropped at the sinks; sink - input = 0: no packet lost or doubled"
    );
    Ok(())
}

/// One latency measurement: p50, p99 (ns) and the achieved input rate.
struct Lat {
    p50: f64,
    p99: f64,
    pps: f64,
}

fn latency_run(shape: &Shape, events: &[String], read_s: f64) -> Result<Lat, String> {
    let r = run(shape, &Variant { events, guarantees: true, pace: Pace::Pps(PACED_PPS), keep: false })?;
    let l = &r.out.summary.latency;
    let pps = r.out.summary.packets_in as f64 / (r.wall_s - read_s).max(1e-9);
    Ok(Lat { p50: l.p50_ns as f64, p99: l.p99_ns as f64, pps })
}

/// Seconds it takes to read `trace` into memory (part of every run's wall time), best of 3.
fn read_time(trace: &Path) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        streamnf_packet::trace::read_all(trace).map_err(|e| e.to_string())?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// (c) NAT latency at a fixed rate, fault tolerance off (no events: the plain parallel
/// engine) and on (a harmless event after the last packet turns it on).
fn ft_latency(trace: &Path, rounds: u32) -> Result<(), String> {
    let shape =
        Shape { dag: chain(NAT_CHAIN, "nat.toml")?, trace, workers: 2, instances: vec![], cached: false };
    let on_events = vec!["at=100% straggle nat/0 delay=0ns".to_string()];
    let read_s = read_time(trace)?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        off.push(latency_run(&shape, &[], read_s)?);
        on.push(latency_run(&shape, &on_events, read_s)?);
    }
    println!(
        "bench churn (c) fault tolerance latency: nat, {NAT_PACKETS} packets paced at {PACED_PPS:.0} pps, \
         2 workers, {rounds} rounds alternating; on = \"{}\"",
        on_events[0]
    );
    println!(
        "  {:<6} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "round", "off p50", "off p99", "on p50", "on p99", "p99 on/off"
    );
    for (i, (a, b)) in off.iter().zip(&on).enumerate() {
        println!(
            "  {:<6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.2}",
            i + 1,
            a.p50,
            a.p99,
            b.p50,
            b.p99,
            b.p99 / a.p99
        );
    }
    let m = |v: &[Lat], f: fn(&Lat) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let min = |v: &[Lat], f: fn(&Lat) -> f64| v.iter().map(f).fold(f64::INFINITY, f64::min);
    for (name, agg) in [("median", &m as &dyn Fn(&[Lat], fn(&Lat) -> f64) -> f64), ("min", &min)] {
        let (off99, on99) = (agg(&off, |l| l.p99), agg(&on, |l| l.p99));
        println!(
            "  {:<6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.2}   (ns; ratio of the {name}s)",
            name,
            agg(&off, |l| l.p50),
            off99,
            agg(&on, |l| l.p50),
            on99,
            on99 / off99
        );
    }
    let ratios: Vec<f64> = off.iter().zip(&on).map(|(a, b)| b.p99 / a.p99).collect();
    println!(
        "  median of the per-round p99 ratios {:.2}; achieved input rate (median): off {:.0} pps, on {:.0} pps; \
         target p99(on)/p99(off) <= 1.2",
        median(&ratios),
        m(&off, |l| l.pps),
        m(&on, |l| l.pps)
    );
    println!("  paper (reference, Figure 12, 28k pps, vs FTMB): p99 13 ms (StreamNF) vs 34 ms (FTMB)");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// bench duplicates

/// Medians of one (load, guarantees) cell of the duplicates table.
#[derive(Default)]
pub(crate) struct DupRuns {
    /// Packets that reached a sink twice, per run.
    pub(crate) dup_packets: Vec<f64>,
    suppressed: Vec<f64>,
    /// Applied updates beyond the reference run's, per run.
    pub(crate) dup_updates: Vec<f64>,
    sink_delta: Vec<f64>,
    replayed: Vec<f64>,
    apply_us: Vec<f64>,
    /// Runs in which the clone, not the straggling original, was kept.
    clone_kept: usize,
}

impl DupRuns {
    fn add(&mut self, r: &Ran, reference_applied: u64) {
        self.dup_packets.push(guarantee(&r.out, "duplicate_packets") as f64);
        self.suppressed.push(guarantee(&r.out, "duplicate_packets_suppressed") as f64);
        self.dup_updates.push(r.applied as f64 - reference_applied as f64);
        self.sink_delta.push(sink_packets(&r.out) as f64 - r.out.summary.packets_in as f64);
        self.replayed.push(event_num(&r.out, 1, "replayed").unwrap_or(f64::NAN));
        self.apply_us.push(event_num(&r.out, 1, "apply_us").unwrap_or(f64::NAN));
        if event_text(&r.out, 1, "outcome").contains("kept nat/1") {
            self.clone_kept += 1;
        }
    }

    fn print(&self, load: u32, rate: f64, on: bool) {
        println!(
            "  {:>4}% {:>11.0} {:>5} {:>12.0} {:>11.0} {:>12.0} {:>13.0} {:>9.0} {:>9.0} {:>6}/{:<3} {}",
            load,
            rate,
            if on { "on" } else { "off" },
            median(&self.dup_packets),
            median(&self.suppressed),
            median(&self.dup_updates),
            median(&self.sink_delta),
            median(&self.replayed),
            median(&self.apply_us),
            self.clone_kept,
            self.dup_packets.len(),
            list(&self.dup_packets)
        );
    }
}

/// The NAT's throughput at max pace (median of `rounds`) and the applied updates of a
/// reference run per guarantees mode (off, on), with the same harmless event as in (c).
fn nat_reference(shape: &Shape, rounds: u32) -> Result<(f64, [u64; 2]), String> {
    let mut pps = Vec::new();
    for _ in 0..rounds {
        let r = run(shape, &Variant { events: &[], guarantees: true, pace: Pace::Max, keep: false })?;
        pps.push(r.out.summary.throughput_pps);
    }
    let harmless = vec!["at=100% straggle nat/0 delay=0ns".to_string()];
    let mut applied = [0u64; 2];
    for (i, on) in [false, true].into_iter().enumerate() {
        let a = run(shape, &Variant { events: &harmless, guarantees: on, pace: Pace::Max, keep: false })?;
        let b = run(shape, &Variant { events: &harmless, guarantees: on, pace: Pace::Max, keep: false })?;
        if a.applied != b.applied {
            return Err(format!("reference runs differ in applied updates: {} vs {}", a.applied, b.applied));
        }
        applied[i] = a.applied;
    }
    Ok((median(&pps), applied))
}

/// Table 2 as measured: the loads, the NAT's measured throughput, the reference runs'
/// applied updates (guarantees off, on) and one cell per (load, guarantees off/on).
pub(crate) struct DupTable {
    /// Offered loads, % of `max_pps`.
    pub(crate) loads: [u32; 3],
    /// The NAT's throughput at max pace, pps.
    pub(crate) max_pps: f64,
    reference: [u64; 2],
    events: Vec<String>,
    /// `cells[load * 2 + guarantees as usize]`.
    pub(crate) cells: Vec<DupRuns>,
}

/// `streamnf bench duplicates`: Table 2, a straggling NAT instance is cloned at 25, 50 and
/// 75 % of the NAT's measured throughput, with guarantees off and on; `rounds` runs each.
pub fn duplicates(rounds: u32) -> Result<(), String> {
    let rounds = rounds.max(1);
    let t = measure_duplicates(rounds, &|| {})?;
    let (max_pps, reference, loads, events, cells) = (t.max_pps, t.reference, t.loads, &t.events, &t.cells);
    println!(
        "bench duplicates: nat, {NAT_PACKETS} packets, 2 workers, events \"{}\" then \"{}\", median of {rounds}",
        events[0], events[1]
    );
    println!(
        "  NAT max throughput (pace max, no events, median of 3): {max_pps:.0} pps; reference applied updates: \
         off {}, on {}",
        reference[0], reference[1]
    );
    println!(
        "  {:>5} {:>11} {:>5} {:>12} {:>11} {:>12} {:>13} {:>9} {:>9} {:>10} dup packets per run",
        "load",
        "offered pps",
        "guar.",
        "dup packets",
        "suppressed",
        "dup updates",
        "sink - input",
        "replayed",
        "apply_us",
        "clone kept"
    );
    for (li, &load) in loads.iter().enumerate() {
        for (gi, on) in [false, true].into_iter().enumerate() {
            cells[li * 2 + gi].print(load, max_pps * f64::from(load) / 100.0, on);
        }
    }
    println!("  dup packets = packets that reached a sink twice (summary.guarantees); dup updates = applied - reference;");
    println!("  replayed, apply_us: of the clone event; clone kept = runs in which the clone replaced the straggler");
    println!("  paper (reference, Table 2, at the downstream scan detector, guarantees off):");
    println!(
        "    25% load: 9,068 packets, 187 updates; 50%: 15,346, 429; 75%: 24,051, 661. StreamNF: 0 and 0"
    );
    Ok(())
}

/// Runs Table 2 (see [`duplicates`]), `tick` after each run.
pub(crate) fn measure_duplicates(rounds: u32, tick: &dyn Fn()) -> Result<DupTable, String> {
    let dir = TempDir::new("duplicates")?;
    let trace = nat_trace(&dir)?;
    let shape = Shape {
        dag: chain(NAT_CHAIN, "nat.toml")?,
        trace: &trace,
        workers: 2,
        instances: vec![],
        cached: false,
    };
    let (max_pps, reference) = nat_reference(&shape, 3)?;
    let events =
        vec![format!("at=10% straggle nat/0 delay={NAT_STRAGGLE}"), "at=20% clone nat/0".to_string()];
    let loads = [25u32, 50, 75];
    let mut cells: Vec<DupRuns> = (0..loads.len() * 2).map(|_| DupRuns::default()).collect();
    for _ in 0..rounds.max(1) {
        for (li, &load) in loads.iter().enumerate() {
            let pace = Pace::Pps(max_pps * f64::from(load) / 100.0);
            for (gi, on) in [false, true].into_iter().enumerate() {
                let r = run(&shape, &Variant { events: &events, guarantees: on, pace, keep: false })?;
                cells[li * 2 + gi].add(&r, reference[gi]);
                tick();
            }
        }
    }
    Ok(DupTable { loads, max_pps, reference, events, cells })
}

// ---------------------------------------------------------------------------------------
// bench ordering

/// Delay settings W0–W3: per detector instance, the straggle delay in µs (0 = none).
const ORDERING_SETTINGS: [(&str, [u32; 3]); 4] =
    [("W0", [0, 0, 0]), ("W1", [50, 0, 0]), ("W2", [50, 100, 0]), ("W3", [50, 100, 200])];

fn straggle_events(delays: &[u32; 3]) -> Vec<String> {
    let on = delays.iter().enumerate().filter(|(_, &d)| d > 0);
    on.map(|(i, d)| format!("at=0 straggle detector/{i} delay={d}us")).collect()
}

fn describe(delays: &[u32; 3]) -> String {
    let parts: Vec<String> =
        delays.iter().enumerate().filter(|(_, &d)| d > 0).map(|(i, d)| format!("/{i} +{d}us")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// (infected hosts alerted, other hosts alerted) from the run's `trojan` alerts.
fn trojans_found(out: &RunOutcome) -> (usize, usize) {
    let infected: BTreeSet<String> = (0..TROJAN_HOSTS).map(|i| format!("10.0.0.{}", 10 + i)).collect();
    let alerted: BTreeSet<String> = out
        .report
        .alert_records
        .iter()
        .filter(|a| a.kind == "trojan")
        .filter_map(|a| a.fields.get("host").and_then(|h| h.as_str()).map(str::to_string))
        .collect();
    let good = alerted.intersection(&infected).count();
    (good, alerted.len() - good)
}

/// Detected counts of one (setting, guarantees) cell, per run.
#[derive(Default)]
pub(crate) struct OrderRuns {
    /// Infected hosts alerted, per run.
    pub(crate) found: Vec<usize>,
    /// Other hosts alerted, per run.
    pub(crate) false_alerts: Vec<usize>,
}

impl OrderRuns {
    fn cell(&self) -> String {
        let f: Vec<f64> = self.found.iter().map(|&x| x as f64).collect();
        let runs = self.found.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ");
        let fp: usize = self.false_alerts.iter().sum();
        format!("{:>2.0}/{TROJAN_HOSTS} [{runs}] fp {fp}", median(&f))
    }
}

/// `streamnf bench ordering`: §7.3, the trojan chain with 3 detector instances, some of
/// them straggling; trojans found out of 11 with guarantees on and off, `rounds` runs each.
pub fn ordering(rounds: u32) -> Result<(), String> {
    let rounds = rounds.max(1);
    let cells = measure_ordering(rounds, &|| {})?;
    print_ordering(&cells, rounds);
    Ok(())
}

/// Delay settings of [`measure_ordering`]'s cells: (name, delay per detector instance, µs).
pub(crate) fn ordering_settings() -> &'static [(&'static str, [u32; 3])] {
    &ORDERING_SETTINGS
}

/// Trojan-infected hosts of the ordering trace.
pub(crate) const ORDERING_TROJANS: u32 = TROJAN_HOSTS;

/// Runs §7.3 (see [`ordering`]): one cell per (setting, guarantees on/off), `rounds` runs
/// each, `tick` after each run; `cells[setting * 2]` is on, `+ 1` off.
pub(crate) fn measure_ordering(rounds: u32, tick: &dyn Fn()) -> Result<Vec<OrderRuns>, String> {
    let rounds = rounds.max(1);
    let dir = TempDir::new("ordering")?;
    let trace = dir.file("trojan.pcap");
    let trojan = Some(TrojanConfig { hosts: TROJAN_HOSTS, ..TrojanConfig::default() });
    write_trace(GenConfig { packets: TROJAN_PACKETS, trojan, ..GenConfig::default() }, &trace)?;
    let instances = vec![("detector".to_string(), 3)];
    let shape = Shape {
        dag: chain(TROJAN_CHAIN, "trojan.toml")?,
        trace: &trace,
        workers: 4,
        instances,
        cached: false,
    };
    let mut cells: Vec<OrderRuns> = (0..ORDERING_SETTINGS.len() * 2).map(|_| OrderRuns::default()).collect();
    for _ in 0..rounds {
        for (si, (_, delays)) in ORDERING_SETTINGS.iter().enumerate() {
            let events = straggle_events(delays);
            for (gi, on) in [true, false].into_iter().enumerate() {
                let r =
                    run(&shape, &Variant { events: &events, guarantees: on, pace: Pace::Max, keep: true })?;
                let (good, bad) = trojans_found(&r.out);
                cells[si * 2 + gi].found.push(good);
                cells[si * 2 + gi].false_alerts.push(bad);
                tick();
            }
        }
    }
    Ok(cells)
}

fn print_ordering(cells: &[OrderRuns], rounds: u32) {
    println!(
        "bench ordering: trojan (detector x3 -> analyzer), {TROJAN_PACKETS} packets, {TROJAN_HOSTS} trojan hosts \
         + 1 decoy, 4 workers (one per straggler: delays >= 50us sleep), pace max, median of {rounds} [per run]"
    );
    println!(
        "  {:<4} {:<31} {:<30} {:<30}",
        "W", "detector stragglers (packet 0)", "guarantees on", "guarantees off"
    );
    for (si, (name, delays)) in ORDERING_SETTINGS.iter().enumerate() {
        println!(
            "  {:<4} {:<31} {:<30} {:<30}",
            name,
            describe(delays),
            cells[si * 2].cell(),
            cells[si * 2 + 1].cell()
        );
    }
    println!("  fp = alerts for hosts that are not infected (the decoy), summed over runs");
    println!("  paper (reference): StreamNF 11/11 in W1-W3; OpenNF misses 7, 10, 11 (finds 4, 1, 0)");
}
