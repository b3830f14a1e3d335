//! The parallel engine: the physical DAG (§3.2) on a pool of worker threads.
//!
//! Every vertex runs as N tasks (instances). A task runs on whichever thread is free, one
//! thread at a time (each task sits behind its own lock, so it processes its input in
//! order); the task count does not depend on the thread count (8 tasks on 2 threads work).
//! The caller's thread is the root splitter (§5) and worker 0: it parses each frame once,
//! assigns the logical clock from the [`ClockSource`] (persisted to the store every n
//! clocks), logs the packet in the [`PacketLog`] and hands it to the first vertices'
//! tasks. W − 1 more threads run tasks; the root runs them too when they fall behind (and
//! all of them when W = 1). After each task a splitter ([`SplitRule`]) sends outputs to the
//! downstream task that owns their flow, through that task's bounded [`MessageQueue`], in
//! batches.
//!
//! Order: a task whose flows can reach it over several senders (after an NF that rewrites
//! headers, or an unaligned split; see [`crate::splitter::merge_needed`]) merges its input
//! in clock order (`Reorder`): every sender publishes its progress, a clock below which it
//! will send nothing more, and a message is processed once no sender can still send an
//! earlier one. Each task then sees its flows in the order of the single-instance run.
//!
//! Bookkeeping: each logged packet counts the messages descending from it that are still
//! queued or being processed. A task consuming a message with k children adds k − 1
//! before the children become visible (its outbox is flushed after), so the count never
//! reaches zero early; when it does, the chain has finished with the packet, which leaves
//! the log. The smallest clock still in flight is the watermark below which the store may
//! forget its clock logs (§5.1), so memory stays flat.
//!
//! Back-pressure, never drops: the root waits on a full queue or a full log, running tasks
//! meanwhile. A task never blocks on a full queue (the thread may be the one that would
//! drain it); a task whose outbox to some downstream task is over the limit stops taking
//! input until the outbox drains. The last vertices only write to sinks, so some task can
//! always make progress.
//!
//! The engine keeps counters, queues and the log; NF state lives only in the store.

mod churn;

pub use churn::{replay_input, EventRecord, ReplayInput};

use crate::alerts::{AlertRecord, AlertSink};
use crate::callbacks::{Delivery, DueTimes, MessageSeq, TimerSeq, Watchers};
use crate::context::{invoke, CallSite, Emit, NfInput, TaskBuffers};
use crate::dedupe::{child_lineage, item_key, root_lineage, Dedupe};
use crate::engine::{EngineConfig, EngineReport};
use crate::manager::{ManagerReport, Policy, TaskMonitor, ThresholdPolicy, VertexManager};
use crate::packet_log::{ClockError, ClockSource, PacketLog, DEFAULT_PERSIST_EVERY};
use crate::partition::{VertexTable, NO_REPLICA};
use crate::prefetch::{declared_keys, BatchPacket, PrefetchSite, Prefetched, Prefetcher};
use crate::queue::MessageQueue;
use crate::sink::SinkSet;
use crate::splitter::{merge_needed, scope_flowspaces, SplitRule, SplitterRegistry, Targets, PARTITIONS};
use crate::stats::{ChainStats, Latency, TaskStats};
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use streamnf_dag::{ContextMsg, Endpoint, LogicalDag, ProcessingMode, StateScope};
use streamnf_filter::Filter;
use streamnf_packet::{LinkType, Packet};
use streamnf_store::StateStore;

/// Options of the parallel engine.
pub struct ParallelConfig {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Instances per vertex, by vertex index; missing entries use the chain's defaults.
    pub instances: Vec<u32>,
    /// Messages per hand-off batch.
    pub batch: usize,
    /// Capacity of each task's input queue, in messages.
    pub queue_capacity: usize,
    /// Packets the log holds before the root waits.
    pub log_capacity: usize,
    /// The root persists its clock every this many packets.
    pub persist_every: u64,
    /// Custom splitters for `custom:NAME` edges.
    pub splitters: SplitterRegistry,
    /// Vertex-manager policy (default: [`ThresholdPolicy`]).
    pub policy: Option<Box<dyn Policy>>,
    /// Where the root logs packets in flight.
    pub packet_log: PacketLogMode,
    /// Task slots per vertex (by vertex index): the most instances it may run at once
    /// over the run (scale events, clones). Missing entries or smaller values use the
    /// vertex's instance count.
    pub slots: Vec<u32>,
    /// Fault tolerance (§5.1): messages carry lineages, sinks, alerts and timers suppress
    /// duplicates, reads are logged in the store, so a failure can be recovered by replay
    /// and a clone can run beside its original. On whenever events are scheduled.
    pub fault_tolerance: bool,
    /// Chain-wide guarantees (default on). Off is the "existing frameworks" baseline:
    /// no clock tags on updates, no replay, no duplicate suppression, naive handover.
    pub guarantees: bool,
    /// Let the vertex manager's hints trigger churn up to this many instances per vertex
    /// (needs `fault_tolerance` and spare `slots`): overloaded → scale up, underloaded →
    /// scale down, straggler → clone.
    pub auto_churn: Option<u32>,
}

/// Where the root logs packets in flight (§5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PacketLogMode {
    /// In the root's memory, as input indexes: the frames stay in the input, which the
    /// root keeps (the default; a few tens of nanoseconds per packet).
    #[default]
    Local,
    /// In the state store, whole frames (survives the root; microseconds per packet).
    Store,
}

impl std::str::FromStr for PacketLogMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(PacketLogMode::Local),
            "store" => Ok(PacketLogMode::Store),
            other => Err(format!("unknown packet log `{other}`: expected local or store")),
        }
    }
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            instances: Vec::new(),
            batch: 32,
            queue_capacity: 1024,
            log_capacity: 4096,
            persist_every: DEFAULT_PERSIST_EVERY,
            splitters: SplitterRegistry::default(),
            policy: None,
            packet_log: PacketLogMode::Local,
            slots: Vec::new(),
            fault_tolerance: false,
            guarantees: true,
            auto_churn: None,
        }
    }
}

/// Most messages a task may have waiting in one outbox before it stops taking input.
const OUTBOX_LIMIT: usize = 256;
/// Root packets between two store GCs (the fewer packets between, the shorter the clock
/// logs the store keeps; §5.1).
const GC_EVERY: u64 = 256;
/// Passes over the tasks the root takes before idling (pacing), each running what the
/// last one emitted downstream (see [`ParallelEngine::before_idle`]).
const IDLE_PASSES: usize = 8;
/// Root packets between two vertex-manager windows.
const HOUSEKEEPING_EVERY: u64 = 8192;
/// One packet in this many has its chain latency measured (root admission → sink).
const LATENCY_SAMPLE: u64 = 16;
/// One message in this many has its processing time recorded per task (vertex manager).
const TASK_LATENCY_SAMPLE: u64 = 64;
/// Slots of the latency-sample ring (a sample older than this many samples is dropped).
const LATENCY_RING: usize = 16384;
/// Messages a task processes between two publications of its statistics.
const PUBLISH_EVERY: u64 = 4096;

/// What a message carries.
enum Body {
    Packet(Packet),
    Context(ContextMsg),
    /// A due timer's payload and the first update sequence number of its handler. It holds
    /// no packet-log reference: it runs at the clock of the last packet before it and what
    /// it emits is discarded, so it has no descendants to wait for.
    Timer(Vec<u8>, u32),
}

/// A message to a task: its sender, input port, the logged clock it descends from, and
/// the trace time it happens at.
struct Msg {
    /// Sender: 0 = the root, task id + 1 otherwise.
    src: u32,
    port: u16,
    /// Flow partition of the receiving vertex the message belongs to (the owner of its
    /// per-flow state keys; see [`crate::partition`]).
    part: u16,
    clock: u64,
    ts_ns: u64,
    /// Hash of the clock and the path from the root ([`crate::dedupe`]); a replayed or
    /// cloned copy has the original's.
    lineage: u64,
    body: Body,
}

/// Where an edge leads.
#[derive(Clone)]
enum Target {
    Sink(usize),
    Vertex { port: u16, vertex: usize, first_task: usize, rule: SplitRule },
}

#[derive(Clone)]
struct Route {
    filter: Option<Filter>,
    target: Target,
}

/// Wakes a sleeping worker.
#[derive(Default)]
struct Doorbell {
    /// The owner is about to sleep or sleeping: only then does a ring take the lock (a
    /// ring while it is awake costs one atomic load).
    sleeping: AtomicBool,
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        if !self.sleeping.load(Ordering::Acquire) {
            return;
        }
        let mut r = self.rung.lock();
        if !*r {
            *r = true;
            self.cv.notify_one();
        }
    }

    /// Sleeps up to `timeout` unless rung. A ring that comes before `sleeping` is set can
    /// be missed; the timeout bounds the delay (callers look for work again on waking).
    fn wait(&self, timeout: Duration) {
        self.sleeping.store(true, Ordering::Release);
        let mut r = self.rung.lock();
        if !*r {
            let _ = self.cv.wait_for(&mut r, timeout);
        }
        *r = false;
        self.sleeping.store(false, Ordering::Release);
    }
}

/// Shared by the root and the workers.
struct Shared {
    dag: Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    queues: Vec<Arc<MessageQueue<Msg>>>,
    /// Every task; a thread runs a task only while it holds its lock, so each task
    /// processes its input in order, on whichever thread is free.
    tasks: Vec<Mutex<Task>>,
    bells: Vec<Doorbell>,
    log: PacketLog,
    /// Per vertex, per output port.
    out_routes: Vec<Vec<Vec<Route>>>,
    per_flow: Vec<Vec<bool>>,
    /// Per vertex: its NF is asynchronous, so its tasks prefetch each batch's reads
    /// ([`crate::prefetch`]; with logged reads, round by round).
    prefetching: Vec<bool>,
    sinks: Mutex<SinkSet>,
    alerts: Mutex<AlertSink>,
    shutdown: AtomicBool,
    /// Stop now, abandoning queued work (the engine was dropped after an error).
    abort: AtomicBool,
    /// Due times of the timers not fired yet.
    due: DueTimes,
    /// Timers handed to tasks and not run yet (they are not in the packet log).
    timers_in_flight: AtomicU64,
    io_error: Mutex<Option<io::Error>>,
    /// Set with `io_error`, so the root checks a flag per packet, not a lock.
    failed: AtomicBool,
    batch: usize,
    /// Frame buffers of finished packets, in batches, back to the root for reuse.
    spare_tx: crossbeam_channel::Sender<Vec<Vec<u8>>>,
    /// Admission instants of sampled packets (ns since `epoch`), by clock.
    latency_ring: Vec<AtomicU64>,
    epoch: Instant,
    /// Per sender (0 = root, task id + 1): every message it will send with a clock up
    /// to this value has been handed to its destination's queue.
    progress: Vec<AtomicU64>,
    /// Partition history of each vertex (who owns which flows from which clock on).
    tables: Vec<VertexTable>,
    /// Fault tolerance on: lineages are checked at sinks, alerts and timers, reads are
    /// logged in the store.
    ft: bool,
    /// Chain-wide guarantees on (off: the naive baseline).
    guarantees: bool,
    /// Lineages written to sinks, raised as alerts, scheduled as timers (fault tolerance).
    sink_seen: Mutex<Dedupe>,
    alert_seen: Mutex<Dedupe>,
    timer_seen: Mutex<Dedupe>,
    /// Per sender id: a clone may send copies of its messages (receivers check lineages).
    replicated: Vec<AtomicBool>,
    /// Per sender id: the sender id of its clone while both get the same input (0 = none):
    /// a merging receiver may go by the faster one's progress.
    pair: Vec<AtomicU32>,
    /// Handovers in progress or done (§5.3).
    handovers: Mutex<Vec<Handover>>,
    /// Guarantees off: a fresh "clock" per update, so the store never emulates one.
    untagged: AtomicU64,
    /// Packet-log watermark at the last store GC (duplicate sets forget below it).
    gc_mark: AtomicU64,
    /// Timers that reached a dead task, kept for the replay (with their clocks).
    lost_timers: Mutex<Vec<(u64, streamnf_store::Timer, u32)>>,
    /// Tasks whose NF panicked (task id, clock), for the root to fail over (§5.1), and
    /// whether the list is non-empty (checked per packet without the lock).
    panicked: Mutex<Vec<(usize, u64)>>,
    any_panicked: AtomicBool,
    /// The root is taking every task's lock (stop the world): workers stay off them.
    stopping: AtomicBool,
}

/// One partition handover (§5.3) from an old task to a new one at some clock: the new task
/// holds its input from that clock on until the old one has processed everything before
/// it and flushed its store operations; then the old task releases it. The tasks keep the
/// id and the clock (`Task::holds`, `Task::releases`); this is the shared verdict.
struct Handover {
    id: u64,
    released: bool,
    started: Instant,
    took: Option<Duration>,
}

impl Shared {
    /// Reads are logged under their inputs' tags (fault tolerance with guarantees on), so a
    /// replay or a clone reads what the original read.
    fn log_reads(&self) -> bool {
        self.ft && self.guarantees
    }

    fn push_to(&self, task: usize, batch: &mut Vec<Msg>) -> bool {
        let Some(q) = self.queues.get(task) else {
            batch.clear();
            return true;
        };
        let ok = q.try_push_batch(batch).is_ok();
        if ok {
            self.ring_workers();
        }
        ok
    }

    /// Wakes the worker threads (there are few: one per core).
    fn ring_workers(&self) {
        for b in &self.bells {
            b.ring();
        }
    }

    fn record_io_error(&self, e: io::Error) {
        let mut g = self.io_error.lock();
        if g.is_none() {
            *g = Some(e);
        }
        self.failed.store(true, Ordering::Release);
    }
}

/// One task as its worker holds it.
struct Task {
    id: usize,
    vertex: usize,
    index: u32,
    stats: TaskStats,
    monitor: TaskMonitor,
    /// Messages waiting for each task's queue (indexed by task id; most stay empty).
    outbox: Vec<Vec<Msg>>,
    bufs: TaskBuffers,
    since_publish: u64,
    /// Senders that can reach this task, in rank order (root first, then upstream tasks
    /// by vertex and index); ties between equal clocks go to the lower rank.
    sources: Vec<u32>,
    /// Rank of each sender id (`u32::MAX` = not a sender of this task).
    rank_of: Vec<u32>,
    /// With several senders: messages waiting for their clock's turn.
    reorder: Option<Reorder>,
    /// Progress this task published last.
    published: u64,
    /// Some task merging this task's output waits for its progress (workers are rung
    /// when it moves).
    notify: bool,
    /// Handovers this task takes partitions over in, not released yet: (id, clock). Its
    /// input from the smallest clock on waits in `held`.
    holds: Vec<(u64, u64)>,
    /// Handovers this task gives partitions away in, not released yet: (id, clock).
    releases: Vec<(u64, u64)>,
    /// Input held back by `holds`, in arrival order.
    held: VecDeque<Msg>,
    /// Smallest clock in `held` (u64::MAX when empty).
    held_min: u64,
    /// Lineages received from cloned senders (duplicate suppression at the queue, §5.2).
    seen: Dedupe,
    /// Numbers the inputs of one clock (update tags).
    msg_seq: MessageSeq,
    /// Crashed and not replaced yet: whatever reaches it is lost.
    dead: bool,
    /// Messages lost since it crashed.
    lost: u64,
    /// Clocks at which its NF panicked and the task was failed over (a second panic at
    /// one of them is only isolated).
    panic_clocks: Vec<u64>,
    /// Extra time per message in nanoseconds (straggler injection; 0 = none).
    straggle_ns: u64,
    /// Reads fetched ahead for the batch being processed (asynchronous NFs).
    prefetched: Prefetched,
    /// The per-flow keys the NF named for the input being processed (asynchronous NFs with
    /// logged reads; see [`crate::prefetch::declared_keys`]).
    declared: Vec<streamnf_store::StateKey>,
}

impl Task {
    /// Smallest clock this task must not process yet (u64::MAX: none).
    fn hold_from(&self) -> u64 {
        self.holds.iter().map(|h| h.1).min().unwrap_or(u64::MAX)
    }
}

/// The clock-ordered merge of a task with several senders (§5, chain-wide ordering): each
/// sender's messages arrive in clock order; a message is processed once no sender can
/// still send an earlier clock, so the task sees its input in the single-instance order.
#[derive(Default)]
struct Reorder {
    waiting: BTreeMap<(u64, u32, u64), Msg>,
    /// Clock of the last message received from each sender (by rank); 0 = none yet.
    last_recv: Vec<u64>,
    seq: u64,
}

/// A worker's scratch space, reused across batches.
#[derive(Default)]
struct Scratch {
    input: Vec<Msg>,
    settle: Vec<(u64, u32, bool)>,
    sink_out: Vec<(usize, Packet, u64)>,
    alerts: Vec<(AlertRecord, u64)>,
    latency: Vec<u64>,
    chosen: Vec<Chosen>,
    /// Buffers of finished packets, sent back to the root in batches.
    spare: Vec<Vec<u8>>,
    /// Collects an asynchronous NF's reads for a batch.
    prefetcher: Prefetcher,
}

/// Buffers per batch sent back to the root.
const SPARE_BATCH: usize = 128;

/// Keeps a finished packet's buffer for the root.
fn recycle(scratch: &mut Scratch, mut data: Vec<u8>) {
    data.clear();
    scratch.spare.push(data);
}

fn filter_admits(f: &Option<Filter>, p: &Packet) -> bool {
    f.as_ref().is_none_or(|f| f.matches(p))
}

/// A routed copy: route index, task id (`None` = a sink), partition, lineage.
type Chosen = (usize, Option<usize>, u16, u64);

/// Chooses the tasks of a vertex route for partition targets `t` at `clock`: the owner
/// (and its clone, if any) of the partition, or every active task for a broadcast.
#[allow(clippy::too_many_arguments)]
#[inline]
fn choose_tasks(
    tables: &[VertexTable],
    vertex: usize,
    first_task: usize,
    t: Targets,
    clock: u64,
    ri: usize,
    lineage: u64,
    emit: u32,
    chosen: &mut Vec<Chosen>,
) {
    let Some(table) = tables.get(vertex) else { return };
    table.with_epoch(clock, |e| match t {
        Targets::One(p) => {
            let lin = child_lineage(lineage, emit, ri as u32, 0);
            let p16 = p as u16;
            if let Some(&o) = e.owner.get(p) {
                chosen.push((ri, Some(first_task + usize::from(o)), p16, lin));
            }
            if let Some(&r) = e.replica.get(p) {
                if r != NO_REPLICA {
                    chosen.push((ri, Some(first_task + usize::from(r)), p16, lin));
                }
            }
        }
        Targets::All => {
            for &t in &e.active {
                let lin = child_lineage(lineage, emit, ri as u32, 1 + u32::from(t));
                chosen.push((ri, Some(first_task + usize::from(t)), t, lin));
            }
        }
    });
}

/// Sends `pkt` (emit number `emit` of the message of lineage `lineage`) along `routes`:
/// copies to every admitting route but the last, which gets the packet. Returns (task
/// deliveries, sink deliveries).
#[allow(clippy::too_many_arguments)]
fn route_packet(
    tables: &[VertexTable],
    src: u32,
    routes: &[Route],
    pkt: Packet,
    clock: u64,
    lineage: u64,
    emit: u32,
    outbox: &mut [Vec<Msg>],
    sinks: &mut Vec<(usize, Packet, u64)>,
    chosen: &mut Vec<Chosen>,
) -> (u32, u32) {
    chosen.clear();
    for (ri, r) in routes.iter().enumerate() {
        if !filter_admits(&r.filter, &pkt) {
            continue;
        }
        match &r.target {
            Target::Sink(_) => chosen.push((ri, None, 0, child_lineage(lineage, emit, ri as u32, 0))),
            Target::Vertex { vertex, first_task, rule, .. } => {
                let t = rule.packet_partition(&pkt);
                choose_tasks(tables, *vertex, *first_task, t, clock, ri, lineage, emit, chosen);
            }
        }
    }
    let (mut to_tasks, mut to_sinks) = (0, 0);
    let n = chosen.len();
    let mut pkt = Some(pkt);
    for (i, &(ri, task, part, lin)) in chosen.iter().enumerate() {
        let Some(p) = (if i + 1 == n { pkt.take() } else { pkt.clone() }) else { break };
        match (&routes[ri].target, task) {
            (Target::Sink(s), _) => {
                sinks.push((*s, p, lin));
                to_sinks += 1;
            }
            (Target::Vertex { port, .. }, Some(t)) => {
                let ts_ns = p.ts_ns;
                if let Some(ob) = outbox.get_mut(t) {
                    ob.push(Msg {
                        src,
                        port: *port,
                        part,
                        clock,
                        ts_ns,
                        lineage: lin,
                        body: Body::Packet(p),
                    });
                    to_tasks += 1;
                }
            }
            _ => {}
        }
    }
    (to_tasks, to_sinks)
}

/// Sends a context message (emit number `emit` of lineage `lineage`) along `routes`
/// (sinks take packets only).
#[allow(clippy::too_many_arguments)]
fn route_context(
    tables: &[VertexTable],
    src: u32,
    routes: &[Route],
    msg: &ContextMsg,
    clock: u64,
    ts_ns: u64,
    lineage: u64,
    emit: u32,
    outbox: &mut [Vec<Msg>],
    chosen: &mut Vec<Chosen>,
) -> u32 {
    chosen.clear();
    for (ri, r) in routes.iter().enumerate() {
        if let Target::Vertex { vertex, first_task, rule, .. } = &r.target {
            let t = rule.context_partition(msg);
            choose_tasks(tables, *vertex, *first_task, t, clock, ri, lineage, emit, chosen);
        }
    }
    let mut n = 0;
    for &(ri, task, part, lin) in chosen.iter() {
        if let (Target::Vertex { port, .. }, Some(t)) = (&routes[ri].target, task) {
            if let Some(ob) = outbox.get_mut(t) {
                let body = Body::Context(msg.clone());
                ob.push(Msg { src, port: *port, part, clock, ts_ns, lineage: lin, body });
                n += 1;
            }
        }
    }
    n
}

/// Where and when an input runs at `task`, for flow partition `part`.
fn call_site<'a>(
    sh: &'a Shared,
    task: &Task,
    part: u16,
    clock: u64,
    now_ns: u64,
    first_seq: u32,
) -> CallSite<'a> {
    CallSite {
        store: &*sh.store,
        dag_id: sh.dag.id,
        vertex: task.vertex as u32,
        task: u32::from(part),
        slot: task.index,
        per_flow: &sh.per_flow[task.vertex],
        clock,
        now_ns,
        first_seq,
        log_reads: sh.log_reads(),
        untagged: (!sh.guarantees).then_some(&sh.untagged),
        prefetched: None,
        declared: &[],
    }
}

/// Moves the alerts and timers an NF call raised out of `task.bufs`: alerts to `alerts`,
/// timers to the store (for partition `part`). With fault tolerance, those a replay or a
/// clone raises again (same lineage) are dropped.
fn take_alerts_and_timers(
    sh: &Shared,
    task: &mut Task,
    part: u16,
    clock: u64,
    ts_ns: u64,
    lineage: u64,
    alerts: &mut Vec<(AlertRecord, u64)>,
) {
    let vid = task.vertex;
    for (k, a) in task.bufs.alerts.drain(..).enumerate() {
        task.stats.alerts += 1;
        let key = if sh.ft && lineage != 0 { item_key(lineage, 1, k as u32) } else { 0 };
        alerts.push((
            AlertRecord {
                kind: a.kind,
                vertex: sh.dag.vertices[vid].name.clone(),
                task: task.index,
                clock,
                ts_ns,
                fields: a.fields,
            },
            key,
        ));
    }
    for (k, (at, payload)) in task.bufs.timers.drain(..).enumerate() {
        if sh.ft && lineage != 0 {
            let mut seen = lock_seen(sh, &sh.timer_seen);
            if !seen.admit(item_key(lineage, 2, k as u32), clock) {
                continue;
            }
        }
        sh.store.schedule_timer(at, sh.dag.id, vid as u32, Some(u32::from(part)), payload);
        sh.due.note(at);
    }
}

/// Runs one input that has no packet — a state-change callback or a timer — at `task`
/// (whichever thread holds it) for partition `part`: its alerts go to `alerts`, its timers
/// to the store; what it emits is discarded and counted.
#[allow(clippy::too_many_arguments)]
fn run_no_packet(
    sh: &Shared,
    task: &mut Task,
    input: NfInput<'_>,
    part: u16,
    clock: u64,
    now_ns: u64,
    alerts: &mut Vec<(AlertRecord, u64)>,
) {
    let vid = task.vertex;
    let mut site = call_site(sh, task, part, clock, now_ns, 0);
    site.prefetched = Some(&task.prefetched);
    invoke(&*sh.dag.vertices[vid].nf, &site, input, &mut task.bufs, &mut task.stats);
    task.stats.discarded_emits += task.bufs.emits.len() as u64;
    task.bufs.emits.clear();
    take_alerts_and_timers(sh, task, part, clock, now_ns, 0, alerts);
}

/// Waits `ns` nanoseconds on this thread (straggler injection; spins below 50 µs, where
/// sleeping is too coarse).
fn straggle_for(ns: u64) {
    let t0 = Instant::now();
    let d = Duration::from_nanos(ns);
    if ns >= 50_000 {
        std::thread::sleep(d);
    }
    while t0.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Most messages of a clock-ordered task's turn whose reads are prefetched together.
const PREFETCH_MAX: usize = 256;

/// Asynchronous NFs: fetches the reads the packets of `batch` need in one store call (one
/// round trip on Redis), so the NF's reads while the batch runs are answered from
/// `task.prefetched`, which the batch's end clears.
fn prefetch_batch<'m>(
    sh: &Shared,
    task: &mut Task,
    batch: impl Iterator<Item = &'m Msg>,
    prefetcher: &mut Prefetcher,
) {
    let nf = &*sh.dag.vertices[task.vertex].nf;
    let site = prefetch_site(sh, task);
    let packets: Vec<BatchPacket<'_>> = batch
        .filter_map(|m| match &m.body {
            Body::Packet(p) => Some((usize::from(m.port), u32::from(m.part), p)),
            _ => None,
        })
        .collect();
    task.stats.prefetched_reads += prefetcher.run(nf, &site, &packets, &*sh.store, &task.prefetched);
}

/// Where `task`'s prefetches build their keys.
fn prefetch_site<'a>(sh: &'a Shared, task: &Task) -> PrefetchSite<'a> {
    PrefetchSite {
        dag_id: sh.dag.id,
        vertex: task.vertex as u32,
        slot: task.index,
        per_flow: &sh.per_flow[task.vertex],
    }
}

/// Asynchronous NFs with logged reads: fetches, as logged reads under their declared tags,
/// the declared keys of the packets at the front of `upcoming` that can share a round — up
/// to [`PREFETCH_MAX`] packets that run now (before `hold`, nothing held), each the first
/// input of its flow partition at its clock, no two of one partition (so none of them can
/// change what another one fetched) — and returns how many messages the round covers (0:
/// the next message runs without a prefetch).
fn prefetch_logged_round(
    sh: &Shared,
    task: &mut Task,
    upcoming: &[Msg],
    hold: u64,
    prefetcher: &mut Prefetcher,
) -> usize {
    if !task.held.is_empty() {
        return 0;
    }
    let mut round: Vec<(usize, u32, u64, &Packet)> = Vec::new();
    for m in upcoming.iter().take(PREFETCH_MAX) {
        let Body::Packet(p) = &m.body else { break };
        let part = u32::from(m.part);
        if m.clock >= hold || round.iter().any(|r| r.1 == part) || !task.msg_seq.is_first(m.clock, m.part) {
            break;
        }
        round.push((usize::from(m.port), part, m.clock, p));
    }
    if !round.is_empty() {
        let nf = &*sh.dag.vertices[task.vertex].nf;
        let site = prefetch_site(sh, task);
        task.stats.prefetched_reads += prefetcher.run_logged(nf, &site, &round, &*sh.store, &task.prefetched);
    }
    round.len()
}

/// Processes one message at `task` and records how its clock settles.
fn process_message(sh: &Shared, task: &mut Task, msg: Msg, scratch: &mut Scratch) {
    let vid = task.vertex;
    // A clone's copy of a message this task already had: suppressed at the queue (§5.2).
    if sh.replicated.get(msg.src as usize).is_some_and(|r| r.load(Ordering::Relaxed))
        && !task.seen.admit(msg.lineage, msg.clock)
    {
        task.stats.duplicates_suppressed += 1;
        if !matches!(msg.body, Body::Timer(..)) {
            scratch.settle.push((msg.clock, 1, false));
        }
        return;
    }
    // One message in TASK_LATENCY_SAMPLE has its processing time (the NF call with its
    // state operations, and an injected straggler delay) recorded for the vertex manager.
    let timed = crate::stats::latency_sampled(msg.clock, TASK_LATENCY_SAMPLE).then(Instant::now);
    if task.straggle_ns > 0 {
        straggle_for(task.straggle_ns);
    }
    let Msg { port, part, clock, ts_ns, lineage, body, .. } = msg;
    if let Body::Timer(payload, first_seq) = body {
        task.stats.timers += 1;
        run_no_packet(sh, task, NfInput::Timer(&payload, first_seq), part, clock, ts_ns, &mut scratch.alerts);
        sh.timers_in_flight.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let src = task.id as u32 + 1;
    let first_seq = task.msg_seq.next(clock, part);
    if let (true, true, Body::Packet(p)) = (sh.prefetching[vid], sh.log_reads(), &body) {
        let psite = prefetch_site(sh, task);
        declared_keys(
            &*sh.dag.vertices[vid].nf,
            &psite,
            usize::from(port),
            u32::from(part),
            p,
            &mut task.declared,
        );
    } else {
        task.declared.clear();
    }
    let mut site = call_site(sh, task, part, clock, ts_ns, first_seq);
    site.prefetched = Some(&task.prefetched);
    site.declared = &task.declared;
    let nf = &*sh.dag.vertices[vid].nf;
    let panics = task.stats.nf_panics;
    let mut pkt = None;
    match body {
        Body::Packet(mut p) => {
            task.stats.packets_in += 1;
            task.stats.bytes_in += p.data.len() as u64;
            task.monitor.record_packet(p.data.len());
            invoke(nf, &site, NfInput::Packet(usize::from(port), &mut p), &mut task.bufs, &mut task.stats);
            pkt = Some(p);
        }
        Body::Context(m) => {
            task.stats.contexts_in += 1;
            invoke(nf, &site, NfInput::Context(usize::from(port), &m), &mut task.bufs, &mut task.stats);
        }
        Body::Timer(..) => {}
    }
    if let Some(t0) = timed {
        task.monitor.record_latency(t0.elapsed().as_nanos() as u64);
    }
    if task.stats.nf_panics > panics && sh.ft && sh.guarantees {
        // A panic is a task failure (§5.1): the task stops here and the root replaces it.
        churn::note_panic(sh, task, clock);
    }
    take_alerts_and_timers(sh, task, part, clock, ts_ns, lineage, &mut scratch.alerts);
    let routes = &sh.out_routes[vid];
    let packet_emits = task.bufs.emits.iter().filter(|e| matches!(e, Emit::Packet(_))).count();
    let had_packet = pkt.is_some();
    let mut left = false;
    let (mut to_tasks, mut to_sinks, mut seen) = (0u32, 0u32, 0);
    for (emit, e) in task.bufs.emits.drain(..).enumerate() {
        let emit = emit as u32;
        let (port, out) = match e {
            Emit::Context(p, m) => {
                task.stats.contexts_out += 1;
                if let Some(r) = routes.get(p) {
                    to_tasks += route_context(
                        &sh.tables,
                        src,
                        r,
                        &m,
                        clock,
                        ts_ns,
                        lineage,
                        emit,
                        &mut task.outbox,
                        &mut scratch.chosen,
                    );
                }
                continue;
            }
            Emit::NewPacket(p, mut np) => {
                np.meta.clock = clock;
                (p, np)
            }
            Emit::Packet(p) => {
                seen += 1;
                let Some(cur) = pkt.as_ref() else { continue };
                let out = if seen == packet_emits {
                    match pkt.take() {
                        Some(x) => x,
                        None => continue,
                    }
                } else {
                    cur.clone()
                };
                (p, out)
            }
        };
        let Some(r) = routes.get(port) else { continue };
        let (t, s) = route_packet(
            &sh.tables,
            src,
            r,
            out,
            clock,
            lineage,
            emit,
            &mut task.outbox,
            &mut scratch.sink_out,
            &mut scratch.chosen,
        );
        if t + s > 0 {
            task.stats.packets_out += 1;
            left = true;
        }
        to_tasks += t;
        to_sinks += s;
    }
    if had_packet && !left {
        task.stats.dropped += 1;
    }
    if let Some(p) = pkt {
        recycle(scratch, p.data);
    }
    // The consumed message's reference passes to its first child; extra children add
    // references now, before the outbox is flushed.
    if to_tasks > 1 {
        if let Err(e) = sh.log.add_refs(clock, to_tasks - 1) {
            sh.record_io_error(io::Error::other(format!("packet log: {e}")));
        }
    }
    if to_tasks == 0 || to_sinks > 0 {
        scratch.settle.push((clock, u32::from(to_tasks == 0), to_sinks > 0));
    }
}

/// Tries to hand every non-empty outbox of `task` over; true when all are empty after.
fn flush_outboxes(sh: &Shared, task: &mut Task) -> bool {
    let mut all = true;
    for (t, ob) in task.outbox.iter_mut().enumerate() {
        if !ob.is_empty() && !sh.push_to(t, ob) {
            all = false;
        }
    }
    all
}

fn outbox_full(task: &Task) -> bool {
    task.outbox.iter().any(|ob| ob.len() >= OUTBOX_LIMIT)
}

/// Locks one of the shared duplicate sets and first forgets what finished clocks left in
/// it: whoever takes the lock anyway prunes, so the root never contends for it.
fn lock_seen<'a>(sh: &Shared, set: &'a Mutex<Dedupe>) -> parking_lot::MutexGuard<'a, Dedupe> {
    let mut seen = set.lock();
    seen.prune_below(sh.gc_mark.load(Ordering::Relaxed));
    seen
}

/// Writes what a batch produced for the sinks and alerts, then settles its clocks.
fn finish_batch(sh: &Shared, scratch: &mut Scratch, latency: &mut Latency) {
    if !scratch.sink_out.is_empty() {
        let mut sinks = sh.sinks.lock();
        let mut seen = sh.ft.then(|| lock_seen(sh, &sh.sink_seen));
        for (idx, p, lineage) in scratch.sink_out.drain(..) {
            if let Some(seen) = seen.as_mut() {
                if !seen.admit(lineage, p.meta.clock) {
                    let mut data = p.data;
                    data.clear();
                    scratch.spare.push(data);
                    continue;
                }
            }
            if crate::stats::latency_sampled(p.meta.clock, LATENCY_SAMPLE) {
                let slot = (p.meta.clock / LATENCY_SAMPLE) as usize % LATENCY_RING;
                let start = sh.latency_ring[slot].load(Ordering::Relaxed);
                scratch.latency.push(start);
            }
            if let Err(e) = sinks.write(idx, &p) {
                sh.record_io_error(e);
            }
            let mut data = p.data;
            data.clear();
            scratch.spare.push(data);
        }
    }
    if scratch.spare.len() >= SPARE_BATCH {
        // A full return channel means the root has plenty: these are freed instead.
        let _ = sh.spare_tx.try_send(std::mem::take(&mut scratch.spare));
    }
    if !scratch.latency.is_empty() {
        let now = sh.epoch.elapsed().as_nanos() as u64;
        for start in scratch.latency.drain(..) {
            if start > 0 && now >= start {
                latency.record(now - start);
            }
        }
    }
    if !scratch.alerts.is_empty() {
        push_alerts(sh, &mut scratch.alerts);
    }
    if !scratch.settle.is_empty() {
        if let Err(e) = sh.log.settle(&scratch.settle) {
            sh.record_io_error(io::Error::other(format!(
                "packet log: {} failures, first {:?}",
                e.failures.len(),
                e.failures.first()
            )));
        }
        scratch.settle.clear();
    }
}

/// Writes alerts to the alert sink; with fault tolerance, one raised again by a replay or a
/// clone (same key) is dropped.
fn push_alerts(sh: &Shared, batch: &mut Vec<(AlertRecord, u64)>) {
    let mut alerts = sh.alerts.lock();
    let mut seen = sh.ft.then(|| lock_seen(sh, &sh.alert_seen));
    for (a, key) in batch.drain(..) {
        if let (Some(seen), true) = (seen.as_mut(), key != 0) {
            if !seen.admit(key, a.clock) {
                continue;
            }
        }
        if let Err(e) = alerts.push(a) {
            sh.record_io_error(e);
        }
    }
}

/// Writes what the processed messages produced (sinks, alerts) and settles their clocks,
/// then hands the task's outboxes over; true when every outbox is empty after. Settling
/// comes first: a clock marked delivered is still referenced by its unsent children, and a
/// child consumed on another thread may release it the moment it is handed over.
fn hand_over(sh: &Shared, task: &mut Task, scratch: &mut Scratch, latency: &mut Latency) -> bool {
    finish_batch(sh, scratch, latency);
    flush_outboxes(sh, task)
}

/// What one turn of a task did.
#[derive(Default)]
struct Turn {
    /// Messages processed.
    worked: bool,
    /// An outbox could not be handed over.
    backed_up: bool,
    /// Messages wait for a sender's progress.
    waiting: bool,
}

/// Processes one message and counts it towards the next statistics publication.
fn process_counted(sh: &Shared, task: &mut Task, msg: Msg, scratch: &mut Scratch) {
    process_message(sh, task, msg, scratch);
    task.since_publish += 1;
}

/// Drops the holds of `task` whose handovers have been released (§5.3 step 5: the store
/// tells the new task the flows are its own now).
fn check_holds(sh: &Shared, task: &mut Task) {
    let h = sh.handovers.lock();
    task.holds.retain(|&(id, _)| h.iter().any(|x| x.id == id && !x.released));
}

/// Releases the handovers `task` gives partitions away in once it has processed every
/// message before their clock (§5.3 steps 3–5): every sender has handed over all messages
/// up to `clock − 1` (`min_progress`, read before the queue) and none of them is still
/// queued, held or waiting here. The task's store operations are flushed first, so the new
/// owner reads the latest state.
fn check_releases(sh: &Shared, task: &mut Task, min_progress: u64) {
    let q = &sh.queues[task.id];
    let mut earliest = u64::MAX;
    q.inspect(|m| earliest = earliest.min(m.clock));
    if let Some(m) = task.held.front() {
        earliest = earliest.min(m.clock);
    }
    if let Some(((c, _, _), _)) = task.reorder.as_ref().and_then(|r| r.waiting.first_key_value()) {
        earliest = earliest.min(*c);
    }
    let ready: Vec<u64> = task
        .releases
        .iter()
        .filter(|&&(_, clock)| min_progress >= clock.saturating_sub(1) && earliest >= clock)
        .map(|&(id, _)| id)
        .collect();
    if ready.is_empty() || !task.outbox.iter().all(Vec::is_empty) {
        return;
    }
    if let Err(e) = sh.store.flush() {
        sh.record_io_error(io::Error::other(format!("state store: {e}")));
        return;
    }
    {
        let mut h = sh.handovers.lock();
        for x in h.iter_mut().filter(|x| ready.contains(&x.id)) {
            x.released = true;
            x.took = Some(x.started.elapsed());
        }
    }
    task.releases.retain(|(id, _)| !ready.contains(id));
    sh.ring_workers();
}

/// One turn of `task`: takes what its queue holds, processes what may be processed now,
/// hands its outputs over and publishes how far it got.
fn task_turn(sh: &Shared, task: &mut Task, scratch: &mut Scratch, latency: &mut Latency) -> Turn {
    let mut turn = Turn::default();
    if task.dead {
        // A crashed task: what reaches it is lost until a new one takes its place.
        let Some(q) = sh.queues.get(task.id) else { return turn };
        let mut lost = Vec::new();
        while q.pop_batch(&mut scratch.input, 1024) > 0 {
            lost.append(&mut scratch.input);
        }
        turn.worked = !lost.is_empty();
        task.lost += churn::lose_messages(sh, lost, task.vertex);
        return turn;
    }
    if !task.holds.is_empty() {
        check_holds(sh, task);
    }
    if !flush_outboxes(sh, task) {
        turn.backed_up = true;
        if outbox_full(task) {
            turn.waiting = task.reorder.as_ref().is_some_and(|r| !r.waiting.is_empty());
            return turn;
        }
    }
    let Some(q) = sh.queues.get(task.id) else { return turn };
    let t0 = Instant::now();
    let hold = task.hold_from();
    // Sender progress is read before the queue: whatever a sender handed over up to its
    // progress is then already in the queue.
    let min_progress = task
        .sources
        .iter()
        .map(|&s| sh.progress.get(s as usize).map_or(0, |a| a.load(Ordering::Acquire)))
        .min()
        .unwrap_or(0);
    let mut safe = match task.reorder.take() {
        None => {
            let p = min_progress;
            let mut last = 0;
            // Held input that no pending handover holds back any more runs first, in the
            // order it came (with a later handover still pending, that is what precedes it).
            if task.held_min < hold {
                turn.worked = true;
                let held = std::mem::take(&mut task.held);
                task.held_min = u64::MAX;
                for msg in held {
                    if msg.clock < hold {
                        last = last.max(msg.clock);
                        process_counted(sh, task, msg, scratch);
                    } else {
                        task.held_min = task.held_min.min(msg.clock);
                        task.held.push_back(msg);
                    }
                }
            }
            if q.pop_batch(&mut scratch.input, sh.batch) == 0 {
                if last == 0 {
                    p
                } else {
                    p.max(last.saturating_sub(1))
                }
            } else {
                turn.worked = true;
                let mut input = std::mem::take(&mut scratch.input);
                let logged_rounds = sh.prefetching[task.vertex] && sh.log_reads();
                if sh.prefetching[task.vertex] && !logged_rounds {
                    prefetch_batch(sh, task, input.iter(), &mut scratch.prefetcher);
                }
                // With logged reads the batch is prefetched round by round (see
                // `prefetch_logged_round`); `covered` counts the current round's messages left.
                let mut covered = 0usize;
                let mut pending = input.drain(..);
                loop {
                    if logged_rounds && covered == 0 {
                        task.stats.prefetch_hits += task.prefetched.end_batch();
                        covered = prefetch_logged_round(
                            sh,
                            task,
                            pending.as_slice(),
                            hold,
                            &mut scratch.prefetcher,
                        );
                    }
                    let Some(msg) = pending.next() else { break };
                    covered = covered.saturating_sub(1);
                    if msg.clock >= hold || !task.held.is_empty() {
                        task.held_min = task.held_min.min(msg.clock);
                        task.held.push_back(msg);
                        continue;
                    }
                    last = msg.clock;
                    process_counted(sh, task, msg, scratch);
                }
                drop(pending);
                if sh.prefetching[task.vertex] {
                    task.stats.prefetch_hits += task.prefetched.end_batch();
                }
                scratch.input = input;
                if q.is_empty() {
                    p.max(last.saturating_sub(1))
                } else {
                    last.saturating_sub(1)
                }
            }
        }
        Some(mut r) => {
            let mut eff: Vec<u64> = task
                .sources
                .iter()
                .map(|&s| sh.progress.get(s as usize).map_or(0, |a| a.load(Ordering::Acquire)))
                .collect();
            while q.pop_batch(&mut scratch.input, 1024) > 0 {
                for msg in scratch.input.drain(..) {
                    let rank = task.rank_of.get(msg.src as usize).copied().unwrap_or(u32::MAX);
                    if let Some(l) = r.last_recv.get_mut(rank as usize) {
                        *l = (*l).max(msg.clock);
                    }
                    r.seq += 1;
                    r.waiting.insert((msg.clock, rank, r.seq), msg);
                }
            }
            // A sender may still send its last clock again, but nothing earlier.
            for (p, &l) in eff.iter_mut().zip(&r.last_recv) {
                *p = (*p).max(l.saturating_sub(1));
            }
            // A task and its clone send the same messages: the faster one's progress
            // counts for both (§5.2, "the faster of the two").
            for (i, &s) in task.sources.iter().enumerate() {
                let partner = sh.pair.get(s as usize).map_or(0, |a| a.load(Ordering::Acquire));
                if partner != 0 {
                    if let Some(&j) = task.rank_of.get(partner as usize) {
                        if let (Some(&a), Some(&b)) = (eff.get(i), eff.get(j as usize)) {
                            eff[i] = a.max(b);
                        }
                    }
                }
            }
            let bound = eff.iter().copied().min().unwrap_or(u64::MAX);
            let mut safe = bound;
            if sh.prefetching[task.vertex] && !sh.log_reads() {
                let due = r.waiting.iter().take_while(|(k, _)| k.0 <= bound && k.0 < hold);
                prefetch_batch(sh, task, due.map(|(_, m)| m).take(PREFETCH_MAX), &mut scratch.prefetcher);
            }
            while let Some(entry) = r.waiting.first_entry() {
                if entry.key().0 > bound || entry.key().0 >= hold {
                    break;
                }
                if outbox_full(task) && !hand_over(sh, task, scratch, latency) {
                    safe = entry.key().0.saturating_sub(1);
                    turn.backed_up = true;
                    break;
                }
                let msg = entry.remove();
                turn.worked = true;
                process_counted(sh, task, msg, scratch);
            }
            if sh.prefetching[task.vertex] {
                task.stats.prefetch_hits += task.prefetched.end_batch();
            }
            turn.waiting = !r.waiting.is_empty();
            if let Some(((c, _, _), _)) = r.waiting.first_key_value() {
                safe = safe.min(c.saturating_sub(1));
            }
            task.reorder = Some(r);
            safe
        }
    };
    // A task holding input for a handover has not sent what that input will produce.
    safe = safe.min(hold.saturating_sub(1));
    if let Some(m) = task.held.front() {
        safe = safe.min(m.clock.saturating_sub(1));
        turn.waiting = true;
    }
    if turn.worked {
        let busy = t0.elapsed().as_nanos() as u64;
        task.stats.busy_ns += busy;
        task.monitor.add_busy_ns(busy);
    }
    if hand_over(sh, task, scratch, latency) {
        if safe > task.published {
            task.published = safe;
            if let Some(a) = sh.progress.get(task.id + 1) {
                a.store(safe, Ordering::Release);
            }
            if task.notify {
                sh.ring_workers();
            }
        }
    } else {
        turn.backed_up = true;
    }
    if !task.releases.is_empty() {
        check_releases(sh, task, min_progress);
        turn.waiting |= !task.releases.is_empty();
    }
    if task.since_publish >= PUBLISH_EVERY {
        task.monitor.publish();
        task.since_publish = 0;
    }
    if !task.seen.is_empty() {
        task.seen.prune_below(sh.gc_mark.load(Ordering::Relaxed));
    }
    turn
}

/// One pass over the tasks, downstream first, running each one no other thread holds.
fn run_tasks(sh: &Shared, scratch: &mut Scratch, latency: &mut Latency) -> Turn {
    let mut all = Turn::default();
    for slot in sh.tasks.iter().rev() {
        // The root is stopping the world (a replay): let it take every task.
        if sh.stopping.load(Ordering::Acquire) {
            all.waiting = true;
            break;
        }
        if let Some(mut task) = slot.try_lock() {
            let t = task_turn(sh, &mut task, scratch, latency);
            all.worked |= t.worked;
            all.backed_up |= t.backed_up;
            all.waiting |= t.waiting;
        }
    }
    all
}

/// True when no task holds or waits for a message.
fn all_idle(sh: &Shared) -> bool {
    sh.queues.iter().all(|q| q.is_empty())
        && sh.tasks.iter().all(|t| {
            t.try_lock().is_some_and(|t| {
                t.outbox.iter().all(Vec::is_empty)
                    && t.held.is_empty()
                    && t.reorder.as_ref().is_none_or(|r| r.waiting.is_empty())
            })
        })
}

/// A worker thread: runs tasks, downstream first, until shutdown.
fn worker_loop(sh: Arc<Shared>, me: usize) -> Latency {
    let mut scratch = Scratch::default();
    let mut latency = Latency::default();
    loop {
        if sh.abort.load(Ordering::Acquire) {
            break;
        }
        let t = run_tasks(&sh, &mut scratch, &mut latency);
        if !t.worked {
            if sh.shutdown.load(Ordering::Acquire) && all_idle(&sh) {
                break;
            }
            // Work is queued but its tasks were busy on another thread: look again soon
            // rather than sleep.
            if sh.queues.iter().any(|q| q.has_messages()) {
                std::thread::yield_now();
                continue;
            }
            let wait =
                if t.backed_up || t.waiting { Duration::from_micros(50) } else { Duration::from_millis(2) };
            sh.bells[me].wait(wait);
        }
    }
    latency
}

/// Runs one chain as a physical DAG on worker threads; the caller's thread is the root.
pub struct ParallelEngine {
    sh: Arc<Shared>,
    /// Worker threads 1..W (worker 0 is the caller's thread, the root).
    workers: Vec<JoinHandle<Latency>>,
    /// The root's scratch space when it runs tasks.
    own_scratch: Scratch,
    clocks: ClockSource,
    input_routes: Vec<Route>,
    /// Root's batches per task.
    outbox: Vec<Vec<Msg>>,
    /// Root sink writes (input → sink edges).
    sink_out: Vec<(usize, Packet, u64)>,
    chosen: Vec<Chosen>,
    chain: ChainStats,
    started: Option<Instant>,
    idle: Duration,
    cur_ts: u64,
    tasks_per_vertex: Vec<usize>,
    /// Id of each vertex's first task.
    first_task: Vec<usize>,
    /// Input packets since the root last handed over all its batches.
    since_flush: usize,
    /// The store GC (every [`GC_EVERY`] root packets) is due at the next hand-over.
    gc_due: bool,
    /// A vertex-manager window (every [`HOUSEKEEPING_EVERY`]) is due at the next hand-over.
    housekeeping_due: bool,
    /// The log keeps whole frames (in the store), not input indexes.
    log_frames: bool,
    /// Packets to log before the next hand-over (admitted in one batch): whole packets
    /// for a store log and timers, `(clock, input index)` for the local log.
    pending_log: Vec<(u64, Packet)>,
    pending_index: Vec<(u64, u64)>,
    /// Extra references (fan-out at the root) to add once logged.
    pending_refs: Vec<(u64, u32)>,
    /// Logged packets that also reached a sink from the root.
    pending_marks: Vec<(u64, u32, bool)>,
    /// Frame buffers for the next inputs, and where the workers return them.
    spare: Vec<Vec<u8>>,
    spare_rx: crossbeam_channel::Receiver<Vec<Vec<u8>>>,
    manager: VertexManager,
    worker_count: usize,
    latency: Latency,
    /// Store subscriptions of the vertices that watch state (`None`: nobody watches).
    watchers: Option<Watchers>,
    /// Callbacks drained but not yet run (their task was busy), in delivery order.
    callbacks: VecDeque<Delivery>,
    /// Trace time of recent clocks, slot `clock % len` (empty unless some vertex watches
    /// state): a callback runs at the time of the input whose update it reports, as in the
    /// reference engine, however late the root gets to it.
    clock_ts: Vec<(u64, u64)>,
    /// Timers taken from the store but not handed over yet, with the clock they run at, in
    /// due order.
    /// A timer re-sent after a replay keeps its first update sequence number.
    timers: VecDeque<(u64, streamnf_store::Timer, Option<u32>)>,
    /// Senders of each task (ids: 0 = root, i + 1 = task i).
    task_sources: Vec<Vec<u32>>,
    /// Numbers the timers fired at one clock.
    timer_seq: TimerSeq,
    /// Churn: events applied, clones in progress, recoveries under way.
    churn: churn::ChurnState,
}

impl ParallelEngine {
    /// Builds the physical DAG of `dag` and starts its workers.
    pub fn new(
        dag: Arc<LogicalDag>,
        store: Arc<dyn StateStore>,
        cfg: EngineConfig,
        par: ParallelConfig,
    ) -> Result<ParallelEngine, String> {
        crate::engine::register_custom_ops(&dag, &*store)?;
        let workers = par.workers.max(1);
        let active: Vec<usize> = dag
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| par.instances.get(i).copied().unwrap_or(v.instances).max(1) as usize)
            .collect();
        // Task slots: the most instances each vertex may run at once (scale events and
        // clones use the slots beyond its starting instances).
        let tasks_per_vertex: Vec<usize> = active
            .iter()
            .enumerate()
            .map(|(i, &n)| n.max(par.slots.get(i).copied().unwrap_or(0) as usize).min(u16::MAX as usize - 1))
            .collect();
        let elastic: Vec<bool> = tasks_per_vertex.iter().zip(&active).map(|(s, a)| s > a).collect();
        let mut first_task = Vec::with_capacity(tasks_per_vertex.len());
        let mut total = 0;
        for n in &tasks_per_vertex {
            first_task.push(total);
            total += n;
        }
        let sinks =
            SinkSet::new(&dag.sinks(), cfg.out_dir.as_deref(), cfg.pcapng, cfg.keep, cfg.default_link);
        let scopes = scope_flowspaces(&dag);
        let route_of = |e: &streamnf_dag::Edge| -> Result<Option<Route>, String> {
            let target = match &e.to {
                Endpoint::Sink(n) => match sinks.index_of(n) {
                    Some(i) => Target::Sink(i),
                    None => return Ok(None),
                },
                Endpoint::Port { vertex, port } => {
                    let tasks = tasks_per_vertex[*vertex];
                    let vertex_id = *vertex;
                    let scope = scopes[*vertex].as_ref();
                    let rule = SplitRule::resolve(
                        &e.partition,
                        &dag.vertices[*vertex],
                        tasks,
                        &par.splitters,
                        scope,
                    )
                    .map_err(|m| format!("edge {}: {m}", e.label))?;
                    Target::Vertex {
                        port: u16::try_from(*port)
                            .map_err(|_| format!("edge {}: port index too large", e.label))?,
                        vertex: vertex_id,
                        first_task: first_task[*vertex],
                        rule,
                    }
                }
                Endpoint::Input => return Ok(None),
            };
            Ok(Some(Route { filter: e.filter.clone(), target }))
        };
        let collect = |from: &Endpoint| -> Result<Vec<Route>, String> {
            dag.edges_from(from).filter_map(|e| route_of(e).transpose()).collect()
        };
        let input_routes = collect(&Endpoint::Input)?;
        let mut out_routes = Vec::new();
        for (vid, v) in dag.vertices.iter().enumerate() {
            let mut ports = Vec::new();
            for port in 0..v.spec.outputs.len() {
                ports.push(collect(&Endpoint::Port { vertex: vid, port })?);
            }
            out_routes.push(ports);
        }
        let per_flow = dag
            .vertices
            .iter()
            .map(|v| v.spec.state.iter().map(|s| matches!(s.scope, StateScope::PerFlow(_))).collect())
            .collect();
        let clocks = ClockSource::resume(Arc::clone(&store), dag.id, par.persist_every)
            .map_err(|e| format!("root clock: {e}"))?;
        // Locally, the root replays from the caller's input (the trace in memory): the log
        // keeps input indexes, not frames. In the store, it keeps whole frames.
        let log = match par.packet_log {
            PacketLogMode::Local => PacketLog::referencing(par.log_capacity.max(1)),
            PacketLogMode::Store => PacketLog::in_store(par.log_capacity.max(1), Arc::clone(&store), dag.id)
                .map_err(|e| format!("packet log in the store: {e}"))?,
        };
        let log_frames = par.packet_log == PacketLogMode::Store;
        log.advance_to(clocks.peek());
        let mut manager =
            VertexManager::new(par.policy.unwrap_or_else(|| Box::new(ThresholdPolicy::default())));
        // Senders of each vertex: the root (input edges) and every task of each upstream
        // vertex, in rank order.
        let mut senders: Vec<Vec<u32>> = vec![Vec::new(); tasks_per_vertex.len()];
        for e in &dag.edges {
            if let Endpoint::Port { vertex: to, .. } = e.to {
                let from: Vec<u32> = match e.from {
                    Endpoint::Input => vec![0],
                    Endpoint::Port { vertex: u, .. } => {
                        (0..tasks_per_vertex[u]).map(|t| (first_task[u] + t + 1) as u32).collect()
                    }
                    Endpoint::Sink(_) => Vec::new(),
                };
                for s in from {
                    if !senders[to].contains(&s) {
                        senders[to].push(s);
                    }
                }
            }
        }
        for s in senders.iter_mut() {
            s.sort_unstable();
        }
        let mut merge = merge_needed(&dag, &scopes, &tasks_per_vertex);
        // Below a vertex whose flows may move between its tasks (it scales or gets
        // cloned), a flow can reach a task from two senders: merge in clock order there.
        if elastic.iter().any(|&e| e) {
            for e in &dag.edges {
                if let (Endpoint::Port { vertex: u, .. }, Endpoint::Port { vertex: v, .. }) = (&e.from, &e.to)
                {
                    if tasks_per_vertex[*u] > 1 {
                        merge[*v] = true;
                    }
                }
            }
        }
        let mut tasks: Vec<Task> = Vec::with_capacity(total);
        for (vid, n) in tasks_per_vertex.iter().enumerate() {
            for index in 0..*n {
                let id = first_task[vid] + index;
                let monitor = TaskMonitor::new(dag.vertices[vid].name.clone(), index);
                manager.register(monitor.handle());
                let sources = senders[vid].clone();
                let mut rank_of = vec![u32::MAX; total + 1];
                for (r, &s) in sources.iter().enumerate() {
                    rank_of[s as usize] = r as u32;
                }
                // Without guarantees there are no clocks to merge by: arrival order.
                let reorder = (merge[vid] && sources.len() > 1 && par.guarantees)
                    .then(|| Reorder { last_recv: vec![0; sources.len()], ..Reorder::default() });
                tasks.push(Task {
                    id,
                    vertex: vid,
                    index: index as u32,
                    stats: TaskStats::default(),
                    monitor,
                    outbox: (0..total).map(|_| Vec::new()).collect(),
                    bufs: TaskBuffers::default(),
                    since_publish: 0,
                    sources,
                    rank_of,
                    reorder,
                    published: 0,
                    notify: false,
                    holds: Vec::new(),
                    releases: Vec::new(),
                    held: VecDeque::new(),
                    held_min: u64::MAX,
                    seen: Dedupe::new(par.guarantees),
                    msg_seq: MessageSeq::default(),
                    dead: false,
                    lost: 0,
                    panic_clocks: Vec::new(),
                    straggle_ns: 0,
                    prefetched: Prefetched::default(),
                    declared: Vec::new(),
                });
            }
        }
        // A task rings the workers when it makes progress if some task merges its output.
        let merging: Vec<Vec<u32>> =
            tasks.iter().filter(|t| t.reorder.is_some()).map(|t| t.sources.clone()).collect();
        for t in tasks.iter_mut() {
            t.notify = merging.iter().any(|srcs| srcs.contains(&(t.id as u32 + 1)));
        }
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(64);
        let watchers = Watchers::subscribe(&dag, &*store);
        let task_sources: Vec<Vec<u32>> = tasks.iter().map(|t| t.sources.clone()).collect();
        let sh = Arc::new(Shared {
            queues: (0..total)
                .map(|_| Arc::new(MessageQueue::new(par.queue_capacity.max(par.batch))))
                .collect(),
            tasks: tasks.into_iter().map(Mutex::new).collect(),
            bells: (0..workers).map(|_| Doorbell::default()).collect(),
            log,
            out_routes,
            per_flow,
            sinks: Mutex::new(sinks),
            alerts: Mutex::new(AlertSink::new(cfg.alerts_out, cfg.keep)),
            shutdown: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            due: DueTimes::default(),
            timers_in_flight: AtomicU64::new(0),
            io_error: Mutex::new(None),
            failed: AtomicBool::new(false),
            batch: par.batch.max(1),
            spare_tx,
            latency_ring: (0..LATENCY_RING).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            progress: (0..=total).map(|_| AtomicU64::new(0)).collect(),
            tables: active.iter().map(|&n| VertexTable::new(n)).collect(),
            ft: par.fault_tolerance,
            prefetching: dag.vertices.iter().map(|v| v.nf.mode() == ProcessingMode::Asynchronous).collect(),
            guarantees: par.guarantees,
            sink_seen: Mutex::new(Dedupe::new(par.guarantees)),
            alert_seen: Mutex::new(Dedupe::new(par.guarantees)),
            timer_seen: Mutex::new(Dedupe::new(par.guarantees)),
            replicated: (0..=total).map(|_| AtomicBool::new(false)).collect(),
            pair: (0..=total).map(|_| AtomicU32::new(0)).collect(),
            handovers: Mutex::new(Vec::new()),
            untagged: AtomicU64::new(1),
            gc_mark: AtomicU64::new(0),
            lost_timers: Mutex::new(Vec::new()),
            panicked: Mutex::new(Vec::new()),
            any_panicked: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            dag,
            store,
        });
        // The caller's thread is the root and helps with the tasks; W − 1 more threads.
        let mut handles = Vec::with_capacity(workers);
        for w in 1..workers {
            let shc = Arc::clone(&sh);
            let h = std::thread::Builder::new()
                .name(format!("streamnf-worker-{w}"))
                .spawn(move || worker_loop(shc, w))
                .map_err(|e| format!("cannot start worker thread {w}: {e}"))?;
            handles.push(h);
        }
        Ok(ParallelEngine {
            outbox: (0..total).map(|_| Vec::new()).collect(),
            sh,
            workers: handles,
            own_scratch: Scratch::default(),
            clocks,
            input_routes,
            sink_out: Vec::new(),
            chosen: Vec::new(),
            chain: ChainStats::default(),
            started: None,
            idle: Duration::ZERO,
            cur_ts: 0,
            tasks_per_vertex,
            first_task,
            since_flush: 0,
            gc_due: false,
            housekeeping_due: false,
            log_frames,
            pending_log: Vec::new(),
            pending_index: Vec::new(),
            pending_refs: Vec::new(),
            pending_marks: Vec::new(),
            spare: Vec::new(),
            spare_rx,
            manager,
            worker_count: workers,
            latency: Latency::default(),
            clock_ts: if watchers.is_some() {
                vec![(0, 0); (2 * par.log_capacity).max(1 << 16).next_power_of_two()]
            } else {
                Vec::new()
            },
            watchers,
            callbacks: VecDeque::new(),
            timers: VecDeque::new(),
            timer_seq: TimerSeq::default(),
            churn: churn::ChurnState::new(par.auto_churn.filter(|_| par.fault_tolerance)),
            task_sources,
        })
    }

    /// The store this engine runs on.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.sh.store
    }

    /// Tasks per vertex, in vertex order.
    pub fn tasks_per_vertex(&self) -> &[usize] {
        &self.tasks_per_vertex
    }

    /// Tells the engine that the caller waited `d` between packets (pacing).
    pub fn add_idle(&mut self, d: Duration) {
        self.idle += d;
    }

    /// The root's periodic work, when due: the store GC below the packet log's watermark
    /// (and what else forgets finished clocks), clone and recovery decisions, and a
    /// vertex-manager window. Runs only when the root has handed over what it batched.
    fn periodic(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.gc_due) {
            let w = self.sh.log.watermark();
            self.sh.store.gc_below(w);
            self.sh.gc_mark.store(w, Ordering::Relaxed);
            for t in &self.sh.tables {
                t.forget_below(w);
            }
            if !self.churn.is_idle() {
                self.decide_clones(None)?;
                self.check_recoveries();
            }
        }
        if std::mem::take(&mut self.housekeeping_due) {
            self.housekeeping();
        }
        Ok(())
    }

    /// Tells the engine the caller is about to wait for the next packet (pacing): what the
    /// root has batched is handed over now instead of being held through the gap. The root
    /// runs it itself, while it would only wait, and wakes the workers only for what is
    /// left: at a low input rate no packet waits for a sleeping worker to wake up (a futex
    /// wake-up costs tens of µs on a busy machine), at a high one the root never idles.
    pub fn before_idle(&mut self) {
        self.flush_root_with(false);
        for _ in 0..IDLE_PASSES {
            if !self.run_own() {
                break;
            }
        }
        if !all_idle(&self.sh) {
            self.sh.ring_workers();
        }
        if let Err(e) = self.periodic() {
            self.sh.record_io_error(e);
        }
    }

    /// Root splitter entry for a captured frame: parses it once and hands it to the first
    /// vertices' tasks.
    pub fn process_frame(
        &mut self,
        link: LinkType,
        frame: &[u8],
        ts_ns: u64,
        orig_len: u32,
    ) -> io::Result<()> {
        let mut data = self.buffer();
        data.extend_from_slice(frame);
        self.process(Packet::with_orig_len(link, data, ts_ns, orig_len))
    }

    /// An empty frame buffer: one a worker returned, else a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        if let Some(b) = self.spare.pop() {
            return b;
        }
        if let Ok(batch) = self.spare_rx.try_recv() {
            self.spare = batch;
        }
        self.spare.pop().unwrap_or_default()
    }

    fn next_clock(&mut self) -> io::Result<u64> {
        self.clocks.next().map_err(|e: ClockError| io::Error::other(format!("root clock: {e}")))
    }

    /// Pushes one input packet into the chain (returns once it is queued).
    pub fn process(&mut self, mut pkt: Packet) -> io::Result<()> {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        if self.sh.failed.load(Ordering::Acquire) {
            if let Some(e) = self.sh.io_error.lock().take() {
                return Err(e);
            }
        }
        if self.sh.any_panicked.load(Ordering::Acquire) {
            self.fail_panicked()?;
        }
        if !self.churn.is_idle() {
            self.detect_failures(false)?;
            self.check_recoveries();
        }
        if self.sh.due.any_due(pkt.ts_ns) || !self.timers.is_empty() {
            self.fire_timers(pkt.ts_ns)?;
        }
        self.cur_ts = pkt.ts_ns;
        let (index, drop) = self.chain.count_input(&pkt, self.sh.dag.malformed);
        let clock = self.next_clock()?;
        pkt.meta.clock = clock;
        pkt.meta.ingress_index = index;
        self.note_clock_ts(clock, pkt.ts_ns);
        if drop {
            return Ok(());
        }
        // The log keeps the packet's headers and its index in the input; the frame bytes
        // stay in the caller's trace, which outlives the run.
        let logged = self.log_frames.then(|| pkt.clone());
        if crate::stats::latency_sampled(clock, LATENCY_SAMPLE) {
            let slot = (clock / LATENCY_SAMPLE) as usize % LATENCY_RING;
            self.sh.latency_ring[slot].store(self.sh.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        let (to_tasks, to_sinks) = self.route_input(pkt, clock)?;
        if to_tasks == 0 {
            // Nothing downstream: the chain is done with it, no need to log it.
            if to_sinks == 0 {
                self.chain.unmatched_input += 1;
                self.chain.dropped += 1;
            }
        } else {
            match logged {
                Some(p) => self.pending_log.push((clock, p)),
                None => self.pending_index.push((clock, self.chain.packets_in - 1)),
            }
            if to_tasks > 1 {
                self.pending_refs.push((clock, to_tasks - 1));
            }
            if to_sinks > 0 {
                self.pending_marks.push((clock, 0, true));
            }
        }
        for t in 0..self.outbox.len() {
            if self.outbox[t].len() >= self.sh.batch {
                self.push_blocking(t)?;
            }
        }
        self.since_flush += 1;
        if self.since_flush >= self.sh.batch {
            self.flush_root();
            // The root takes one pass over the tasks no worker holds after every batch of
            // input: measured, this keeps the queues short (p50 latency 31 µs instead of
            // 725 µs with help only when a queue is half full) at the same throughput.
            self.run_own();
            self.run_callbacks(false)?;
        }
        // Periodic work waits until this packet has been handed over (below, or before the
        // caller idles), so the packet does not wait for it.
        self.gc_due |= self.chain.packets_in % GC_EVERY == 0;
        self.housekeeping_due |= self.chain.packets_in % HOUSEKEEPING_EVERY == 0;
        if self.since_flush == 0 {
            self.periodic()?;
        }
        Ok(())
    }

    /// Routes an input packet from the root (its first admission or a replay) and writes
    /// what goes straight to sinks. Returns (task deliveries, sink deliveries).
    fn route_input(&mut self, pkt: Packet, clock: u64) -> io::Result<(u32, u32)> {
        let routes = std::mem::take(&mut self.input_routes);
        let lineage = root_lineage(clock);
        let r = route_packet(
            &self.sh.tables,
            0,
            &routes,
            pkt,
            clock,
            lineage,
            0,
            &mut self.outbox,
            &mut self.sink_out,
            &mut self.chosen,
        );
        self.input_routes = routes;
        if !self.sink_out.is_empty() {
            let sh = &self.sh;
            let mut sinks = sh.sinks.lock();
            let mut seen = sh.ft.then(|| lock_seen(sh, &sh.sink_seen));
            for (idx, p, lin) in self.sink_out.drain(..) {
                if seen.as_mut().is_some_and(|seen| !seen.admit(lin, clock)) {
                    continue;
                }
                sinks.write(idx, &p)?;
            }
        }
        Ok(r)
    }

    /// Remembers the trace time of `clock` for callbacks (when some vertex watches state).
    #[inline]
    fn note_clock_ts(&mut self, clock: u64, ts_ns: u64) {
        let n = self.clock_ts.len();
        if n > 0 {
            self.clock_ts[(clock as usize) & (n - 1)] = (clock, ts_ns);
        }
    }

    /// Trace time of `clock` if still remembered, else the root's current time.
    fn clock_time(&self, clock: u64) -> u64 {
        match self.clock_ts.get((clock as usize) & self.clock_ts.len().wrapping_sub(1)) {
            Some(&(c, ts)) if c == clock => ts,
            _ => self.cur_ts,
        }
    }

    /// Runs the state-change callbacks drained so far on the root thread, each in its
    /// watching task (chosen by the changed key's hash). Only changes made at clocks the
    /// whole chain has finished (below the packet log's watermark) run, in clock order: by
    /// then every change at those clocks has been drained, so each watcher sees them in the
    /// order the single-instance run delivers them. A task a worker holds is not waited for
    /// unless `wait` (the end of the run): its callback and every later one stay queued, in
    /// order, for the next call. Returns true if any ran.
    fn run_callbacks(&mut self, wait: bool) -> io::Result<bool> {
        let Some(watchers) = self.watchers.as_mut() else { return Ok(false) };
        // Read the watermark before draining: every change below it is in the channel.
        let watermark = if wait { u64::MAX } else { self.sh.log.watermark() };
        self.sh.store.flush().map_err(|e| io::Error::other(format!("state store: {e}")))?;
        let fresh = watchers.drain();
        if !fresh.is_empty() {
            self.callbacks.extend(fresh);
            self.callbacks.make_contiguous().sort_by_key(|d| d.change.clock);
        }
        let mut ran = false;
        let mut alerts = Vec::new();
        while let Some(d) = self.callbacks.front() {
            if d.change.clock >= watermark {
                break;
            }
            let part = (d.key_hash % PARTITIONS as u64) as u16;
            let owner = self
                .sh
                .tables
                .get(d.vertex)
                .map_or(0, |t| t.with_epoch(d.change.clock, |e| e.owner[usize::from(part)]));
            let gid = self.first_task.get(d.vertex).copied().unwrap_or(0) + usize::from(owner);
            let Some(slot) = self.sh.tasks.get(gid) else {
                self.callbacks.pop_front();
                continue;
            };
            // Strictly in order, as the single-instance run delivers them: a busy task
            // holds back every later callback, not only its own.
            let guard = if wait { Some(slot.lock()) } else { slot.try_lock() };
            let Some(mut task) = guard else { break };
            let Some(d) = self.callbacks.pop_front() else { break };
            task.stats.callbacks += 1;
            let input = NfInput::StateChange(&d.change, d.first_seq);
            run_no_packet(
                &self.sh,
                &mut task,
                input,
                part,
                d.change.clock,
                self.clock_time(d.change.clock),
                &mut alerts,
            );
            ran = true;
        }
        if !alerts.is_empty() {
            push_alerts(&self.sh, &mut alerts);
        }
        Ok(ran)
    }

    /// One pass of the root over the tasks no worker holds; true if any worked.
    fn run_own(&mut self) -> bool {
        run_tasks(&self.sh, &mut self.own_scratch, &mut self.latency).worked
    }

    /// Runs own tasks while waiting for room elsewhere; sleeps a little when they are idle.
    fn help_or_wait(&mut self) {
        if !self.run_own() {
            self.sh.bells[0].wait(Duration::from_micros(20));
        }
    }

    /// Logs the packets whose messages are about to be handed over (one lock for the
    /// batch), with their extra references and delivery marks. Waits while the log is full:
    /// everything logged earlier has been handed over, so the tasks can make room.
    fn commit_log(&mut self) -> io::Result<()> {
        while !self.pending_log.is_empty() || !self.pending_index.is_empty() {
            let n = if self.pending_index.is_empty() {
                self.sh
                    .log
                    .try_admit_batch(&mut self.pending_log)
                    .map_err(|e| io::Error::other(format!("packet log: {}", e.error)))?
            } else {
                self.sh
                    .log
                    .try_admit_indexes(&mut self.pending_index)
                    .map_err(|e| io::Error::other(format!("packet log: {e}")))?
            };
            if n == 0 {
                // Full: everything logged earlier was handed over; the tasks (some of them
                // this thread's own) make room.
                self.help_or_wait();
            }
        }
        for (clock, k) in self.pending_refs.drain(..) {
            self.sh.log.add_refs(clock, k).map_err(|e| io::Error::other(format!("packet log: {e}")))?;
        }
        if !self.pending_marks.is_empty() {
            self.sh
                .log
                .settle(&self.pending_marks)
                .map_err(|e| io::Error::other(format!("packet log: {:?}", e.failures.first())))?;
            self.pending_marks.clear();
        }
        Ok(())
    }

    fn push_blocking(&mut self, t: usize) -> io::Result<()> {
        self.push_quietly(t)?;
        self.sh.ring_workers();
        Ok(())
    }

    /// [`Self::push_blocking`] without waking the workers.
    fn push_quietly(&mut self, t: usize) -> io::Result<()> {
        self.commit_log()?;
        let Some(q) = self.sh.queues.get(t).cloned() else { return Ok(()) };
        loop {
            match q.try_push_batch(&mut self.outbox[t]) {
                Ok(()) => return Ok(()),
                Err(crate::queue::PushError::Full) => self.help_or_wait(),
                Err(crate::queue::PushError::Closed) => return Err(io::Error::other("task queue closed")),
            }
        }
    }

    /// Hands every partial batch of the root over, then publishes the root's progress:
    /// every clock handed out so far is in the tasks' queues. `ring`: wake the workers.
    fn flush_root_with(&mut self, ring: bool) {
        if let Err(e) = self.commit_log() {
            self.sh.record_io_error(e);
            return;
        }
        for t in 0..self.outbox.len() {
            if !self.outbox[t].is_empty() {
                let pushed = if ring { self.push_blocking(t) } else { self.push_quietly(t) };
                if let Err(e) = pushed {
                    self.sh.record_io_error(e);
                }
            }
        }
        self.since_flush = 0;
        self.publish_root_progress(self.clocks.peek().saturating_sub(1), ring);
    }

    /// [`Self::flush_root_with`], waking the workers.
    fn flush_root(&mut self) {
        self.flush_root_with(true);
    }

    fn publish_root_progress(&self, p: u64, ring: bool) {
        if let Some(a) = self.sh.progress.first() {
            if a.load(Ordering::Relaxed) < p {
                a.store(p, Ordering::Release);
                if ring {
                    self.sh.ring_workers();
                }
            }
        }
    }

    /// A vertex-manager window (the store GC runs on its own schedule, `GC_EVERY`); with
    /// automatic churn, its hints become events.
    fn housekeeping(&mut self) {
        let sh = &self.sh;
        let now = sh.epoch.elapsed().as_nanos() as u64;
        let first = &self.first_task;
        let hints = self
            .manager
            .poll(now, |vertex, task| {
                sh.dag
                    .vertex_id(vertex)
                    .and_then(|v| sh.queues.get(first[v] + task))
                    .map(|q| (q.len(), q.capacity()))
                    .unwrap_or((0, 0))
            })
            .to_vec();
        if self.churn.auto.is_some() {
            if let Err(e) = self.auto_churn(&hints) {
                self.sh.record_io_error(e);
            }
        }
    }

    /// Takes the timers due at or before `now_ns` from the store and hands them, with those
    /// still waiting, in due order to their tasks, at the clock of the last packet handed
    /// out when they came due (a timer has no clock of its own, so it never renumbers
    /// packets; see [`streamnf_dag::NetworkFunction::on_timer`]). A timer never runs early:
    /// it is sent only once every upstream task of its task has handed over all its messages
    /// up to that clock, and it queues behind them (and behind the root's own). A timer that
    /// must wait holds back those after it. Returns true if any was handed over.
    fn fire_timers(&mut self, now_ns: u64) -> io::Result<bool> {
        let clock = self.clocks.peek().saturating_sub(1);
        // Forget first, then ask the store: a task notes a timer only after scheduling it,
        // so a timer noted before the forget is already in the store's answer.
        let due = if self.sh.due.any_due(now_ns) {
            self.sh.due.forget_through(now_ns);
            self.sh.store.due_timers(now_ns)
        } else {
            Vec::new()
        };
        for t in due {
            if t.dag == self.sh.dag.id && (t.vertex as usize) < self.tasks_per_vertex.len() {
                self.timers.push_back((clock, t, None));
            }
        }
        let mut sent = false;
        while let Some((clock, t, _)) = self.timers.front() {
            let (clock, vid) = (*clock, t.vertex as usize);
            let part = (t.task.unwrap_or(0) as usize).min(PARTITIONS - 1);
            let owner = self.sh.tables[vid].with_epoch(clock, |e| usize::from(e.owner[part]));
            let gid = self.first_task[vid] + owner.min(self.tasks_per_vertex[vid] - 1);
            let ready = self.task_sources.get(gid).is_none_or(|srcs| {
                srcs.iter().filter(|&&s| s != 0).all(|&s| {
                    self.sh.progress.get(s as usize).is_none_or(|p| p.load(Ordering::Acquire) >= clock)
                })
            });
            if !ready {
                break;
            }
            let Some((clock, t, seq)) = self.timers.pop_front() else { break };
            let first_seq = seq.unwrap_or_else(|| self.timer_seq.next(clock, vid));
            self.send_timer(gid, part as u16, clock, t, first_seq);
            sent = true;
        }
        Ok(sent)
    }

    /// Queues a due timer for task `gid` in the root's outbox.
    fn send_timer(&mut self, gid: usize, part: u16, clock: u64, t: streamnf_store::Timer, first_seq: u32) {
        self.outbox[gid].push(Msg {
            src: 0,
            port: 0,
            part,
            clock,
            ts_ns: t.at_ns,
            lineage: 0,
            body: Body::Timer(t.payload, first_seq),
        });
        self.sh.timers_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits for the chain to finish every packet, stops the workers, flushes sinks and
    /// alerts, and returns what the run produced.
    pub fn finish(mut self) -> io::Result<EngineReport> {
        self.detect_failures(true)?;
        self.flush_root();
        self.publish_root_progress(u64::MAX, true);
        loop {
            while !self.sh.log.is_empty() || self.sh.timers_in_flight.load(Ordering::Acquire) > 0 {
                // A panic near the end still fails its task over.
                if self.sh.any_panicked.load(Ordering::Acquire) {
                    self.fail_panicked()?;
                    self.detect_failures(true)?;
                }
                if self.sh.failed.load(Ordering::Acquire) {
                    let err = self.sh.io_error.lock().take();
                    self.stop();
                    return Err(err.unwrap_or_else(|| io::Error::other("a worker failed")));
                }
                self.help_or_wait();
            }
            // Changes of watched state not delivered yet run now; they may set timers or
            // change more watched state, so the loop goes round again.
            if self.run_callbacks(true)? {
                continue;
            }
            // Timers set while the last packets were processed, due by the last packet's
            // time, fire now (the reference engine fires them before that packet).
            if !self.fire_timers(self.cur_ts)? {
                break;
            }
            self.flush_root();
        }
        if let Some(w) = &self.watchers {
            w.unsubscribe(&*self.sh.store);
        }
        let busy = self.started.map(|s| s.elapsed().saturating_sub(self.idle)).unwrap_or_default();
        let (stats, vertex, latency) = self.stop();
        self.latency.merge(&latency);
        let events: Vec<serde_json::Value> =
            self.event_records().iter().filter_map(|r| serde_json::to_value(r).ok()).collect();
        let guarantees = self.sh.ft.then(|| {
            let queue_dups: u64 = self.sh.tasks.iter().map(|t| t.lock().stats.duplicates_suppressed).sum();
            let (sinks, alerts, timers) =
                (self.sh.sink_seen.lock(), self.sh.alert_seen.lock(), self.sh.timer_seen.lock());
            let on = self.sh.guarantees;
            serde_json::json!({
                "guarantees": if on { "on" } else { "off" },
                "duplicate_packets": sinks.leaked,
                "duplicate_packets_suppressed": sinks.suppressed,
                "duplicate_alerts": alerts.leaked,
                "duplicate_alerts_suppressed": alerts.suppressed,
                "duplicate_timers": timers.leaked,
                "duplicate_timers_suppressed": timers.suppressed,
                "duplicate_messages_at_queues": queue_dups,
            })
        });
        self.sh.store.gc_below(self.sh.log.watermark());
        self.housekeeping();
        let mut tasks: BTreeMap<String, Vec<TaskStats>> = BTreeMap::new();
        for (st, v) in stats.into_iter().zip(vertex) {
            tasks.entry(self.sh.dag.vertices[v].name.clone()).or_default().push(st);
        }
        let err = self.sh.io_error.lock().take();
        if let Some(e) = err {
            return Err(e);
        }
        let log_stats = self.sh.log.stats();
        self.chain.dropped += log_stats.undelivered;
        let mut sinks = self.sh.sinks.lock();
        self.chain.packets_out = sinks.counts();
        let output_files = sinks.finish()?;
        let sink_records = sinks.kept();
        drop(sinks);
        let mut alerts = self.sh.alerts.lock();
        alerts.flush()?;
        let _ = self.sh.store.flush();
        Ok(EngineReport {
            chain: std::mem::take(&mut self.chain),
            tasks,
            alerts: alerts.per_kind().clone(),
            alert_records: alerts.kept().to_vec(),
            sink_records,
            output_files,
            latency: std::mem::take(&mut self.latency),
            busy,
            manager: Some(self.manager.report()),
            workers: self.worker_count,
            events,
            guarantees,
        })
    }

    /// Stops the worker threads; returns every task (by id) and the latency histograms.
    fn stop(&mut self) -> (Vec<TaskStats>, Vec<usize>, Latency) {
        self.sh.shutdown.store(true, Ordering::Release);
        self.sh.ring_workers();
        let mut latency = Latency::default();
        for h in self.workers.drain(..) {
            if let Ok(l) = h.join() {
                latency.merge(&l);
            }
        }
        let mut stats = Vec::new();
        let mut vertex = Vec::new();
        for t in &self.sh.tasks {
            let mut t = t.lock();
            t.monitor.publish();
            stats.push(t.stats.clone());
            vertex.push(t.vertex);
        }
        (stats, vertex, latency)
    }

    /// The vertex manager's report so far.
    pub fn manager_report(&self) -> ManagerReport {
        self.manager.report()
    }
}

impl Drop for ParallelEngine {
    /// An engine dropped without [`ParallelEngine::finish`] (after an error) stops its
    /// workers at once: what is still queued is abandoned, and the run has already failed.
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.sh.abort.store(true, Ordering::Release);
            self.sh.log.close();
            for q in &self.sh.queues {
                q.close();
            }
            self.stop();
        }
    }
}
