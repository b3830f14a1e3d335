//! Figure 11: per-packet latency with state shared by 2 instances under the paper's "toy"
//! strong consistency — every update of the shared per-host counters is serialised by the
//! store in one global order and the packet waits for it.
//!
//! The NF is [`SharedHostCounter`], defined here for the experiment: per source host, one
//! counter in an object shared by all instances, incremented with a blocking update for
//! every packet. Two instances on two workers, flows split by 5-tuple, so both instances
//! update the counters of most hosts.

use std::sync::Arc;

use indicatif::ProgressBar;
use streamnf_dag::{
    ChainBuilder, NetworkFunction, NfContext, NfError, NfSpec, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::Packet;
use streamnf_runtime::{run_trace, Pace, RunOptions};
use streamnf_store::{EmbeddedStore, RedisOptions, StateStore};

use super::plot::{cdf_svg, CdfSeries, Marker};
use super::report::Section;
use super::{Ctx, Traffic};

/// Counts packets per source host in one object shared by every instance; each increment
/// waits for the store, which serialises all instances' updates (strong consistency).
struct SharedHostCounter;

impl NetworkFunction for SharedHostCounter {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out")],
            state: vec![StateObjectSpec::shared("per_host")],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        if let Some(ip) = pkt.hdr.ip {
            let host = match ip.src {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            };
            ctx.incr(0, &host, 1)?;
        }
        ctx.forward(0);
        Ok(())
    }
}

/// Input rate on the embedded store, packets per second.
const PPS: f64 = 10_000.0;
/// Input rate on Redis, where every update is a loopback round trip to a server sharing the
/// machine's 2 cores: low enough that packets do not queue behind each other.
const REDIS_PPS: f64 = 2_000.0;

/// Runs the shared counter with 2 instances on the embedded store and on Redis.
pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let packets: u64 = if ctx.quick { 10_000 } else { 50_000 };
    bar.set_length(2);
    let dag = Arc::new(
        ChainBuilder::new("shared-counter")
            .vertex("count", Arc::new(SharedHostCounter))
            .edge("input", "count.in")
            .edge("count.out", "output.out")
            .build()
            .map_err(|e| e.to_string())?,
    );
    let redis_packets = packets / 5;
    let mut series = Vec::new();
    let mut rows = Vec::new();
    let mut medians = Vec::new();
    for (name, store, n, pps) in [
        ("embedded store", Arc::new(EmbeddedStore::new()) as Arc<dyn StateStore>, packets, PPS),
        ("Redis", ctx.redis_store("paper-fig11", RedisOptions::default())?, redis_packets, REDIS_PPS),
    ] {
        bar.set_message(name);
        let trace = ctx.trace_file(&format!("fig11-{n}"), Traffic::Mixed, n, 30)?;
        let mut opts = RunOptions::new(&trace);
        opts.workers = Some(2);
        opts.instances = vec![("count".into(), 2)];
        opts.pace = Pace::Pps(pps);
        let out = run_trace(Arc::clone(&dag), store, &opts).map_err(|e| e.to_string())?;
        let l = out.report.latency.percentiles();
        let updates: u64 = out.report.tasks.get("count").map_or(0, |t| t.iter().map(|s| s.state_ops).sum());
        let both = out.report.tasks.get("count").map_or(0, |t| t.iter().filter(|s| s.state_ops > 0).count());
        series.push(CdfSeries::from_ns(&format!("streamnf, {name}"), &out.report.latency.cdf(200)));
        medians.push(format!("{:.1} µs {name}", l.p50_ns as f64 / 1e3));
        rows.push(vec![
            name.to_string(),
            format!("{pps:.0}"),
            format!("{:.1} µs", l.p50_ns as f64 / 1e3),
            format!("{:.1} µs", l.p99_ns as f64 / 1e3),
            updates.to_string(),
            both.to_string(),
            "median 6.8 µs (OpenNF 0.8 ms)".into(),
        ]);
        bar.inc(1);
    }
    let markers = [
        Marker { label: "StreamNF median 6.8 µs".into(), x_us: 6.8 },
        Marker { label: "OpenNF median 0.8 ms".into(), x_us: 800.0 },
    ];
    cdf_svg(
        &ctx.plot_path("fig11.svg"),
        "Figure 11: shared state, strong consistency, 2 instances",
        &series,
        &markers,
    )?;
    let mut sec = Section::new("Figure 11: shared-state updates with strong consistency (§7.2)");
    sec.text(&format!(
        "Two instances of an NF that increments a per-source-host counter for every packet, in one object \
         shared by both instances; every increment waits until the store has applied it, and the store applies \
         all instances' increments to a key one at a time in one order (the paper's \"toy\" strong \
         consistency). Flows are split by 5-tuple, so both instances update most hosts' counters. \
         Generated packets ({packets} on the embedded store, {redis_packets} on Redis) at a fixed rate, 2 \
         workers; a packet's latency runs from the root \
         taking it to the chain finishing with it (one in 16 timed). OpenNF, the paper's comparison, sends \
         every packet through its controller and waits for all instances; it is not run here."
    ));
    sec.table(
        &["store", "packets/s", "median", "p99", "shared updates", "instances that updated", "paper"],
        &rows,
    );
    sec.plot("Figure 11", "fig11.svg");
    sec.headline(
        "shared-state update, per-packet latency median (Fig. 11)",
        medians.join(", "),
        "6.8 µs (OpenNF 0.8 ms)",
    );
    Ok(sec)
}
