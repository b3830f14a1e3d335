//! The churn experiments of §7.2 and §7.3 for the paper report: the state move of the
//! port-scan detector (1,700 flows), Table 2 (duplicates under straggler cloning) and the
//! chain-wide ordering experiment (trojans found under W1–W3). The measurements are those
//! of `streamnf bench churn | duplicates | ordering` (`crate::bench_churn`); this module
//! only picks the rounds and turns the results into report sections.

use indicatif::ProgressBar;

use super::report::Section;
use super::Ctx;
use crate::bench_churn::{
    list, measure_duplicates, measure_ordering, median, ordering_settings, state_move, ORDERING_TROJANS,
};

/// §7.2 "Cross-instance state transfers": the port-scan firewall's flows move to a second
/// instance mid-trace.
pub fn state_move_section(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let rounds = if ctx.quick { 3 } else { 9 };
    bar.set_length(2 * rounds);
    let tick = || bar.inc(1);
    let (plain, cached) = state_move(rounds as u32, &tick)?;
    let mut sec = Section::new("State move: 1,700 flows re-allocated mid-run (§7.2)");
    sec.text(
        "The port-scan detector (firewall → analyzer) runs on a generated trace with 1,700 flows active at \
         once, paced at 200,000 packets/s on the parallel engine (2 workers). Half way through, the firewall \
         scales from 1 to 2 instances: about half of its 256 flow partitions move to the new instance. The \
         move time runs from the scale event to the release of the last moved partition, which happens once \
         the old instance has finished every packet it had for them. No state is copied: per-flow state is \
         keyed by flow partition in the store, so the new owner reads it where it is. With cached state \
         (`CachedStore` in front of the store), the cache is shared by the process's tasks and keyed the same \
         way, so a move needs no flush either.",
    );
    let rows: Vec<Vec<String>> = [("without cached state", &plain), ("with cached state", &cached)]
        .iter()
        .map(|(name, r)| {
            vec![
                name.to_string(),
                format!("{:.1} µs", median(&r.handover_us)),
                format!("{:.1} µs", median(&r.apply_us)),
                format!("{:.0}", r.moved),
                list(&r.handover_us),
                "0.311 ms (OpenNF 5.7 ms)".into(),
            ]
        })
        .collect();
    sec.table(
        &["state", "move time (median)", "applying the event", "partitions moved", "per run (µs)", "paper"],
        &rows,
    );
    sec.headline(
        "state move of 1,700 flows (median, without / with cached state)",
        format!("{:.1} µs / {:.1} µs", median(&plain.handover_us), median(&cached.handover_us)),
        "0.311 ms (OpenNF 5.7 ms)",
    );
    Ok(sec)
}

/// Table 2: duplicates at the sinks and duplicate state updates under straggler cloning.
pub fn duplicates_section(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let rounds = if ctx.quick { 1 } else { 3 };
    bar.set_length(6 * rounds);
    let tick = || bar.inc(1);
    let t = measure_duplicates(rounds as u32, &tick)?;
    let mut sec = Section::new("Table 2: duplicates with and without suppression (§7.3)");
    sec.text(&format!(
        "A NAT instance straggles (5 µs extra per packet) and is cloned (§5.2) while a 400,000-packet trace \
         flows at 25, 50 and 75 % of the NAT's measured throughput ({:.0} packets/s), 2 workers. With \
         guarantees off, the original and the clone both send their output on and both update state; with \
         them on, the sinks and queues drop the copies and the store emulates repeated updates. *Duplicate \
         packets* reached a sink twice; *duplicate updates* are updates applied beyond those of a run without \
         the clone. The paper counts at a downstream port-scan detector; ours at the sinks and in the \
         store. Median of {rounds} run(s).",
        t.max_pps
    ));
    let paper = [("9,068", "187"), ("15,346", "429"), ("24,051", "661")];
    let mut rows = Vec::new();
    for (li, load) in t.loads.iter().enumerate() {
        let (off, on) = (&t.cells[li * 2], &t.cells[li * 2 + 1]);
        rows.push(vec![
            format!("{load} %"),
            format!("{:.0}", median(&off.dup_packets)),
            format!("{:.0}", median(&off.dup_updates)),
            format!("{:.0}", median(&on.dup_packets)),
            format!("{:.0}", median(&on.dup_updates)),
            format!("{} packets, {} updates (without suppression); StreamNF 0, 0", paper[li].0, paper[li].1),
        ]);
    }
    sec.table(
        &["load", "dup packets, off", "dup updates, off", "dup packets, on", "dup updates, on", "paper"],
        &rows,
    );
    let on_total: f64 = (0..t.loads.len()).map(|li| median(&t.cells[li * 2 + 1].dup_packets)).sum();
    let off = |li: usize| median(&t.cells[li * 2].dup_packets);
    sec.headline(
        "duplicate packets at 25/50/75 % load, suppression off → on (Table 2)",
        format!("{:.0} / {:.0} / {:.0} → {on_total:.0} in all", off(0), off(1), off(2)),
        "9,068 / 15,346 / 24,051 → 0",
    );
    Ok(sec)
}

/// §7.3 chain-wide ordering: trojans found behind straggling detector instances.
pub fn ordering_section(ctx: &Ctx, bar: &ProgressBar) -> Result<Section, String> {
    let rounds = if ctx.quick { 1 } else { 3 };
    let settings = ordering_settings();
    bar.set_length((settings.len() * 2 * rounds) as u64);
    let tick = || bar.inc(1);
    let cells = measure_ordering(rounds as u32, &tick)?;
    let mut sec = Section::new("Chain-wide ordering: trojans detected out of 11 (§7.3)");
    sec.text(&format!(
        "The trojan chain runs with 3 detector instances in front of one analyzer; {ORDERING_TROJANS} hosts do the \
         trojan's four steps in order and a decoy does them out of order. In W1–W3 one, two or three detector \
         instances straggle (50, 100, 200 µs extra per packet), so their step reports reach the analyzer \
         late. With guarantees on, the analyzer orders steps by logical clock; with them off, by arrival \
         (what a framework without chain-wide clocks sees). Median of {rounds} run(s); *fp* counts alerts \
         for the decoy."
    ));
    let paper = ["", "11/11 (OpenNF 4/11)", "11/11 (OpenNF 1/11)", "11/11 (OpenNF 0/11)"];
    let mut rows = Vec::new();
    let cell = |c: &crate::bench_churn::OrderRuns| {
        let found: Vec<f64> = c.found.iter().map(|&x| x as f64).collect();
        format!("{:.0}/{ORDERING_TROJANS} (fp {})", median(&found), c.false_alerts.iter().sum::<usize>())
    };
    for (si, (name, delays)) in settings.iter().enumerate() {
        rows.push(vec![
            name.to_string(),
            format!("{delays:?} µs"),
            cell(&cells[si * 2]),
            cell(&cells[si * 2 + 1]),
            paper.get(si).copied().unwrap_or("").to_string(),
        ]);
    }
    sec.table(&["workload", "straggle per instance", "guarantees on", "guarantees off", "paper"], &rows);
    let found = |i: usize| {
        let v: Vec<f64> = cells[i].found.iter().map(|&x| x as f64).collect();
        median(&v)
    };
    let n = settings.len();
    sec.headline(
        "trojans detected out of 11 in W1 / W2 / W3, guarantees on vs off",
        format!(
            "on {:.0} / {:.0} / {:.0}; off {:.0} / {:.0} / {:.0}",
            found(2),
            found(4),
            found(2 * (n - 1)),
            found(3),
            found(5),
            found(2 * (n - 1) + 1)
        ),
        "11 / 11 / 11; OpenNF 4 / 1 / 0",
    );
    Ok(sec)
}
