//! Run counters: per vertex, per task, chain-wide, and the per-packet latency histogram.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use streamnf_packet::{MalformedPolicy, Packet};

/// Counters of one task (an instance of a vertex).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskStats {
    /// Packets received.
    pub packets_in: u64,
    /// Bytes of packets received.
    pub bytes_in: u64,
    /// Context messages received.
    pub contexts_in: u64,
    /// Packets that left on an output port with an edge that admitted them (copies count
    /// once per port; a port with no edge, like an off-path DPI's `out`, sends nothing).
    pub packets_out: u64,
    /// Context messages sent.
    pub contexts_out: u64,
    /// Packets that left on no edge: the NF forwarded them on no port, or only on ports
    /// without an edge that admitted them (a firewall's unconnected `denied` port, say).
    pub dropped: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// State operations issued.
    pub state_ops: u64,
    /// Reads an asynchronous NF's batches fetched ahead (see [`crate::prefetch`]).
    pub prefetched_reads: u64,
    /// Of the NF's reads, those answered from a batch's prefetched values.
    pub prefetch_hits: u64,
    /// Timers fired.
    pub timers: u64,
    /// State-change callbacks delivered (`on_state_change`).
    pub callbacks: u64,
    /// Packets or context messages a timer or a state callback emitted, discarded (neither
    /// has a place in the packet order).
    pub discarded_emits: u64,
    /// Inputs the NF rejected with an error.
    pub nf_errors: u64,
    /// Inputs during which the NF panicked (caught and isolated).
    pub nf_panics: u64,
    /// Time spent inside the NF, ns (estimated from one input in 16).
    pub busy_ns: u64,
    /// Copies from a cloned sender this task had already received, dropped at its queue
    /// (with guarantees off: counted and processed).
    pub duplicates_suppressed: u64,
}

impl TaskStats {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &TaskStats) {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.contexts_in += o.contexts_in;
        self.packets_out += o.packets_out;
        self.contexts_out += o.contexts_out;
        self.dropped += o.dropped;
        self.alerts += o.alerts;
        self.state_ops += o.state_ops;
        self.prefetched_reads += o.prefetched_reads;
        self.prefetch_hits += o.prefetch_hits;
        self.timers += o.timers;
        self.callbacks += o.callbacks;
        self.discarded_emits += o.discarded_emits;
        self.nf_errors += o.nf_errors;
        self.nf_panics += o.nf_panics;
        self.busy_ns += o.busy_ns;
        self.duplicates_suppressed += o.duplicates_suppressed;
    }
}

/// Chain-wide counters.
#[derive(Clone, Debug, Default)]
pub struct ChainStats {
    /// Packets read from the input.
    pub packets_in: u64,
    /// Bytes read from the input.
    pub bytes_in: u64,
    /// Malformed packets by reason.
    pub malformed: BTreeMap<String, u64>,
    /// Input packets none of whose descendants reached a sink.
    pub dropped: u64,
    /// Input packets the malformed policy dropped (included in `dropped`).
    pub dropped_malformed: u64,
    /// Packets written per sink port.
    pub packets_out: BTreeMap<String, u64>,
    /// Input packets no input edge's filter admitted (included in `dropped`).
    pub unmatched_input: u64,
}

impl ChainStats {
    /// Counts an input packet and applies the chain's malformed-packet policy. Returns the
    /// packet's 0-based index in the input and whether the policy drops it (a drop is
    /// counted here too). Shared by both engines' roots.
    pub fn count_input(&mut self, pkt: &Packet, policy: MalformedPolicy) -> (u64, bool) {
        self.packets_in += 1;
        self.bytes_in += pkt.data.len() as u64;
        let mut drop = false;
        if let Some(m) = pkt.malformed {
            *self.malformed.entry(m.as_str().to_string()).or_insert(0) += 1;
            if policy == MalformedPolicy::Drop {
                self.dropped += 1;
                self.dropped_malformed += 1;
                drop = true;
            }
        }
        (self.packets_in - 1, drop)
    }
}

/// True for the one number in each block of `every` consecutive numbers (clocks, input
/// counts) whose packet has its latency measured. Its place in the block is pseudo-random:
/// sampling `n % every == 0` lined the samples up with work the engines do every N packets
/// (the store GC runs every 256), so a quarter of the samples were exactly the packets that
/// waited for it and the percentiles overstated its cost.
pub fn latency_sampled(n: u64, every: u64) -> bool {
    let every = every.max(1);
    let pick = (n / every).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    n % every == pick % every
}

/// Per-packet latency in nanoseconds, 1 ns to 60 s at 3 significant digits.
pub struct Latency {
    hist: Option<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).ok() }
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, ns: u64) {
        if let Some(h) = &mut self.hist {
            let _ = h.record(ns.clamp(1, 60_000_000_000));
        }
    }

    /// Adds `other`'s samples (per-worker histograms merged at the end of a run).
    pub fn merge(&mut self, other: &Latency) {
        if let (Some(h), Some(o)) = (&mut self.hist, &other.hist) {
            let _ = h.add(o);
        }
    }

    /// The distribution as `points` (latency ns, fraction of samples at or below it) pairs
    /// at evenly spaced quantiles `1/points .. 1`, for CDF plots; empty without samples.
    pub fn cdf(&self, points: usize) -> Vec<(u64, f64)> {
        match &self.hist {
            Some(h) if !h.is_empty() => (1..=points.max(1))
                .map(|i| {
                    let q = i as f64 / points.max(1) as f64;
                    (h.value_at_quantile(q), q)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Percentiles p50, p90, p99, p99.9, max and mean, in ns.
    pub fn percentiles(&self) -> LatencySummary {
        match &self.hist {
            Some(h) if !h.is_empty() => LatencySummary {
                samples: h.len(),
                p50_ns: h.value_at_quantile(0.5),
                p90_ns: h.value_at_quantile(0.9),
                p99_ns: h.value_at_quantile(0.99),
                p999_ns: h.value_at_quantile(0.999),
                max_ns: h.max(),
                mean_ns: h.mean(),
            },
            _ => LatencySummary::default(),
        }
    }
}

/// Latency percentiles as reported in summaries.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of packets measured.
    pub samples: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Maximum.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

#[cfg(test)]
mod tests {
    use super::{latency_sampled, Latency};

    #[test]
    fn cdf_rises_to_one_through_the_recorded_values() {
        assert!(Latency::default().cdf(10).is_empty());
        let mut l = Latency::default();
        for ns in 1..=1000u64 {
            l.record(ns * 10);
        }
        let cdf = l.cdf(4);
        assert_eq!(cdf.len(), 4);
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cdf[3].1, 1.0);
        assert!((2_490..=2_510).contains(&cdf[0].0), "{cdf:?}");
        assert!((9_990..=10_010).contains(&cdf[3].0), "{cdf:?}");
    }

    #[test]
    fn one_sample_per_block_at_varying_places() {
        let every = 64;
        let blocks = 4096u64;
        let mut at_gc = 0;
        let mut places = std::collections::HashSet::new();
        for b in 0..blocks {
            let picked: Vec<u64> =
                (b * every..(b + 1) * every).filter(|&n| latency_sampled(n, every)).collect();
            assert_eq!(picked.len(), 1, "block {b}: {picked:?}");
            places.insert(picked[0] % every);
            at_gc += u64::from(picked[0] % 256 == 0);
        }
        assert!(places.len() > 60, "samples sit at only {} places of {every}", places.len());
        // Work done every 256 packets must not get more than its share of the samples
        // (1/256 of the packets; `n % 64 == 0` gave it a quarter).
        assert!(at_gc * 100 < blocks, "{at_gc} of {blocks} samples fall on every 256th packet");
    }
}
