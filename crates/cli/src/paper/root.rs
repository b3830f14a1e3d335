//! §7 "Logical clock" and "Packet logging": what the root splitter's bookkeeping costs per
//! packet. The clock is persisted to the store every n packets (n = 1, 10, 100); packets in
//! flight are logged locally (their input index) or in the store (the whole frame). Both on
//! the embedded store and on Redis.

use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use streamnf_runtime::packet_log::ClockSource;
use streamnf_store::{EmbeddedStore, RedisOptions, StateStore};

use super::report::Section;
use super::{Ctx, Traffic};
use crate::bench::root_cost;

/// ns per clock handed out, the clock persisted every `n`.
fn clock_cost(store: Arc<dyn StateStore>, n: u64, packets: u64) -> Result<f64, String> {
    let mut clocks = ClockSource::resume(store, 1, n).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for _ in 0..packets {
        clocks.next().map_err(|e| e.to_string())?;
    }
    Ok(t.elapsed().as_nanos() as f64 / packets.max(1) as f64)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Runs the clock and logging measurements on both stores.
pub fn run(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let (embedded_packets, redis_packets): (u64, u64) =
        if ctx.quick { (300_000, 4_000) } else { (2_000_000, 20_000) };
    let frames = ctx.input(Traffic::Mixed, 20_000, 20)?;
    let stores: [(&str, u64); 2] = [("embedded", embedded_packets), ("redis", redis_packets)];
    bar.set_length(2 * 5);
    let open = |redis: bool, ns: &str| -> Result<Arc<dyn StateStore>, String> {
        if redis {
            ctx.redis_store(ns, RedisOptions::default())
        } else {
            Ok(Arc::new(EmbeddedStore::new()))
        }
    };
    let mut sec = Section::new("Logical clock persistence and packet logging (§7)");
    sec.text(
        "The root hands out one logical clock per packet and writes it to the store every n packets, so \
         that after a crash it resumes above every clock it handed out (§5). It also logs every packet in \
         flight until the chain is done with it: locally (the input index; the frame stays in the input \
         buffer) or in the store (the whole frame). Costs per packet, one thread, best of the run; each \
         clock write waits for the store.",
    );
    let mut clock_rows = Vec::new();
    let mut log_rows = Vec::new();
    let paper_clock = ["62 µs", "6.37 µs", "0.68 µs"];
    let mut headline = Vec::new();
    for (store, packets) in stores {
        let redis = store == "redis";
        let mut per_n = Vec::new();
        for (i, n) in [1u64, 10, 100].into_iter().enumerate() {
            bar.set_message(format!("clock n={n} {store}"));
            let c = clock_cost(open(redis, "paper-clock")?, n, packets)?;
            per_n.push(c);
            clock_rows.push(vec![store.to_string(), n.to_string(), fmt_ns(c), paper_clock[i].to_string()]);
            bar.inc(1);
        }
        if redis {
            headline = per_n.clone();
        }
        bar.set_message(format!("log {store}"));
        let local = root_cost(open(redis, "paper-log")?, &frames, packets, 100, false)?;
        bar.inc(1);
        let stored = root_cost(open(redis, "paper-log")?, &frames, packets, 100, true)?;
        bar.inc(1);
        let clock = per_n[2];
        log_rows.push(vec![
            store.to_string(),
            "local".into(),
            fmt_ns(local),
            fmt_ns((local - clock).max(0.0)),
            "1 µs".into(),
        ]);
        log_rows.push(vec![
            store.to_string(),
            "in the store".into(),
            fmt_ns(stored),
            fmt_ns((stored - clock).max(0.0)),
            "71.5 µs".into(),
        ]);
    }
    sec.table(&["store", "n (persist every)", "clock cost per packet", "paper (Redis)"], &clock_rows);
    sec.table(
        &[
            "store",
            "packet log",
            "clock (n = 100) + log per packet",
            "log alone (minus the clock)",
            "paper (Redis)",
        ],
        &log_rows,
    );
    sec.text(&format!(
        "Packets: {embedded_packets} per measurement on the embedded store, {redis_packets} on Redis. The \
         paper's figures are over a network to Redis; ours to a Redis on the same machine."
    ));
    if let [one, ten, hundred] = headline[..] {
        sec.headline(
            "clock persistence per packet on Redis, n = 1 / 10 / 100",
            format!("{} / {} / {}", fmt_ns(one), fmt_ns(ten), fmt_ns(hundred)),
            "62 / 6.37 / 0.68 µs",
        );
    }
    Ok(sec)
}
