//! The vertex manager (paper §4.1): per-task statistics and hints about load, balance and
//! stragglers, computed by a [`Policy`] that users can replace.
//!
//! # What this module owns
//!
//! * [`TaskMonitor`]: the collector a worker owns for one task. Recording a packet touches
//!   plain counters, with no locks, atomics or clock reads; the caller passes the latencies it
//!   sampled. Every so often the worker calls [`TaskMonitor::publish`], which copies the
//!   cumulative counters and adds the latencies sampled since into a shared slot (one short
//!   `parking_lot` lock).
//! * [`MonitorHandle`]: the manager's side of that slot. [`MonitorHandle::read`] copies the
//!   cumulative counters and takes the latencies published since the last reading, without
//!   stopping the worker, and adds the queue occupancy, which the caller supplies because
//!   someone else writes the queue.
//! * [`VertexManager`]: turns consecutive readings into windows ([`TaskSample`]s
//!   grouped in a [`VertexView`] per vertex), asks its [`Policy`] for [`Hint`]s, keeps a
//!   bounded history of them and builds the serialisable [`ManagerReport`] for the summary
//!   JSON.
//! * [`ThresholdPolicy`]: the default policy, with documented thresholds.
//!
//! # What it must never do
//!
//! It never moves packets or NF state, never touches a queue, never starts, stops or clones a
//! task, and never blocks a worker for longer than one publish. It only observes and
//! advises: the framework manager acts on hints (scale up/down, clone or kill stragglers,
//! §5.2). [`Hint::Imbalanced`] is reported (summary JSON) but not acted on: splitters do
//! not fall back to finer flowspaces yet (§4.2; per-flow state is keyed by the coarse
//! flow partition, so a finer split would first have to turn those objects into shared
//! ones).
//!
//! Every float it reports is finite: empty vertices, zero-length windows and zero-capacity
//! queues give `0.0`, never NaN or infinity.

use crate::stats::LatencySummary;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Largest latency the histograms track, ns (60 s, like [`crate::stats::Latency`]); larger
/// values are clamped.
const LATENCY_MAX_NS: u64 = 60_000_000_000;
/// Significant digits of the manager's latency histograms: 1% resolution is plenty for
/// hints and keeps a histogram around 30 KB (3 digits would be ~200 KB per copy).
const LATENCY_SIGFIG: u8 = 2;

/// Clamps a computed float to something JSON can carry: NaN and infinities become `0.0`.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `num / den` as a fraction, `0.0` when `den` is zero.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        finite(num as f64 / den as f64)
    }
}

/// Window delta of a cumulative counter. A counter that went backwards (the task restarted
/// with a fresh monitor) counts from zero again.
fn delta(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// Median of `v` (mean of the two middle values for an even count), `None` when empty.
fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        Some(v[mid])
    } else {
        Some((v[mid - 1] + v[mid]) / 2.0)
    }
}

/// Processing latencies in ns, 1 ns to 60 s at 2 significant digits (1%).
///
/// A task's monitor fills one per publish interval, its [`MonitorHandle`] slot collects
/// them until the [`VertexManager`] takes them ([`LatencyHistogram::take`]) as one window,
/// and the manager adds the windows into a per-task total for the report.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    hist: Option<Histogram<u64>>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { hist: Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIG).ok() }
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency (clamped to 1 ns ..= 60 s).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        if let Some(h) = &mut self.hist {
            h.saturating_record(ns.max(1));
        }
    }

    /// Records `count` occurrences of one latency (clamped to 1 ns ..= 60 s).
    pub fn record_n(&mut self, ns: u64, count: u64) {
        if let Some(h) = &mut self.hist {
            h.saturating_record_n(ns.max(1), count);
        }
    }

    /// Number of latencies recorded.
    pub fn samples(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// The latency at quantile `q` (0.0 ..= 1.0), ns; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        match &self.hist {
            Some(h) if !h.is_empty() => h.value_at_quantile(finite(q).clamp(0.0, 1.0)),
            _ => 0,
        }
    }

    /// Percentiles as reported in summaries (all zero when empty).
    pub fn summary(&self) -> LatencySummary {
        match &self.hist {
            Some(h) if !h.is_empty() => LatencySummary {
                samples: h.len(),
                p50_ns: h.value_at_quantile(0.5),
                p90_ns: h.value_at_quantile(0.9),
                p99_ns: h.value_at_quantile(0.99),
                p999_ns: h.value_at_quantile(0.999),
                max_ns: h.max(),
                mean_ns: finite(h.mean()),
            },
            _ => LatencySummary::default(),
        }
    }

    /// Adds every latency of `other` into `self`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        match (&mut self.hist, &other.hist) {
            (_, Some(o)) if o.is_empty() => {}
            (Some(h), Some(o)) => {
                // Both histograms have the same bounds, so the addition cannot run out of range.
                let _ = h.add(o);
            }
            (None, Some(o)) => self.hist = Some(o.clone()),
            (_, None) => {}
        }
    }

    /// Forgets every latency recorded.
    pub fn reset(&mut self) {
        if let Some(h) = &mut self.hist {
            h.reset();
        }
    }

    /// Takes what was recorded, leaving `self` empty without allocating (an empty
    /// histogram is returned as is, also without allocating). Merging into a taken
    /// histogram allocates it again.
    pub fn take(&mut self) -> LatencyHistogram {
        if self.samples() == 0 {
            return LatencyHistogram { hist: None };
        }
        std::mem::replace(self, LatencyHistogram { hist: None })
    }
}

/// Cumulative counters of one task since its monitor was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounters {
    /// Packets processed.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Time spent processing, ns, as measured (or estimated) by the worker.
    pub busy_ns: u64,
}

/// What a task published: cumulative counters, and the latencies published since the
/// manager last read them.
#[derive(Debug, Default)]
struct Published {
    counters: TaskCounters,
    latency: LatencyHistogram,
}

/// Per-task collector owned by the worker thread (hot path).
///
/// `record_*` touch plain fields only: no locks, atomics or clock reads. Nothing reaches the
/// manager until [`TaskMonitor::publish`]; call it every few thousand packets or every few
/// milliseconds, and once more when the task stops.
#[derive(Debug)]
pub struct TaskMonitor {
    counters: TaskCounters,
    /// Latencies recorded since the last publish.
    latency: LatencyHistogram,
    unpublished: u64,
    handle: MonitorHandle,
}

impl TaskMonitor {
    /// A monitor for task `task` (instance index) of vertex `vertex`.
    pub fn new(vertex: impl Into<String>, task: usize) -> TaskMonitor {
        let vertex: String = vertex.into();
        TaskMonitor {
            counters: TaskCounters::default(),
            latency: LatencyHistogram::new(),
            unpublished: 0,
            handle: MonitorHandle {
                vertex: Arc::from(vertex.as_str()),
                task,
                slot: Arc::new(Mutex::new(Published::default())),
            },
        }
    }

    /// The manager's side of this monitor (cheap to clone; give it to the
    /// [`VertexManager`] with [`VertexManager::register`]).
    pub fn handle(&self) -> MonitorHandle {
        self.handle.clone()
    }

    /// Counts one packet of `bytes` bytes.
    #[inline]
    pub fn record_packet(&mut self, bytes: usize) {
        self.counters.packets = self.counters.packets.wrapping_add(1);
        self.counters.bytes = self.counters.bytes.wrapping_add(bytes as u64);
        self.unpublished = self.unpublished.wrapping_add(1);
    }

    /// Records one processing latency the caller measured, ns. This is the costliest
    /// `record_*` (one histogram bucket update, ~10 ns in release builds here), so callers
    /// should time one packet in N (the histogram only needs a sample).
    #[inline]
    pub fn record_latency(&mut self, ns: u64) {
        self.latency.record(ns);
    }

    /// Adds processing time, ns.
    #[inline]
    pub fn add_busy_ns(&mut self, ns: u64) {
        self.counters.busy_ns = self.counters.busy_ns.wrapping_add(ns);
    }

    /// The cumulative counters so far, published or not.
    pub fn counters(&self) -> TaskCounters {
        self.counters
    }

    /// Packets counted since the last publish (to decide when to publish next).
    pub fn unpublished_packets(&self) -> u64 {
        self.unpublished
    }

    /// Makes everything recorded so far visible to the manager: copies the counters and
    /// merges the latencies recorded since the last publish into the shared slot (where
    /// they wait for the manager's next reading).
    pub fn publish(&mut self) {
        {
            let mut slot = self.handle.slot.lock();
            slot.counters = self.counters;
            slot.latency.merge(&self.latency);
        }
        self.latency.reset();
        self.unpublished = 0;
    }
}

/// The manager's view of one [`TaskMonitor`]: reads what the worker last published.
#[derive(Clone, Debug)]
pub struct MonitorHandle {
    vertex: Arc<str>,
    task: usize,
    slot: Arc<Mutex<Published>>,
}

impl MonitorHandle {
    /// Vertex of the task.
    pub fn vertex(&self) -> &str {
        &self.vertex
    }

    /// Task (instance) index.
    pub fn task(&self) -> usize {
        self.task
    }

    /// A reading of the task — cumulative counters, the latencies published since the
    /// previous reading — with the queue occupancy `queue_len` out of `queue_capacity`
    /// (0 = unknown or unbounded) that the caller observed on the task's input queue.
    /// Takes the slot's contents under its lock; the worker is never stopped.
    pub fn read(&self, queue_len: usize, queue_capacity: usize) -> TaskReading {
        let (counters, latency) = {
            let mut slot = self.slot.lock();
            (slot.counters, slot.latency.take())
        };
        TaskReading {
            vertex: self.vertex.to_string(),
            task: self.task,
            counters,
            latency,
            queue_len,
            queue_capacity,
        }
    }
}

/// One reading of a task, the input of [`VertexManager::sample`].
#[derive(Clone, Debug)]
pub struct TaskReading {
    /// Vertex name.
    pub vertex: String,
    /// Task (instance) index within the vertex.
    pub task: usize,
    /// Cumulative counters.
    pub counters: TaskCounters,
    /// Latencies published since the previous reading of the task (a window: readings
    /// from a [`MonitorHandle`] take them, so nothing 30 KB large is copied or
    /// subtracted per window).
    pub latency: LatencyHistogram,
    /// Messages waiting in the task's input queue when read.
    pub queue_len: usize,
    /// Capacity of that queue; 0 means unknown or unbounded (queue rules then do not apply).
    pub queue_capacity: usize,
}

impl TaskReading {
    /// An all-zero reading of task `task` of `vertex`.
    pub fn new(vertex: impl Into<String>, task: usize) -> TaskReading {
        TaskReading {
            vertex: vertex.into(),
            task,
            counters: TaskCounters::default(),
            latency: LatencyHistogram::new(),
            queue_len: 0,
            queue_capacity: 0,
        }
    }
}

/// What the manager saw of one task over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TaskSample {
    /// Vertex name.
    pub vertex: String,
    /// Task (instance) index.
    pub task: usize,
    /// Packets processed in the window.
    pub packets: u64,
    /// Bytes processed in the window.
    pub bytes: u64,
    /// Processing time in the window, ns.
    pub busy_ns: u64,
    /// `busy_ns` over the window length, in 0.0 ..= 1.0 (0.0 for a zero-length window).
    pub busy_fraction: f64,
    /// Messages in the input queue at the end of the window.
    pub queue_len: usize,
    /// Capacity of the input queue; 0 = unknown or unbounded.
    pub queue_capacity: usize,
    /// Latencies sampled in the window.
    pub latency_samples: u64,
    /// Median processing latency in the window, ns (0 without samples).
    pub p50_ns: u64,
    /// 99th percentile processing latency in the window, ns (0 without samples).
    pub p99_ns: u64,
}

impl TaskSample {
    /// Queue occupancy as a fraction of capacity, 0.0 when the capacity is 0 (unknown).
    pub fn queue_fill(&self) -> f64 {
        ratio(self.queue_len as u64, self.queue_capacity as u64)
    }
}

/// One vertex over one window: what a [`Policy`] decides on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VertexView {
    /// Vertex name.
    pub vertex: String,
    /// Index of the window (0 for the manager's first sample).
    pub window: u64,
    /// Length of the window, ns (may be 0).
    pub window_ns: u64,
    /// The vertex's tasks seen in this window, by task index.
    pub tasks: Vec<TaskSample>,
}

impl VertexView {
    /// Packets processed by all tasks in the window.
    pub fn total_packets(&self) -> u64 {
        self.tasks.iter().fold(0u64, |s, t| s.saturating_add(t.packets))
    }
}

/// Advice from a [`Policy`]. Serialised with a `kind` tag (`overloaded`, `underloaded`,
/// `straggler_suspected`, `imbalanced`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hint {
    /// The task cannot keep up (scale the vertex up).
    Overloaded {
        /// Vertex name.
        vertex: String,
        /// Task index.
        task: usize,
        /// Why, for humans.
        reason: String,
    },
    /// The task has spare capacity (the vertex could scale down).
    Underloaded {
        /// Vertex name.
        vertex: String,
        /// Task index.
        task: usize,
        /// Why, for humans.
        reason: String,
    },
    /// The task is much slower than its siblings (clone or kill/restart it, §5.2).
    StragglerSuspected {
        /// Vertex name.
        vertex: String,
        /// Task index.
        task: usize,
        /// Why, for humans.
        reason: String,
    },
    /// Load is split unevenly across the vertex's tasks (the upstream splitter should fall
    /// back to a finer flowspace, §4.2).
    Imbalanced {
        /// Vertex name.
        vertex: String,
        /// The most loaded task.
        task: usize,
        /// Max over mean packets per task in the window.
        ratio: f64,
        /// Why, for humans.
        reason: String,
    },
}

impl Hint {
    /// The serialised `kind` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Hint::Overloaded { .. } => "overloaded",
            Hint::Underloaded { .. } => "underloaded",
            Hint::StragglerSuspected { .. } => "straggler_suspected",
            Hint::Imbalanced { .. } => "imbalanced",
        }
    }

    /// The vertex the hint is about.
    pub fn vertex(&self) -> &str {
        match self {
            Hint::Overloaded { vertex, .. }
            | Hint::Underloaded { vertex, .. }
            | Hint::StragglerSuspected { vertex, .. }
            | Hint::Imbalanced { vertex, .. } => vertex,
        }
    }

    /// The task the hint is about (for [`Hint::Imbalanced`], the most loaded task).
    pub fn task(&self) -> usize {
        match self {
            Hint::Overloaded { task, .. }
            | Hint::Underloaded { task, .. }
            | Hint::StragglerSuspected { task, .. }
            | Hint::Imbalanced { task, .. } => *task,
        }
    }

    /// The human-readable reason.
    pub fn reason(&self) -> &str {
        match self {
            Hint::Overloaded { reason, .. }
            | Hint::Underloaded { reason, .. }
            | Hint::StragglerSuspected { reason, .. }
            | Hint::Imbalanced { reason, .. } => reason,
        }
    }

    /// Whether the hint is about a vertex as a whole rather than one task.
    pub fn is_vertex_level(&self) -> bool {
        matches!(self, Hint::Imbalanced { .. })
    }

    /// Replaces non-finite floats (from a user policy) with 0.0 so the JSON stays valid.
    fn sanitize(&mut self) {
        if let Hint::Imbalanced { ratio, .. } = self {
            *ratio = finite(*ratio);
        }
    }
}

/// Turns a window's view of one vertex into hints. Replace [`ThresholdPolicy`] with your own
/// through [`VertexManager::new`].
pub trait Policy: Send + Sync {
    /// The hints for `view` (possibly none). Called once per vertex per window, on the
    /// manager's thread, never on a worker's.
    fn hints(&self, view: &VertexView) -> Vec<Hint>;

    /// Name shown in the report.
    fn name(&self) -> &str {
        "custom"
    }

    /// Configuration shown in the report (`null` unless overridden).
    fn config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// The default [`Policy`]: fixed thresholds on one window at a time.
///
/// All comparisons are strict (`>` / `<`) unless noted, so a value exactly at a threshold
/// does not fire.
///
/// * **Overloaded** (per task): queue fill (`queue_len / queue_capacity`) `>`
///   [`overload_queue_fill`](Self::overload_queue_fill) (default 0.8), or busy fraction `>`
///   [`overload_busy`](Self::overload_busy) (default 0.9). Queues of capacity 0 (unknown)
///   and zero-length windows never count.
/// * **Underloaded** (per task, only when the vertex has more than one task and the window
///   has a length): busy fraction `<` [`underload_busy`](Self::underload_busy) (default 0.2)
///   and the queue nearly empty: fill `<=` [`underload_queue_fill`](Self::underload_queue_fill)
///   (default 0.05), or an empty queue when the capacity is unknown.
/// * **StragglerSuspected** (per task, only with siblings): either
///   - its p50 latency `>` [`straggler_latency_factor`](Self::straggler_latency_factor)
///     (default 3.0) × the median p50 of its siblings, counting only tasks (itself included)
///     with at least [`straggler_min_packets`](Self::straggler_min_packets) (default 100)
///     packets and one latency sample in the window, so idle tasks neither trigger nor skew
///     the median; or
///   - its queue fill `>=` [`straggler_queue_min_fill`](Self::straggler_queue_min_fill)
///     (default 0.5) and `>` [`straggler_queue_factor`](Self::straggler_queue_factor)
///     (default 3.0) × the median fill of its siblings (known capacities only). A stuck task
///     is caught this way even when it processed nothing.
/// * **Imbalanced** (per vertex, more than one task): max / mean packets per task `>`
///   [`imbalance_ratio`](Self::imbalance_ratio) (default 1.5), when the vertex processed
///   at least [`imbalance_min_packets`](Self::imbalance_min_packets) (default 500) packets
///   in the window. The test is `max × n > ratio × total`, exact for integer counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThresholdPolicy {
    /// Overloaded when queue fill is above this (0.0 ..= 1.0). Default 0.8.
    pub overload_queue_fill: f64,
    /// Overloaded when busy fraction is above this. Default 0.9.
    pub overload_busy: f64,
    /// Underloaded when busy fraction is below this (and the queue nearly empty). Default 0.2.
    pub underload_busy: f64,
    /// "Nearly empty" queue: fill at or below this. Default 0.05.
    pub underload_queue_fill: f64,
    /// Straggler when p50 is above this multiple of the siblings' median p50. Default 3.0.
    pub straggler_latency_factor: f64,
    /// Packets a task needs in the window for its latency to count. Default 100.
    pub straggler_min_packets: u64,
    /// Straggler by queue needs at least this fill. Default 0.5.
    pub straggler_queue_min_fill: f64,
    /// Straggler by queue when fill is above this multiple of the siblings' median fill.
    /// Default 3.0.
    pub straggler_queue_factor: f64,
    /// Imbalanced when max / mean packets per task is above this. Default 1.5.
    pub imbalance_ratio: f64,
    /// Packets the whole vertex needs in the window before balance is judged. Default 500.
    pub imbalance_min_packets: u64,
}

impl Default for ThresholdPolicy {
    fn default() -> Self {
        ThresholdPolicy {
            overload_queue_fill: 0.8,
            overload_busy: 0.9,
            underload_busy: 0.2,
            underload_queue_fill: 0.05,
            straggler_latency_factor: 3.0,
            straggler_min_packets: 100,
            straggler_queue_min_fill: 0.5,
            straggler_queue_factor: 3.0,
            imbalance_ratio: 1.5,
            imbalance_min_packets: 500,
        }
    }
}

impl ThresholdPolicy {
    fn overloaded(&self, view: &VertexView, t: &TaskSample) -> Option<Hint> {
        let mut why = Vec::new();
        if t.queue_capacity > 0 && t.queue_fill() > self.overload_queue_fill {
            why.push(format!(
                "queue {}/{} ({:.1}%) above {:.1}%",
                t.queue_len,
                t.queue_capacity,
                t.queue_fill() * 100.0,
                self.overload_queue_fill * 100.0
            ));
        }
        if view.window_ns > 0 && t.busy_fraction > self.overload_busy {
            why.push(format!(
                "busy {:.1}% of the window above {:.1}%",
                t.busy_fraction * 100.0,
                self.overload_busy * 100.0
            ));
        }
        (!why.is_empty()).then(|| Hint::Overloaded {
            vertex: view.vertex.clone(),
            task: t.task,
            reason: why.join("; "),
        })
    }

    fn underloaded(&self, view: &VertexView, t: &TaskSample) -> Option<Hint> {
        if view.tasks.len() < 2 || view.window_ns == 0 || t.busy_fraction >= self.underload_busy {
            return None;
        }
        let nearly_empty =
            if t.queue_capacity > 0 { t.queue_fill() <= self.underload_queue_fill } else { t.queue_len == 0 };
        nearly_empty.then(|| Hint::Underloaded {
            vertex: view.vertex.clone(),
            task: t.task,
            reason: format!(
                "busy {:.1}% below {:.1}% with queue {}/{} and {} sibling task(s)",
                t.busy_fraction * 100.0,
                self.underload_busy * 100.0,
                t.queue_len,
                t.queue_capacity,
                view.tasks.len() - 1
            ),
        })
    }

    fn straggler(&self, view: &VertexView, i: usize) -> Option<Hint> {
        let me = view.tasks.get(i)?;
        let siblings = || view.tasks.iter().enumerate().filter(move |(j, _)| *j != i).map(|(_, t)| t);
        if view.tasks.len() < 2 {
            return None;
        }
        let mut why = Vec::new();
        let counts = |t: &TaskSample| t.packets >= self.straggler_min_packets && t.latency_samples > 0;
        if counts(me) {
            let mut p50s: Vec<f64> = siblings().filter(|t| counts(t)).map(|t| t.p50_ns as f64).collect();
            if let Some(med) = median(&mut p50s) {
                if med > 0.0 && me.p50_ns as f64 > self.straggler_latency_factor * med {
                    why.push(format!(
                        "p50 {} ns above {}x the siblings' median p50 {:.0} ns",
                        me.p50_ns, self.straggler_latency_factor, med
                    ));
                }
            }
        }
        let fill = me.queue_fill();
        if me.queue_capacity > 0 && fill >= self.straggler_queue_min_fill {
            let mut fills: Vec<f64> =
                siblings().filter(|t| t.queue_capacity > 0).map(TaskSample::queue_fill).collect();
            if let Some(med) = median(&mut fills) {
                if fill > self.straggler_queue_factor * med {
                    why.push(format!(
                        "queue {:.1}% full, above {}x the siblings' median {:.1}%",
                        fill * 100.0,
                        self.straggler_queue_factor,
                        med * 100.0
                    ));
                }
            }
        }
        (!why.is_empty()).then(|| Hint::StragglerSuspected {
            vertex: view.vertex.clone(),
            task: me.task,
            reason: why.join("; "),
        })
    }

    fn imbalanced(&self, view: &VertexView) -> Option<Hint> {
        let n = view.tasks.len();
        if n < 2 {
            return None;
        }
        let total = view.total_packets();
        if total == 0 || total < self.imbalance_min_packets {
            return None;
        }
        // First task with the most packets.
        let busiest = view.tasks.iter().rev().max_by_key(|t| t.packets)?;
        let (max, n, total_f) = (busiest.packets as f64, n as f64, total as f64);
        if max * n > self.imbalance_ratio * total_f {
            let ratio = finite(max * n / total_f);
            Some(Hint::Imbalanced {
                vertex: view.vertex.clone(),
                task: busiest.task,
                ratio,
                reason: format!(
                    "task {} got {} of {} packets over {} tasks: max/mean {:.2} above {}",
                    busiest.task,
                    busiest.packets,
                    total,
                    view.tasks.len(),
                    ratio,
                    self.imbalance_ratio
                ),
            })
        } else {
            None
        }
    }
}

impl Policy for ThresholdPolicy {
    fn hints(&self, view: &VertexView) -> Vec<Hint> {
        let mut out = Vec::new();
        for (i, t) in view.tasks.iter().enumerate() {
            out.extend(self.overloaded(view, t));
            out.extend(self.underloaded(view, t));
            out.extend(self.straggler(view, i));
        }
        out.extend(self.imbalanced(view));
        out
    }

    fn name(&self) -> &str {
        "threshold"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// A hint as kept in the manager's history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HintRecord {
    /// Window that produced it (0 = first sample).
    pub window: u64,
    /// End of that window, ns on the caller's clock.
    pub at_ns: u64,
    /// The hint.
    #[serde(flatten)]
    pub hint: Hint,
}

/// Per-task cumulative statistics in the [`ManagerReport`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskReport {
    /// Task (instance) index.
    pub task: usize,
    /// Packets, summed over windows.
    pub packets: u64,
    /// Bytes, summed over windows.
    pub bytes: u64,
    /// Processing time, ns, summed over windows.
    pub busy_ns: u64,
    /// Time the task was observed, ns (sum of the windows it appeared in).
    pub observed_ns: u64,
    /// `busy_ns / observed_ns`, in 0.0 ..= 1.0 (0.0 when never observed over time).
    pub busy_fraction: f64,
    /// Processing latency over all windows.
    pub latency: LatencySummary,
    /// Queue length at the last sample.
    pub queue_len: usize,
    /// Queue capacity at the last sample (0 = unknown).
    pub queue_capacity: usize,
    /// Highest queue fill seen at any sample, 0.0 ..= 1.0 (0.0 when capacity unknown).
    pub max_queue_fill: f64,
    /// Task-level hints naming this task, by kind.
    pub hints: BTreeMap<String, u64>,
}

/// Per-vertex part of the [`ManagerReport`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VertexReport {
    /// Each task seen, by task index.
    pub tasks: Vec<TaskReport>,
    /// All hints about the vertex (task- and vertex-level), by kind.
    pub hints: BTreeMap<String, u64>,
}

/// What the vertex manager saw and advised over a run; goes into `--summary-json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ManagerReport {
    /// [`Policy::name`] of the policy in force.
    pub policy: String,
    /// [`Policy::config`] of the policy in force.
    pub policy_config: serde_json::Value,
    /// Windows sampled.
    pub windows: u64,
    /// End of the last window, ns on the caller's clock.
    pub last_sample_ns: u64,
    /// Per vertex.
    pub vertices: BTreeMap<String, VertexReport>,
    /// Hints of the last window.
    pub current_hints: Vec<Hint>,
    /// Every hint emitted, by kind (including those dropped from `history`).
    pub hint_counts: BTreeMap<String, u64>,
    /// The most recent hints, oldest first (bounded).
    pub history: Vec<HintRecord>,
    /// Hints dropped from the front of `history` to keep it bounded.
    pub history_dropped: u64,
    /// Times the policy panicked (the window then produced no hints for that vertex).
    pub policy_panics: u64,
}

/// Manager-side state of one task.
#[derive(Debug)]
struct TaskState {
    last: TaskCounters,
    total: TaskCounters,
    total_latency: LatencyHistogram,
    observed_ns: u64,
    queue_len: usize,
    queue_capacity: usize,
    max_queue_fill: f64,
    hints: BTreeMap<String, u64>,
}

impl TaskState {
    fn new() -> TaskState {
        TaskState {
            last: TaskCounters::default(),
            total: TaskCounters::default(),
            total_latency: LatencyHistogram::new(),
            observed_ns: 0,
            queue_len: 0,
            queue_capacity: 0,
            max_queue_fill: 0.0,
            hints: BTreeMap::new(),
        }
    }
}

/// Manager-side state of one vertex.
#[derive(Debug, Default)]
struct VertexState {
    tasks: BTreeMap<usize, TaskState>,
    hints: BTreeMap<String, u64>,
}

/// Default bound of the hint history.
pub const DEFAULT_HISTORY_LIMIT: usize = 1024;

/// Collects per-task statistics of every vertex it is given, window by window, and asks its
/// [`Policy`] for hints (§4.1). One manager can watch all vertices of a chain; the policy
/// sees one [`VertexView`] per vertex per window.
///
/// Times are ns on a clock of the caller's choosing (e.g. since engine start); the first
/// window starts at 0. A window is the difference between two consecutive readings of each
/// task's cumulative counters, with the latencies published in between.
pub struct VertexManager {
    policy: Box<dyn Policy>,
    history_limit: usize,
    handles: Vec<MonitorHandle>,
    windows: u64,
    last_ns: u64,
    vertices: BTreeMap<String, VertexState>,
    views: Vec<VertexView>,
    current: Vec<Hint>,
    history: VecDeque<HintRecord>,
    history_dropped: u64,
    hint_counts: BTreeMap<String, u64>,
    policy_panics: u64,
}

impl Default for VertexManager {
    fn default() -> Self {
        VertexManager::new(Box::new(ThresholdPolicy::default()))
    }
}

impl std::fmt::Debug for VertexManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VertexManager")
            .field("policy", &self.policy.name())
            .field("windows", &self.windows)
            .field("last_ns", &self.last_ns)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl VertexManager {
    /// A manager asking `policy` for hints, keeping the last [`DEFAULT_HISTORY_LIMIT`] hints.
    pub fn new(policy: Box<dyn Policy>) -> VertexManager {
        VertexManager {
            policy,
            history_limit: DEFAULT_HISTORY_LIMIT,
            handles: Vec::new(),
            windows: 0,
            last_ns: 0,
            vertices: BTreeMap::new(),
            views: Vec::new(),
            current: Vec::new(),
            history: VecDeque::new(),
            history_dropped: 0,
            hint_counts: BTreeMap::new(),
            policy_panics: 0,
        }
    }

    /// Keeps at most `limit` hints in the history (0 keeps none; counts are kept anyway).
    pub fn with_history_limit(mut self, limit: usize) -> VertexManager {
        self.history_limit = limit;
        self.trim_history();
        self
    }

    /// Watches a task's monitor; [`VertexManager::poll`] reads every registered handle.
    pub fn register(&mut self, handle: MonitorHandle) {
        self.handles.push(handle);
    }

    /// Stops watching task `task` of `vertex` (its statistics stay in the report). Returns
    /// whether it was registered.
    pub fn unregister(&mut self, vertex: &str, task: usize) -> bool {
        let before = self.handles.len();
        self.handles.retain(|h| !(h.vertex() == vertex && h.task() == task));
        self.handles.len() != before
    }

    /// Reads every registered monitor, asking `queue(vertex, task)` for the task's input
    /// queue `(len, capacity)`, and samples them as one window ending at `now_ns`.
    pub fn poll(&mut self, now_ns: u64, mut queue: impl FnMut(&str, usize) -> (usize, usize)) -> &[Hint] {
        let readings: Vec<TaskReading> = self
            .handles
            .iter()
            .map(|h| {
                let (len, cap) = queue(h.vertex(), h.task());
                h.read(len, cap)
            })
            .collect();
        self.sample(now_ns, &readings)
    }

    /// Closes a window at `now_ns` with `readings` (one per task, cumulative counters and
    /// this window's latencies; a later reading of the same task replaces an earlier one), asks the policy for hints per vertex and
    /// returns them. A clock that did not advance gives a zero-length window (busy
    /// fractions 0.0); it never goes backwards.
    pub fn sample(&mut self, now_ns: u64, readings: &[TaskReading]) -> &[Hint] {
        let window = self.windows;
        let window_ns = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.windows = self.windows.saturating_add(1);

        let mut grouped: BTreeMap<&str, BTreeMap<usize, &TaskReading>> = BTreeMap::new();
        for r in readings {
            grouped.entry(r.vertex.as_str()).or_default().insert(r.task, r);
        }

        let mut views = Vec::with_capacity(grouped.len());
        for (vertex, tasks) in grouped {
            let vstate = self.vertices.entry(vertex.to_string()).or_default();
            let mut samples = Vec::with_capacity(tasks.len());
            for (task, r) in tasks {
                let st = vstate.tasks.entry(task).or_insert_with(TaskState::new);
                let packets = delta(r.counters.packets, st.last.packets);
                let bytes = delta(r.counters.bytes, st.last.bytes);
                let busy_ns = delta(r.counters.busy_ns, st.last.busy_ns);
                let lat = &r.latency;
                st.last = r.counters;
                st.total.packets = st.total.packets.saturating_add(packets);
                st.total.bytes = st.total.bytes.saturating_add(bytes);
                st.total.busy_ns = st.total.busy_ns.saturating_add(busy_ns);
                st.total_latency.merge(lat);
                st.observed_ns = st.observed_ns.saturating_add(window_ns);
                st.queue_len = r.queue_len;
                st.queue_capacity = r.queue_capacity;
                let sample = TaskSample {
                    vertex: vertex.to_string(),
                    task,
                    packets,
                    bytes,
                    busy_ns,
                    busy_fraction: ratio(busy_ns, window_ns).clamp(0.0, 1.0),
                    queue_len: r.queue_len,
                    queue_capacity: r.queue_capacity,
                    latency_samples: lat.samples(),
                    p50_ns: lat.quantile(0.5),
                    p99_ns: lat.quantile(0.99),
                };
                st.max_queue_fill = st.max_queue_fill.max(sample.queue_fill());
                samples.push(sample);
            }
            views.push(VertexView { vertex: vertex.to_string(), window, window_ns, tasks: samples });
        }

        let mut current = Vec::new();
        for view in &views {
            let policy = &self.policy;
            match catch_unwind(AssertUnwindSafe(|| policy.hints(view))) {
                Ok(hints) => current.extend(hints),
                Err(_) => self.policy_panics = self.policy_panics.saturating_add(1),
            }
        }
        for h in &mut current {
            h.sanitize();
            self.count_hint(h);
            if self.history_limit > 0 {
                self.history.push_back(HintRecord { window, at_ns: now_ns, hint: h.clone() });
            } else {
                self.history_dropped = self.history_dropped.saturating_add(1);
            }
        }
        self.trim_history();
        self.views = views;
        self.current = current;
        &self.current
    }

    fn count_hint(&mut self, h: &Hint) {
        let kind = h.kind().to_string();
        *self.hint_counts.entry(kind.clone()).or_default() += 1;
        if let Some(v) = self.vertices.get_mut(h.vertex()) {
            *v.hints.entry(kind.clone()).or_default() += 1;
            if !h.is_vertex_level() {
                if let Some(t) = v.tasks.get_mut(&h.task()) {
                    *t.hints.entry(kind).or_default() += 1;
                }
            }
        }
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            self.history.pop_front();
            self.history_dropped = self.history_dropped.saturating_add(1);
        }
    }

    /// Hints of the last window.
    pub fn hints(&self) -> &[Hint] {
        &self.current
    }

    /// Views of the last window, one per vertex, by vertex name.
    pub fn views(&self) -> &[VertexView] {
        &self.views
    }

    /// The most recent hints, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &HintRecord> + '_ {
        self.history.iter()
    }

    /// Windows sampled so far.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// The policy in force.
    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// Everything observed and advised so far, for the summary JSON.
    pub fn report(&self) -> ManagerReport {
        let vertices = self
            .vertices
            .iter()
            .map(|(name, v)| {
                let tasks = v
                    .tasks
                    .iter()
                    .map(|(&task, st)| TaskReport {
                        task,
                        packets: st.total.packets,
                        bytes: st.total.bytes,
                        busy_ns: st.total.busy_ns,
                        observed_ns: st.observed_ns,
                        busy_fraction: ratio(st.total.busy_ns, st.observed_ns).clamp(0.0, 1.0),
                        latency: st.total_latency.summary(),
                        queue_len: st.queue_len,
                        queue_capacity: st.queue_capacity,
                        max_queue_fill: finite(st.max_queue_fill),
                        hints: st.hints.clone(),
                    })
                    .collect();
                (name.clone(), VertexReport { tasks, hints: v.hints.clone() })
            })
            .collect();
        ManagerReport {
            policy: self.policy.name().to_string(),
            policy_config: self.policy.config(),
            windows: self.windows,
            last_sample_ns: self.last_ns,
            vertices,
            current_hints: self.current.clone(),
            hint_counts: self.hint_counts.clone(),
            history: self.history.iter().cloned().collect(),
            history_dropped: self.history_dropped,
            policy_panics: self.policy_panics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    /// A task sample with the given load; everything else idle.
    fn task(i: usize, packets: u64) -> TaskSample {
        TaskSample { vertex: "v".into(), task: i, packets, ..TaskSample::default() }
    }

    fn view(tasks: Vec<TaskSample>) -> VertexView {
        VertexView { vertex: "v".into(), window: 0, window_ns: 100 * MS, tasks }
    }

    fn kinds_for(hints: &[Hint], kind: &str, t: usize) -> usize {
        hints.iter().filter(|h| h.kind() == kind && h.task() == t).count()
    }

    fn policy() -> ThresholdPolicy {
        ThresholdPolicy::default()
    }

    // ---- Overloaded ----

    #[test]
    fn overloaded_by_queue_fires_above_80_percent_only() {
        let p = policy();
        let mut t = task(0, 0);
        t.queue_capacity = 1000;
        t.queue_len = 801;
        let h = p.hints(&view(vec![t.clone()]));
        assert_eq!(kinds_for(&h, "overloaded", 0), 1, "{h:?}");
        for len in [800, 799] {
            t.queue_len = len;
            let h = p.hints(&view(vec![t.clone()]));
            assert_eq!(kinds_for(&h, "overloaded", 0), 0, "len {len}: {h:?}");
        }
    }

    #[test]
    fn overloaded_by_busy_fires_above_90_percent_only() {
        let p = policy();
        let mut t = task(0, 10);
        t.busy_fraction = 0.91;
        assert_eq!(kinds_for(&p.hints(&view(vec![t.clone()])), "overloaded", 0), 1);
        t.busy_fraction = 0.9;
        assert_eq!(kinds_for(&p.hints(&view(vec![t.clone()])), "overloaded", 0), 0);
        t.busy_fraction = 0.89;
        assert_eq!(kinds_for(&p.hints(&view(vec![t])), "overloaded", 0), 0);
    }

    #[test]
    fn zero_capacity_queue_never_counts_as_full() {
        let mut t = task(0, 10);
        t.queue_len = 5000;
        t.queue_capacity = 0;
        assert_eq!(t.queue_fill(), 0.0);
        assert!(policy().hints(&view(vec![t])).is_empty());
    }

    // ---- Underloaded ----

    #[test]
    fn underloaded_fires_below_20_percent_busy_with_empty_queue_and_siblings() {
        let p = policy();
        let mut t0 = task(0, 10);
        t0.busy_fraction = 0.19;
        t0.queue_capacity = 1000;
        t0.queue_len = 50; // 5%: "nearly empty" (<=)
        let mut t1 = task(1, 10);
        t1.busy_fraction = 0.5;
        let h = p.hints(&view(vec![t0.clone(), t1.clone()]));
        assert_eq!(kinds_for(&h, "underloaded", 0), 1, "{h:?}");
        assert_eq!(kinds_for(&h, "underloaded", 1), 0, "{h:?}");

        // Just below the threshold (busy exactly 0.2, or a bit above): no hint.
        for busy in [0.2, 0.21] {
            let mut t = t0.clone();
            t.busy_fraction = busy;
            assert_eq!(kinds_for(&p.hints(&view(vec![t, t1.clone()])), "underloaded", 0), 0, "{busy}");
        }
        // Queue not nearly empty.
        let mut t = t0.clone();
        t.queue_len = 51;
        assert_eq!(kinds_for(&p.hints(&view(vec![t, t1.clone()])), "underloaded", 0), 0);
        // Unknown capacity: only an empty queue counts.
        let mut t = t0.clone();
        t.queue_capacity = 0;
        t.queue_len = 1;
        assert_eq!(kinds_for(&p.hints(&view(vec![t.clone(), t1.clone()])), "underloaded", 0), 0);
        t.queue_len = 0;
        assert_eq!(kinds_for(&p.hints(&view(vec![t, t1.clone()])), "underloaded", 0), 1);
        // A single task is never underloaded (nothing to scale down to).
        assert!(p.hints(&view(vec![t0.clone()])).is_empty());
        // Nor in a zero-length window.
        let mut v = view(vec![t0, t1]);
        v.window_ns = 0;
        assert_eq!(kinds_for(&p.hints(&v), "underloaded", 0), 0);
    }

    // ---- StragglerSuspected ----

    fn lat(i: usize, packets: u64, p50: u64) -> TaskSample {
        let mut t = task(i, packets);
        t.latency_samples = packets / 16;
        t.p50_ns = p50;
        t.p99_ns = p50 * 2;
        t
    }

    #[test]
    fn straggler_by_latency_fires_above_3x_sibling_median() {
        let p = policy();
        // Siblings' p50: 100, 100, 5000 -> median 100.
        let sib = || vec![lat(1, 1000, 100), lat(2, 1000, 100), lat(3, 1000, 5000)];
        let mut tasks = vec![lat(0, 1000, 301)];
        tasks.extend(sib());
        let h = p.hints(&view(tasks));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 1, "{h:?}");
        // Task 3 is 50x the median of {301, 100, 100} = 100 too.
        assert_eq!(kinds_for(&h, "straggler_suspected", 3), 1, "{h:?}");
        assert_eq!(kinds_for(&h, "straggler_suspected", 1), 0, "{h:?}");

        let mut tasks = vec![lat(0, 1000, 300)];
        tasks.extend(sib());
        assert_eq!(kinds_for(&p.hints(&view(tasks)), "straggler_suspected", 0), 0);
    }

    #[test]
    fn straggler_by_latency_needs_minimum_packets() {
        let p = policy();
        // Slow but nearly idle: 99 packets < 100.
        let h = p.hints(&view(vec![lat(0, 99, 10_000), lat(1, 1000, 100), lat(2, 1000, 100)]));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 0, "{h:?}");
        let h = p.hints(&view(vec![lat(0, 100, 10_000), lat(1, 1000, 100), lat(2, 1000, 100)]));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 1, "{h:?}");
        // Idle siblings don't make up the median: with only idle siblings there is none.
        let h = p.hints(&view(vec![lat(0, 1000, 10_000), lat(1, 5, 1), task(2, 0)]));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 0, "{h:?}");
        // A single task has no siblings.
        assert!(p.hints(&view(vec![lat(0, 1000, 10_000)])).is_empty());
    }

    fn queued(i: usize, len: usize) -> TaskSample {
        let mut t = task(i, 0);
        t.queue_len = len;
        t.queue_capacity = 1000;
        t
    }

    #[test]
    fn straggler_by_queue_fires_when_far_fuller_than_siblings() {
        let p = policy();
        // Siblings at 25%: 3x = 75%.
        let h = p.hints(&view(vec![queued(0, 751), queued(1, 250), queued(2, 250)]));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 1, "{h:?}");
        assert_eq!(kinds_for(&h, "overloaded", 0), 0, "75.1% is not overloaded: {h:?}");
        let h = p.hints(&view(vec![queued(0, 750), queued(1, 250), queued(2, 250)]));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 0, "{h:?}");
        // Siblings empty: needs the 50% floor.
        let h = p.hints(&view(vec![queued(0, 500), queued(1, 0)]));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 1, "{h:?}");
        let h = p.hints(&view(vec![queued(0, 499), queued(1, 0)]));
        assert_eq!(kinds_for(&h, "straggler_suspected", 0), 0, "{h:?}");
        // Everyone full is aggregate overload, not a straggler.
        let h = p.hints(&view(vec![queued(0, 900), queued(1, 900)]));
        assert_eq!(h.iter().filter(|h| h.kind() == "straggler_suspected").count(), 0, "{h:?}");
        assert_eq!(h.iter().filter(|h| h.kind() == "overloaded").count(), 2, "{h:?}");
    }

    // ---- Imbalanced ----

    #[test]
    fn imbalanced_fires_above_1_5_max_over_mean() {
        let p = policy();
        // 2 tasks: max/mean = 2*1501/2001 = 1.5002 > 1.5.
        let h = p.hints(&view(vec![task(0, 500), task(1, 1501)]));
        let imb: Vec<_> = h.iter().filter(|h| h.kind() == "imbalanced").collect();
        assert_eq!(imb.len(), 1, "{h:?}");
        assert_eq!(imb[0].task(), 1);
        match imb[0] {
            Hint::Imbalanced { ratio, .. } => assert!((ratio - 3002.0 / 2001.0).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
        // Exactly 1.5 and just under: no hint.
        for (a, b) in [(500, 1500), (501, 1500)] {
            let h = p.hints(&view(vec![task(0, a), task(1, b)]));
            assert!(h.iter().all(|h| h.kind() != "imbalanced"), "{a}/{b}: {h:?}");
        }
    }

    #[test]
    fn imbalanced_needs_minimum_packets_and_two_tasks() {
        let p = policy();
        // Ratio 1.8 > 1.5 but only 499 packets.
        let h = p.hints(&view(vec![task(0, 50), task(1, 449)]));
        assert!(h.iter().all(|h| h.kind() != "imbalanced"), "{h:?}");
        let h = p.hints(&view(vec![task(0, 50), task(1, 450)]));
        assert_eq!(h.iter().filter(|h| h.kind() == "imbalanced").count(), 1, "{h:?}");
        assert!(p.hints(&view(vec![task(0, 10_000)])).is_empty());
    }

    #[test]
    fn empty_vertex_gives_no_hints() {
        assert!(policy().hints(&view(vec![])).is_empty());
        let mut m = VertexManager::default();
        assert!(m.sample(0, &[]).is_empty());
        assert!(m.sample(0, &[]).is_empty());
        let json = serde_json::to_string(&m.report()).expect("serialize");
        assert!(!json.contains("NaN") && !json.contains("null"), "{json}");
    }

    // ---- Manager ----

    #[test]
    fn windows_are_deltas_of_cumulative_counters_and_published_latencies() {
        let mut mon = TaskMonitor::new("ids", 0);
        let handle = mon.handle();
        let mut m = VertexManager::default();
        m.register(handle.clone());

        for _ in 0..100 {
            mon.record_packet(60);
            mon.record_latency(1000);
        }
        mon.add_busy_ns(500_000);
        // Nothing published yet: the manager sees zeros.
        m.poll(MS, |_, _| (0, 64));
        assert_eq!(m.views()[0].tasks[0].packets, 0);
        mon.publish();
        assert_eq!(mon.unpublished_packets(), 0);
        m.poll(2 * MS, |_, _| (3, 64));
        let t = &m.views()[0].tasks[0];
        assert_eq!((t.packets, t.bytes, t.busy_ns), (100, 6000, 500_000));
        assert_eq!(m.views()[0].window_ns, MS);
        assert!((t.busy_fraction - 0.5).abs() < 1e-12);
        assert_eq!((t.queue_len, t.queue_capacity), (3, 64));
        assert_eq!(t.latency_samples, 100);
        assert!(t.p50_ns.abs_diff(1000) <= 10, "{}", t.p50_ns);

        for _ in 0..50 {
            mon.record_packet(100);
            mon.record_latency(50_000);
        }
        mon.add_busy_ns(1_000_000);
        mon.publish();
        assert_eq!(mon.counters(), TaskCounters { packets: 150, bytes: 11_000, busy_ns: 1_500_000 });
        m.poll(6 * MS, |_, _| (0, 64));
        let v = &m.views()[0];
        assert_eq!((v.window, v.window_ns), (2, 4 * MS));
        let t = &v.tasks[0];
        assert_eq!((t.packets, t.bytes, t.busy_ns), (50, 5000, 1_000_000));
        assert!((t.busy_fraction - 0.25).abs() < 1e-12);
        // Only this window's latencies: all 50 µs (1% resolution).
        assert_eq!(t.latency_samples, 50);
        assert!(t.p50_ns.abs_diff(50_000) <= 500, "{}", t.p50_ns);
        assert!(t.p99_ns.abs_diff(50_000) <= 500, "{}", t.p99_ns);

        // A zero-length window: zero deltas, finite fractions.
        m.poll(6 * MS, |_, _| (0, 0));
        let t = &m.views()[0].tasks[0];
        assert_eq!((t.packets, t.busy_fraction, t.latency_samples), (0, 0.0, 0));

        // The report is cumulative.
        let r = m.report();
        let tr = &r.vertices["ids"].tasks[0];
        assert_eq!((tr.packets, tr.bytes, tr.busy_ns, tr.observed_ns), (150, 11_000, 1_500_000, 6 * MS));
        assert!((tr.busy_fraction - 0.25).abs() < 1e-12);
        assert_eq!(tr.latency.samples, 150);
        assert!(tr.latency.p50_ns.abs_diff(1000) <= 10, "{}", tr.latency.p50_ns);
        assert_eq!(r.windows, 4);
    }

    #[test]
    fn restarted_monitor_counts_from_zero() {
        let mut m = VertexManager::default();
        let mut r = TaskReading::new("v", 0);
        r.counters.packets = 1000;
        r.latency.record_n(100, 1000);
        m.sample(MS, std::slice::from_ref(&r));
        let mut r2 = TaskReading::new("v", 0);
        r2.counters.packets = 10;
        r2.latency.record_n(100, 10);
        m.sample(2 * MS, &[r2]);
        let t = &m.views()[0].tasks[0];
        assert_eq!((t.packets, t.latency_samples), (10, 10));
        assert_eq!(m.report().vertices["v"].tasks[0].packets, 1010);
    }

    struct AlwaysStraggler;
    impl Policy for AlwaysStraggler {
        fn hints(&self, view: &VertexView) -> Vec<Hint> {
            view.tasks
                .iter()
                .map(|t| Hint::StragglerSuspected {
                    vertex: view.vertex.clone(),
                    task: t.task,
                    reason: "custom says so".into(),
                })
                .collect()
        }
        fn name(&self) -> &str {
            "always-straggler"
        }
    }

    fn overloaded_reading(vertex: &str, task: usize) -> TaskReading {
        let mut r = TaskReading::new(vertex, task);
        r.counters.packets = 10_000;
        r.counters.busy_ns = 100 * MS;
        r.queue_len = 1000;
        r.queue_capacity = 1000;
        r
    }

    #[test]
    fn user_policy_replaces_the_default() {
        let readings = [overloaded_reading("nat", 0), overloaded_reading("nat", 1)];
        let mut default = VertexManager::default();
        let h = default.sample(100 * MS, &readings).to_vec();
        assert!(h.iter().any(|h| h.kind() == "overloaded"), "{h:?}");

        let mut m = VertexManager::new(Box::new(AlwaysStraggler));
        let h = m.sample(100 * MS, &readings).to_vec();
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.iter().all(|h| h.kind() == "straggler_suspected" && h.reason() == "custom says so"));
        let r = m.report();
        assert_eq!(r.policy, "always-straggler");
        assert_eq!(r.policy_config, serde_json::Value::Null);
        assert_eq!(r.hint_counts.get("straggler_suspected"), Some(&2));
        assert_eq!(r.hint_counts.get("overloaded"), None);
        assert_eq!(r.vertices["nat"].tasks[1].hints.get("straggler_suspected"), Some(&1));
    }

    struct Panicky;
    impl Policy for Panicky {
        fn hints(&self, view: &VertexView) -> Vec<Hint> {
            if view.vertex == "bad" {
                panic!("policy bug");
            }
            vec![Hint::Imbalanced {
                vertex: view.vertex.clone(),
                task: 0,
                ratio: f64::NAN,
                reason: "x".into(),
            }]
        }
    }

    #[test]
    fn policy_panics_and_nan_are_contained() {
        let mut m = VertexManager::new(Box::new(Panicky));
        let h = m.sample(MS, &[TaskReading::new("bad", 0), TaskReading::new("good", 0)]).to_vec();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0], Hint::Imbalanced { vertex: "good".into(), task: 0, ratio: 0.0, reason: "x".into() });
        let r = m.report();
        assert_eq!(r.policy_panics, 1);
        let json = serde_json::to_string(&r).expect("serialize");
        assert!(!json.contains("NaN") && !json.contains("\"ratio\":null"), "{json}");
    }

    #[test]
    fn history_is_bounded_and_indexed() {
        let mut m = VertexManager::new(Box::new(AlwaysStraggler)).with_history_limit(3);
        for w in 1..=5u64 {
            m.sample(w * MS, &[TaskReading::new("v", 0)]);
        }
        let hist: Vec<_> = m.history().map(|r| (r.window, r.at_ns)).collect();
        assert_eq!(hist, vec![(2, 3 * MS), (3, 4 * MS), (4, 5 * MS)]);
        let r = m.report();
        assert_eq!((r.history.len(), r.history_dropped), (3, 2));
        assert_eq!(r.hint_counts.get("straggler_suspected"), Some(&5));
        let json = serde_json::to_value(&r.history[0]).expect("serialize");
        assert_eq!(json["kind"], "straggler_suspected");
        assert_eq!(json["window"], 2);
        assert_eq!(json["task"], 0);
    }

    #[test]
    fn hint_json_shape() {
        let h = Hint::Imbalanced { vertex: "fw".into(), task: 2, ratio: 2.0, reason: "r".into() };
        let v = serde_json::to_value(&h).expect("serialize");
        assert_eq!(
            v,
            serde_json::json!({"kind": "imbalanced", "vertex": "fw", "task": 2, "ratio": 2.0, "reason": "r"})
        );
        let r = VertexManager::default().report();
        assert_eq!(r.policy, "threshold");
        assert_eq!(r.policy_config["imbalance_ratio"], 1.5);
    }

    /// Walks a JSON value and checks that no float is missing (NaN/inf become `null`).
    fn no_nulls(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => false,
            serde_json::Value::Array(a) => a.iter().all(no_nulls),
            serde_json::Value::Object(o) => o.values().all(no_nulls),
            serde_json::Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
            _ => true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The default Imbalanced hint fires exactly when max/mean > 1.5 (with the minimum
        /// packet count and more than one task), and nothing serialised is NaN or infinite.
        #[test]
        fn imbalance_fires_exactly_above_threshold(
            loads in proptest::collection::vec(0u64..3000, 0..8),
            busy in proptest::collection::vec(0u64..5_000_000, 8),
            queues in proptest::collection::vec((0usize..100, 0usize..100), 8),
            window_ns in prop_oneof![Just(0u64), 1u64..10_000_000],
        ) {
            let mut m = VertexManager::default();
            let readings: Vec<TaskReading> = loads.iter().enumerate().map(|(i, &p)| {
                let mut r = TaskReading::new("v", i);
                r.counters.packets = p;
                r.counters.bytes = p * 64;
                r.counters.busy_ns = busy[i];
                r.latency.record_n(1000 + 100 * i as u64, p / 4);
                (r.queue_len, r.queue_capacity) = queues[i];
                r
            }).collect();
            let hints = m.sample(window_ns, &readings).to_vec();

            let n = loads.len() as u64;
            let total: u64 = loads.iter().sum();
            let max = loads.iter().copied().max().unwrap_or(0);
            // max / (total / n) > 3 / 2, in integers.
            let expected = n > 1 && total >= 500 && 2 * max * n > 3 * total;
            let imb: Vec<&Hint> = hints.iter().filter(|h| h.kind() == "imbalanced").collect();
            prop_assert_eq!(imb.len(), usize::from(expected), "loads {:?}: {:?}", loads, hints);
            if let Some(Hint::Imbalanced { ratio, task, .. }) = imb.first() {
                prop_assert!(ratio.is_finite() && *ratio > 1.5);
                prop_assert_eq!(loads[*task], max);
            }
            for t in &m.views().iter().flat_map(|v| v.tasks.clone()).collect::<Vec<_>>() {
                prop_assert!(t.busy_fraction.is_finite() && (0.0..=1.0).contains(&t.busy_fraction));
            }

            // A second, zero-length window must stay finite too.
            m.sample(window_ns, &readings);
            let json = serde_json::to_value(m.report()).expect("serialize");
            prop_assert!(no_nulls(&json), "{}", json);
            let text = serde_json::to_string(&m.report()).expect("serialize");
            prop_assert!(!text.contains("NaN"), "{}", text);
        }
    }
}
