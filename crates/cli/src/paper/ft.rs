//! Figure 12: per-packet latency with fault tolerance at a fixed input rate (28,000
//! packets/s, as in the paper), streamnf against an FTMB-style baseline.
//!
//! The baseline is a mode of this experiment (FTMB, Sherry et al. 2015, as the paper
//! describes it): the traditional NAT keeps its state locally (`LocalStore`), every input
//! packet is copied into an input log, and every [`CHECKPOINT_EVERY`] processing stops
//! while the whole local state is copied (`LocalStore::checkpoint`) and the log is cut.
//! Packets that arrive meanwhile wait. Streamnf needs no checkpoint: its NAT state is in the
//! store and the root logs packets in flight.
//!
//! Both run the NAT on the single-instance engine behind the same pacer, and a packet's
//! latency runs from its due time (when it arrives at the pace) to the chain finishing with
//! it, so waiting for a checkpoint counts. The report adds streamnf's parallel engine with
//! fault tolerance on (lineages, logged reads, replay-ready), whose latency runs from the
//! root admitting a packet (at its due time, at this rate) to the sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use streamnf_dag::LogicalDag;
use streamnf_packet::trace::RawRecord;
use streamnf_runtime::events::EventSpec;
use streamnf_runtime::pace::Pacer;
use streamnf_runtime::stats::Latency;
use streamnf_runtime::{run_trace, Engine, EngineConfig, Pace, RunOptions};
use streamnf_store::{EmbeddedStore, LocalStore, StateStore};

use super::plot::{cdf_svg, CdfSeries, Marker};
use super::report::Section;
use super::{Ctx, Traffic};
use crate::bench::{chain, NAT_CHAIN};

/// Input rate, packets per second (the paper's).
const PPS: f64 = 28_000.0;
/// Checkpoint interval of the FTMB-style baseline.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// What one paced run measured.
struct Paced {
    latency: Latency,
    checkpoints: u64,
    checkpoint_time: Duration,
    keys_copied: usize,
}

/// Runs `input` through `dag` at [`PPS`] on `store`; with `ftmb`, also logs every input
/// packet and checkpoints that local store every [`CHECKPOINT_EVERY`].
fn paced(
    dag: &Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    ftmb: Option<&LocalStore>,
    input: &[RawRecord],
) -> Result<Paced, String> {
    let mut engine = Engine::new(Arc::clone(dag), store, EngineConfig::default())?;
    let mut latency = Latency::default();
    let mut input_log: Vec<Vec<u8>> = Vec::new();
    let (mut checkpoints, mut checkpoint_time, mut keys_copied) = (0, Duration::ZERO, 0);
    let mut pacer = Pacer::new(Pace::Pps(PPS));
    let mut next_checkpoint = Instant::now() + CHECKPOINT_EVERY;
    for (i, r) in input.iter().enumerate() {
        let due = pacer.due_at(i as u64, r.ts_ns).unwrap_or_else(Instant::now);
        pacer.wait(i as u64, r.ts_ns);
        if let Some(local) = ftmb {
            if Instant::now() >= next_checkpoint {
                let t = Instant::now();
                let copy = local.checkpoint();
                keys_copied = copy.len();
                input_log.clear();
                checkpoint_time += t.elapsed();
                checkpoints += 1;
                next_checkpoint += CHECKPOINT_EVERY;
            }
            input_log.push(r.data.clone());
        }
        engine.process_frame(r.link, &r.data, r.ts_ns, r.orig_len).map_err(|e| e.to_string())?;
        latency.record(due.elapsed().as_nanos() as u64);
    }
    engine.finish().map_err(|e| e.to_string())?;
    Ok(Paced { latency, checkpoints, checkpoint_time, keys_copied })
}

fn median_u64(xs: &[u64]) -> u64 {
    let mut v = xs.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// Runs streamnf and the baseline at 28 kpps and the parallel engine with fault tolerance.
pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let (packets, rounds): (u64, usize) = if ctx.quick { (28_000, 1) } else { (84_000, 3) };
    bar.set_length(2 * rounds as u64 + 1);
    let dag = chain(NAT_CHAIN, "nat.toml")?;
    let input = ctx.input(Traffic::Mixed, packets, 40)?;
    // Alternating rounds; the CDFs merge them, the p99s are per round.
    let (mut ours, mut ftmb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        bar.set_message("streamnf");
        ours.push(paced(&dag, Arc::new(EmbeddedStore::new()), None, &input)?);
        bar.inc(1);
        bar.set_message("FTMB-style");
        let local = Arc::new(LocalStore::new());
        ftmb.push(paced(&dag, Arc::clone(&local) as Arc<dyn StateStore>, Some(&local), &input)?);
        bar.inc(1);
    }
    let p99s = |runs: &[Paced]| -> Vec<u64> { runs.iter().map(|r| r.latency.percentiles().p99_ns).collect() };
    let p999s =
        |runs: &[Paced]| -> Vec<u64> { runs.iter().map(|r| r.latency.percentiles().p999_ns).collect() };
    let (ours_p99, ftmb_p99) = (median_u64(&p99s(&ours)), median_u64(&p99s(&ftmb)));
    let (ours_p999, ftmb_p999) = (median_u64(&p999s(&ours)), median_u64(&p999s(&ftmb)));
    let merged = |runs: &[Paced]| {
        let mut l = Latency::default();
        for r in runs {
            l.merge(&r.latency);
        }
        l
    };
    let (ours_all, ftmb_all) = (merged(&ours), merged(&ftmb));
    let checkpoints: u64 = ftmb.iter().map(|r| r.checkpoints).sum();
    let checkpoint_time: Duration = ftmb.iter().map(|r| r.checkpoint_time).sum();
    let keys_copied = ftmb.iter().map(|r| r.keys_copied).max().unwrap_or(0);
    bar.set_message("parallel engine, fault tolerance on");
    let trace = ctx.trace_file("fig12", Traffic::Mixed, packets, 40)?;
    let mut opts = RunOptions::new(&trace);
    opts.workers = Some(2);
    opts.pace = Pace::Pps(PPS);
    // An event that changes nothing turns fault tolerance on for the whole run.
    opts.events = vec!["at=100% straggle nat/0 delay=0ns".parse::<EventSpec>()?];
    let par =
        run_trace(Arc::clone(&dag), Arc::new(EmbeddedStore::new()), &opts).map_err(|e| e.to_string())?;
    bar.inc(1);
    let (o, f, p) = (ours_all.percentiles(), ftmb_all.percentiles(), par.report.latency.percentiles());
    let series = [
        CdfSeries::from_ns("streamnf (externalized state)", &ours_all.cdf(400)),
        CdfSeries::from_ns("streamnf, parallel engine, fault tolerance on", &par.report.latency.cdf(400)),
        CdfSeries::from_ns("FTMB-style (local state, input log, checkpoints)", &ftmb_all.cdf(400)),
    ];
    let markers = [
        Marker { label: "StreamNF p99 13 ms".into(), x_us: 13_000.0 },
        Marker { label: "FTMB p99 34 ms".into(), x_us: 34_000.0 },
    ];
    cdf_svg(
        &ctx.plot_path("fig12.svg"),
        "Figure 12: fault tolerance at 28,000 packets/s",
        &series,
        &markers,
    )?;
    let mut sec =
        Section::new("Figure 12: latency with fault tolerance, streamnf vs an FTMB-style baseline (§7.2)");
    sec.text(&format!(
        "The NAT runs at {PPS:.0} packets/s ({packets} generated packets; {rounds} alternating round(s) of each single-instance run, \
         merged in the table and the plot). **streamnf**: state in the embedded \
         store, no checkpoint. **FTMB-style** (a mode of this experiment): the traditional NAT with local state, \
         every input packet copied into an input log, and every {} ms processing stops while the whole local \
         state is copied and the log is cut ({} checkpoints of up to {} keys, {:.0} µs each on average); \
         packets that arrive meanwhile wait. Both on the single-instance engine behind the same pacer; a \
         packet's latency runs from its due time to the chain finishing with it. **Parallel engine, fault \
         tolerance on**: streamnf's parallel engine (2 workers) with lineages, logged reads and the packet log \
         ready to replay, timed from the root admitting the packet to the sink (one in 16).",
        CHECKPOINT_EVERY.as_millis(),
        checkpoints,
        keys_copied,
        checkpoint_time.as_secs_f64() * 1e6 / checkpoints.max(1) as f64
    ));
    let row = |name: &str, l: &streamnf_runtime::stats::LatencySummary, paper: &str| {
        vec![name.to_string(), us(l.p50_ns), us(l.p99_ns), us(l.p999_ns), us(l.max_ns), paper.to_string()]
    };
    let rows = vec![
        row("streamnf (externalized state)", &o, "2.3 µs / 13 ms (StreamNF)"),
        row("streamnf, parallel engine, fault tolerance on", &p, ""),
        row("FTMB-style baseline", &f, "15.3 µs / 34 ms (FTMB)"),
    ];
    sec.table(&["system", "median", "p99", "p99.9", "max", "paper (median / p99)"], &rows);
    sec.text(&format!(
        "A checkpoint holds up the packets that arrive while it runs: about {:.1} packets per checkpoint at \
         this rate, {:.2} % of all packets, so its cost shows beyond the percentile that share reaches.",
        checkpoint_time.as_secs_f64() / checkpoints.max(1) as f64 * PPS,
        checkpoint_time.as_secs_f64() * PPS / (packets as f64 * rounds as f64) * 100.0
    ));
    let list = |xs: Vec<u64>| xs.iter().map(|&x| us(x)).collect::<Vec<_>>().join(", ");
    sec.text(&format!(
        "p99 per round: streamnf {}; FTMB-style {}. p99.9 per round: streamnf {}; FTMB-style {}.",
        list(p99s(&ours)),
        list(p99s(&ftmb)),
        list(p999s(&ours)),
        list(p999s(&ftmb))
    ));
    sec.plot("Figure 12", "fig12.svg");
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    sec.headline(
        "fault tolerance, FTMB-style / streamnf (Fig. 12; median over rounds): p99; p99.9",
        format!(
            "{} / {} = {:.2}×; {} / {} = {:.1}×",
            us(ftmb_p99),
            us(ours_p99),
            ratio(ftmb_p99, ours_p99),
            us(ftmb_p999),
            us(ours_p999),
            ratio(ftmb_p999, ours_p999)
        ),
        "p99 34 ms / 13 ms = 2.6×",
    );
    Ok(sec)
}
