//! Figure 10: per-packet processing time of the NAT, the port-scan detector, the trojan
//! detector and the HTTP proxy in the paper's four state models, on the embedded store and
//! on Redis.
//!
//! The models (§7, "State management"): *T*, the traditional NF with state in a local map
//! (`LocalStore`); *EO*, externalized state where every operation waits for the store's
//! answer; *EO + C*, with per-flow state cached at its owner and read-heavy objects cached
//! with invalidation (`CachedStore`); *EO + C + NA*, also not waiting for updates'
//! answers (non-blocking updates pipelined in the background). On the embedded store an
//! update is applied in place, so EO + C and EO + C + NA take the same path.
//!
//! Each chain runs on the single-instance engine over the same packets; a packet's time is
//! from the root taking it to the chain finishing with it (one packet in 8 is timed). The
//! paper times one NF from receiving a packet to finishing it; for a one-NF chain the two
//! differ by the root's parsing and the sink's accounting, the same in every model.

use std::sync::Arc;

use indicatif::ProgressBar;
use streamnf_dag::LogicalDag;
use streamnf_packet::trace::RawRecord;
use streamnf_store::{CachedStore, EmbeddedStore, LocalStore, RedisOptions, StateStore};

use super::plot::{cdf_svg, CdfSeries, Marker};
use super::report::Section;
use super::{Ctx, Traffic};
use crate::bench::{chain, reference_run, HTTP_PROXY_CHAIN, NAT_CHAIN, PORT_SCAN_CHAIN, TROJAN_CHAIN};

/// The four models, in the paper's order.
#[derive(Clone, Copy, PartialEq)]
enum Model {
    Local,
    Externalized,
    Caching,
    NoWait,
}

impl Model {
    const ALL: [Model; 4] = [Model::Local, Model::Externalized, Model::Caching, Model::NoWait];

    fn name(self) -> &'static str {
        match self {
            Model::Local => "T (local state)",
            Model::Externalized => "EO (externalized)",
            Model::Caching => "EO + C (caching)",
            Model::NoWait => "EO + C + NA (no wait for ACK)",
        }
    }
}

/// One NF of the figure: its chain and what the paper says about it.
struct Nf {
    name: &'static str,
    file: &'static str,
    chain: &'static str,
    /// The paper's reading of its panel (quoted in the report).
    paper: &'static str,
    /// The paper's median with every optimisation, µs, when it gives one.
    paper_best_us: Option<f64>,
    /// The traffic it is fed (generated input).
    traffic: Traffic,
}

const NFS: [Nf; 4] = [
    Nf {
        name: "NAT",
        file: "nat",
        chain: NAT_CHAIN,
        paper: "EO adds 130 µs to the median (two round trips: port mapping, stats); caching takes 84 µs off; \
                not waiting for the ACK brings the median to 3.5 µs",
        paper_best_us: Some(3.5),
        traffic: Traffic::Mixed,
    },
    Nf {
        name: "port-scan detector",
        file: "port-scan",
        chain: PORT_SCAN_CHAIN,
        paper: "no noticeable impact: it does not update state on every packet",
        paper_best_us: None,
        traffic: Traffic::Scan,
    },
    Nf {
        name: "trojan detector",
        file: "trojan",
        chain: TROJAN_CHAIN,
        paper: "no noticeable impact: it does not update state on every packet",
        paper_best_us: None,
        traffic: Traffic::Trojan,
    },
    Nf {
        name: "HTTP proxy",
        file: "proxy",
        chain: HTTP_PROXY_CHAIN,
        paper: "EO adds 70 µs to the median; caching takes 41 µs off; not waiting for the ACK brings it to 1.8 µs",
        paper_best_us: Some(1.8),
        traffic: Traffic::Http,
    },
];

/// One timed run: the latency distribution and its median and 99th percentile, ns.
struct Timed {
    cdf: Vec<(u64, f64)>,
    p50: u64,
    p99: u64,
    samples: u64,
}

fn time_run(dag: &Arc<LogicalDag>, store: Arc<dyn StateStore>, input: &[RawRecord]) -> Result<Timed, String> {
    let rep = reference_run(dag, store, input)?;
    let p = rep.latency.percentiles();
    Ok(Timed { cdf: rep.latency.cdf(200), p50: p.p50_ns, p99: p.p99_ns, samples: p.samples })
}

/// The store of `model` on the embedded store (`redis` false) or on the private Redis.
fn store_for(ctx: &Ctx, dag: &LogicalDag, model: Model, redis: bool) -> Result<Arc<dyn StateStore>, String> {
    let cached = |inner: Arc<dyn StateStore>| -> Arc<dyn StateStore> {
        Arc::new(CachedStore::with_read_heavy(inner, dag.read_heavy_objects()))
    };
    let backend = |wait_for_ack: bool| -> Result<Arc<dyn StateStore>, String> {
        if redis {
            ctx.redis_store("paper-fig10", RedisOptions { wait_for_ack, ..RedisOptions::default() })
        } else {
            Ok(Arc::new(EmbeddedStore::new()))
        }
    };
    Ok(match model {
        Model::Local => Arc::new(LocalStore::new()),
        Model::Externalized => backend(true)?,
        Model::Caching => cached(backend(true)?),
        Model::NoWait => cached(backend(false)?),
    })
}

fn us(ns: u64) -> String {
    if ns < 10_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

/// Runs the figure: 4 NFs × (4 models on the embedded store + 3 on Redis; T is the same
/// run for both).
pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let (embedded_packets, redis_packets): (u64, u64) =
        if ctx.quick { (20_000, 2_000) } else { (100_000, 10_000) };
    bar.set_length((NFS.len() * 7) as u64);
    let mut sec = Section::new("Figure 10: per-packet processing time in the four state models");
    sec.text(
        "Each NF's example chain (`examples/*.toml`) runs on the single-instance engine in the paper's four \
         state models: **T**, the traditional NF with its state in a local map; **EO**, externalized state, \
         every operation waiting for the store's answer; **EO + C**, with per-flow state cached at its \
         owning task and read-heavy objects cached with invalidation; **EO + C + NA**, also sending updates \
         without waiting for their answers. The time of a packet runs from the root taking it to the chain \
         finishing with it (one packet in 8 is timed). On the embedded store an update is applied in place, \
         so EO + C and EO + C + NA take the same path; on Redis every answer is a loopback round trip to a \
         private `redis-server` on the same 2 cores.",
    );
    sec.text(&format!(
        "Each NF gets traffic it works on (generated unless `--trace` was given): the NAT mixed TCP/UDP \
         flows, the port-scan detector the same with two SYN scanners, the trojan detector the same with \
         the trojan's hosts, the proxy HTTP only with repeated URLs. Packets: {embedded_packets} on the \
         embedded store, the first {redis_packets} of them on Redis."
    ));
    let mut rows = Vec::new();
    for (seed, nf) in NFS.iter().enumerate() {
        let dag = chain(nf.chain, nf.file)?;
        let input = ctx.input(nf.traffic, embedded_packets, 10 + seed as u64)?;
        let redis_input: Vec<RawRecord> = input.iter().take(redis_packets as usize).cloned().collect();
        let mut embedded: Vec<(Model, Timed)> = Vec::new();
        let mut on_redis: Vec<(Model, Timed)> = Vec::new();
        for model in Model::ALL {
            bar.set_message(format!("{} {} embedded", nf.name, model.name()));
            embedded.push((model, time_run(&dag, store_for(ctx, &dag, model, false)?, &input)?));
            bar.inc(1);
            if model != Model::Local {
                bar.set_message(format!("{} {} redis", nf.name, model.name()));
                on_redis.push((model, time_run(&dag, store_for(ctx, &dag, model, true)?, &redis_input)?));
                bar.inc(1);
            }
        }
        for (store, runs) in [("embedded", &embedded), ("redis", &on_redis)] {
            for (model, t) in runs.iter() {
                rows.push(vec![
                    nf.name.to_string(),
                    store.to_string(),
                    model.name().to_string(),
                    us(t.p50),
                    us(t.p99),
                    t.samples.to_string(),
                ]);
            }
        }
        let markers: Vec<Marker> = nf
            .paper_best_us
            .map(|x| Marker { label: format!("EO + C + NA median {x} µs"), x_us: x })
            .into_iter()
            .collect();
        let local = embedded.iter().find(|(m, _)| *m == Model::Local).map(|(_, t)| t);
        for (store, runs) in [("the embedded store", &embedded), ("Redis", &on_redis)] {
            let mut series: Vec<CdfSeries> = Vec::new();
            if store == "Redis" {
                if let Some(l) = local {
                    series.push(CdfSeries::from_ns(Model::Local.name(), &l.cdf));
                }
            }
            series.extend(runs.iter().map(|(m, t)| CdfSeries::from_ns(m.name(), &t.cdf)));
            let file =
                format!("fig10-{}-{}.svg", nf.file, if store == "Redis" { "redis" } else { "embedded" });
            cdf_svg(&ctx.plot_path(&file), &format!("Figure 10: {} on {store}", nf.name), &series, &markers)?;
            sec.plot(&format!("{} on {store}", nf.name), &file);
        }
        sec.text(&format!("*Paper ({}):* {}.", nf.name, nf.paper));
        if nf.name == "NAT" {
            let best =
                |runs: &[(Model, Timed)]| runs.iter().find(|(m, _)| *m == Model::NoWait).map(|(_, t)| t.p50);
            let base = local.map_or(0, |t| t.p50);
            if let (Some(e), Some(r)) = (best(&embedded), best(&on_redis)) {
                sec.headline(
                    "NAT median per packet, EO + C + NA (Fig. 10a)",
                    format!("{} embedded, {} Redis", us(e), us(r)),
                    "3.5 µs",
                );
                let over = |x: u64| format!("{:+.2} µs", (x as f64 - base as f64) / 1e3);
                sec.headline(
                    "externalization overhead per packet, NAT median (EO + C + NA − T)",
                    format!("{} embedded, {} Redis", over(e), over(r)),
                    "∼2–3 µs",
                );
            }
        }
    }
    sec.table(&["NF", "store", "model", "median", "p99", "packets timed"], &rows);
    Ok(sec)
}
