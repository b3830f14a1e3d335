//! The engine: root splitter plus one task per vertex, processing each input packet
//! through the whole chain before the next (the reference semantics of §2: one instance
//! per NF, unbounded links).
//!
//! Root: assigns the logical clock (1, 2, 3 …), applies the malformed policy, applies
//! the input edges' filters. Tasks: call the NF with a [`TaskContext`](crate::context::TaskContext), then route what it
//! emitted along the edges of its output ports (filters applied there). Sinks: write.
//! Timers due in trace time fire before the packet that passes them, each with a fresh
//! logical clock. The engine never keeps NF state: only counters and the message queue.

use crate::alerts::{AlertRecord, AlertSink};
use crate::callbacks::{DueTimes, TimerSeq, Watchers};
use crate::context::{invoke, CallSite, Emit, NfInput, TaskBuffers};
use crate::sink::{SinkRecord, SinkSet};
use crate::stats::{ChainStats, Latency, TaskStats};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use streamnf_dag::{ContextMsg, Endpoint, LogicalDag, StateScope};
use streamnf_packet::{LinkType, Packet};
use streamnf_store::{StateStore, Value};

/// Inputs between two garbage collections of the store's clock logs.
const GC_EVERY: u64 = 256;

/// Where NF state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateMode {
    /// In the state store with clock-tagged updates (streamnf's model).
    Externalized,
    /// In a plain in-process map without clock tags: the "traditional NF" baseline, for
    /// benchmarks only (no failover, no scaling guarantees).
    Local,
}

/// Engine options.
pub struct EngineConfig {
    /// Directory for sink captures; none = count only.
    pub out_dir: Option<PathBuf>,
    /// Write `.pcapng` instead of `.pcap`.
    pub pcapng: bool,
    /// Alert output (JSON lines).
    pub alerts_out: Option<Box<dyn io::Write + Send>>,
    /// Keep sink packets and alerts in memory (for comparisons and tests).
    pub keep: bool,
    /// Link type for empty captures.
    pub default_link: LinkType,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            out_dir: None,
            pcapng: false,
            alerts_out: None,
            keep: false,
            default_link: LinkType::Ethernet,
        }
    }
}

enum Payload {
    Packet(Packet),
    Context(ContextMsg),
}

struct Message {
    vertex: usize,
    port: usize,
    payload: Payload,
}

/// Target of an edge, resolved for routing.
#[derive(Clone)]
enum Route {
    Vertex {
        vertex: usize,
        port: usize,
    },
    /// Index into the engine's [`SinkSet`].
    Sink(usize),
}

struct RouteEdge {
    filter: Option<streamnf_filter::Filter>,
    route: Route,
}

/// Everything a finished run produced.
pub struct EngineReport {
    /// Chain-wide counters.
    pub chain: ChainStats,
    /// Per vertex name, per task counters.
    pub tasks: BTreeMap<String, Vec<TaskStats>>,
    /// Alerts per kind.
    pub alerts: BTreeMap<String, u64>,
    /// Alerts kept (when `keep`).
    pub alert_records: Vec<AlertRecord>,
    /// Sink packets kept (when `keep`).
    pub sink_records: BTreeMap<String, Vec<SinkRecord>>,
    /// Output captures written.
    pub output_files: Vec<PathBuf>,
    /// Per-packet latency through the chain (sampled: one packet in 8).
    pub latency: Latency,
    /// Wall time from the first input to the end, less the time the caller reported
    /// idle (pacing); excludes reading the trace.
    pub busy: std::time::Duration,
    /// The vertex manager's statistics and hints (parallel engine only).
    pub manager: Option<crate::manager::ManagerReport>,
    /// Worker threads the chain ran on.
    pub workers: usize,
    /// Churn events applied (parallel engine with `--event`), as JSON records.
    pub events: Vec<serde_json::Value>,
    /// Duplicate suppression counters (fault tolerance on), as JSON.
    pub guarantees: Option<serde_json::Value>,
}

/// Runs one chain over a sequence of packets.
pub struct Engine {
    dag: Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    next_clock: u64,
    input_routes: Vec<RouteEdge>,
    out_routes: Vec<Vec<Vec<RouteEdge>>>,
    per_flow: Vec<Vec<bool>>,
    queue: VecDeque<Message>,
    bufs: TaskBuffers,
    /// Due times of the timers not fired yet.
    due: DueTimes,
    chain: ChainStats,
    tasks: Vec<TaskStats>,
    sinks: SinkSet,
    alerts: AlertSink,
    latency: Latency,
    started: Option<Instant>,
    idle: std::time::Duration,
    sink_writes: u64,
    cur_ts: u64,
    nf_calls: u64,
    /// Frame buffers of finished packets, reused for the next inputs (a buffer pool in
    /// the manner of DPDK's mbuf pools: no allocation per packet, and the buffers stay
    /// in cache).
    spare: Vec<Vec<u8>>,
    /// Store subscriptions of the vertices that watch state (`None`: nobody watches).
    watchers: Option<Watchers>,
    /// Numbers the timers fired at one clock.
    timer_seq: TimerSeq,
    /// Numbers the inputs each vertex runs at one clock (update tags).
    msg_seq: Vec<crate::callbacks::MessageSeq>,
}

/// Most frame buffers kept for reuse.
const SPARE_BUFFERS: usize = 256;

/// Chain latency is measured for one input packet in this many (clock reads cost about
/// 25 ns each here, a tenth of a packet's budget).
const LATENCY_SAMPLE: u64 = 8;

/// NF calls are timed one in this many (and scaled up), to keep clock reads off the
/// per-packet path.
const BUSY_SAMPLE: u64 = 16;

fn route_of(ep: &Endpoint, sinks: &SinkSet) -> Option<Route> {
    match ep {
        Endpoint::Port { vertex, port } => Some(Route::Vertex { vertex: *vertex, port: *port }),
        Endpoint::Sink(n) => sinks.index_of(n).map(Route::Sink),
        Endpoint::Input => None,
    }
}

/// Registers every vertex's custom store operations (once per store, before a run).
pub(crate) fn register_custom_ops(dag: &LogicalDag, store: &dyn StateStore) -> Result<(), String> {
    store
        .register_custom_op(crate::context::RECORD_OP, crate::context::record_op())
        .map_err(|e| format!("cannot register the runtime's record operation: {e}"))?;
    for v in &dag.vertices {
        for (name, f) in v.nf.custom_ops() {
            store
                .register_custom_op(&name, f)
                .map_err(|e| format!("vertex \"{}\": cannot register custom op `{name}`: {e}", v.name))?;
        }
    }
    Ok(())
}

impl Engine {
    /// Prepares a run of `dag` on `store`; registers the NFs' custom store operations.
    pub fn new(
        dag: Arc<LogicalDag>,
        store: Arc<dyn StateStore>,
        cfg: EngineConfig,
    ) -> Result<Engine, String> {
        register_custom_ops(&dag, &*store)?;
        let watchers = Watchers::subscribe(&dag, &*store);
        let sinks =
            SinkSet::new(&dag.sinks(), cfg.out_dir.as_deref(), cfg.pcapng, cfg.keep, cfg.default_link);
        let collect = |from: &Endpoint| -> Vec<RouteEdge> {
            dag.edges_from(from)
                .filter_map(|e| {
                    route_of(&e.to, &sinks).map(|route| RouteEdge { filter: e.filter.clone(), route })
                })
                .collect()
        };
        let input_routes = collect(&Endpoint::Input);
        let out_routes = dag
            .vertices
            .iter()
            .enumerate()
            .map(|(vid, v)| {
                (0..v.spec.outputs.len()).map(|port| collect(&Endpoint::Port { vertex: vid, port })).collect()
            })
            .collect();
        let per_flow = dag
            .vertices
            .iter()
            .map(|v| v.spec.state.iter().map(|s| matches!(s.scope, StateScope::PerFlow(_))).collect())
            .collect();
        let chain = ChainStats::default();
        let msg_seq = (0..dag.vertices.len()).map(|_| crate::callbacks::MessageSeq::default()).collect();
        Ok(Engine {
            msg_seq,
            tasks: vec![TaskStats::default(); dag.vertices.len()],
            dag,
            store,
            next_clock: 1,
            input_routes,
            out_routes,
            per_flow,
            queue: VecDeque::new(),
            bufs: TaskBuffers::default(),
            due: DueTimes::default(),
            chain,
            sinks,
            alerts: AlertSink::new(cfg.alerts_out, cfg.keep),
            latency: Latency::default(),
            started: None,
            idle: std::time::Duration::ZERO,
            sink_writes: 0,
            cur_ts: 0,
            nf_calls: 0,
            spare: Vec::new(),
            watchers,
            timer_seq: TimerSeq::default(),
        })
    }

    /// The store this engine runs on.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The chain.
    pub fn dag(&self) -> &LogicalDag {
        &self.dag
    }

    /// An empty frame buffer, reused from a finished packet when there is one.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Takes back a finished packet's frame buffer for reuse.
    fn recycle(&mut self, pkt: Packet) {
        if self.spare.len() < SPARE_BUFFERS {
            let mut data = pkt.data;
            data.clear();
            self.spare.push(data);
        }
    }

    /// Root splitter entry for a captured frame: copies `frame` into a pooled buffer,
    /// parses it once and pushes it through the whole chain.
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

    /// Pushes one input packet through the whole chain.
    pub fn process(&mut self, mut pkt: Packet) -> io::Result<()> {
        let sampled = crate::stats::latency_sampled(self.chain.packets_in, LATENCY_SAMPLE);
        let start = if sampled || self.started.is_none() { Some(Instant::now()) } else { None };
        if self.started.is_none() {
            self.started = start;
        }
        if self.due.any_due(pkt.ts_ns) {
            self.fire_timers(pkt.ts_ns)?;
        }
        self.cur_ts = pkt.ts_ns;
        let (index, drop) = self.chain.count_input(&pkt, self.dag.malformed);
        pkt.meta.clock = self.next_clock;
        pkt.meta.ingress_index = index;
        self.next_clock += 1;
        if drop {
            self.recycle(pkt);
            return Ok(());
        }
        self.sink_writes = 0;
        let mut admitted = false;
        let routes = std::mem::take(&mut self.input_routes);
        let result = self.route_packet(&routes, pkt, &mut admitted);
        self.input_routes = routes;
        result?;
        if !admitted {
            self.chain.unmatched_input += 1;
        }
        self.drain()?;
        self.run_callbacks()?;
        if self.sink_writes == 0 {
            self.chain.dropped += 1;
        }
        // Every clock below the next one is fully processed: nothing can replay it in a
        // single-instance run, so the store may forget its clock logs.
        if self.chain.packets_in % GC_EVERY == 0 {
            self.store.gc_below(self.next_clock);
        }
        if let (true, Some(start)) = (sampled, start) {
            self.latency.record(start.elapsed().as_nanos() as u64);
        }
        Ok(())
    }

    /// Sends `pkt` along every route whose filter admits it (the last one gets the
    /// packet itself, earlier ones copies).
    fn route_packet(&mut self, routes: &[RouteEdge], pkt: Packet, admitted: &mut bool) -> io::Result<()> {
        let mut last: Option<&Route> = None;
        for r in routes {
            if r.filter.as_ref().is_none_or(|f| f.matches(&pkt)) {
                if let Some(prev) = last.replace(&r.route) {
                    let copy = self.copy_packet(&pkt);
                    self.deliver(prev, Payload::Packet(copy))?;
                }
            }
        }
        match last {
            Some(r) => {
                *admitted = true;
                self.deliver(r, Payload::Packet(pkt))
            }
            None => {
                self.recycle(pkt);
                Ok(())
            }
        }
    }

    /// A copy of `pkt` in a pooled buffer.
    fn copy_packet(&mut self, pkt: &Packet) -> Packet {
        let mut data = self.buffer();
        data.extend_from_slice(&pkt.data);
        Packet { data, ..*pkt }
    }

    fn deliver(&mut self, route: &Route, payload: Payload) -> io::Result<()> {
        match route {
            Route::Vertex { vertex, port } => {
                self.queue.push_back(Message { vertex: *vertex, port: *port, payload });
            }
            Route::Sink(idx) => {
                if let Payload::Packet(p) = payload {
                    self.sinks.write(*idx, &p)?;
                    self.sink_writes += 1;
                    self.recycle(p);
                }
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        while let Some(msg) = self.queue.pop_front() {
            self.run_task(msg)?;
        }
        Ok(())
    }

    fn run_task(&mut self, msg: Message) -> io::Result<()> {
        let vid = msg.vertex;
        let (clock, now_ns) = match &msg.payload {
            Payload::Packet(p) => (p.meta.clock, p.ts_ns),
            Payload::Context(_) => (self.current_clock(), self.current_ts()),
        };
        self.run_nf(vid, 0, clock, now_ns, msg.port, msg.payload)
    }

    fn current_clock(&self) -> u64 {
        self.next_clock.saturating_sub(1)
    }

    fn current_ts(&self) -> u64 {
        self.cur_ts
    }

    /// Calls the NF of `vid` on one input and routes what it emitted.
    fn run_nf(
        &mut self,
        vid: usize,
        task: u32,
        clock: u64,
        now_ns: u64,
        port: usize,
        mut payload: Payload,
    ) -> io::Result<()> {
        let stats = &mut self.tasks[vid];
        let input = match &mut payload {
            Payload::Packet(p) => {
                stats.packets_in += 1;
                stats.bytes_in += p.data.len() as u64;
                NfInput::Packet(port, p)
            }
            Payload::Context(m) => {
                stats.contexts_in += 1;
                NfInput::Context(port, m)
            }
        };
        let first_seq = self.msg_seq[vid].next(clock, 0);
        self.call_nf(vid, task, clock, now_ns, first_seq, input);
        self.after_nf(vid, task, clock, now_ns, payload)
    }

    /// Runs one input through the NF of `vid` with a fresh [`TaskContext`], isolating
    /// errors and panics (both drop what the input emitted) and updating the task's
    /// counters. What the NF emitted is left in the engine's buffers for [`Self::after_nf`].
    fn call_nf(
        &mut self,
        vid: usize,
        task: u32,
        clock: u64,
        now_ns: u64,
        first_seq: u32,
        input: NfInput<'_>,
    ) {
        self.nf_calls += 1;
        let t0 = (self.nf_calls % BUSY_SAMPLE == 0).then(Instant::now);
        let site = CallSite {
            store: &*self.store,
            dag_id: self.dag.id,
            vertex: vid as u32,
            task,
            slot: task,
            per_flow: &self.per_flow[vid],
            clock,
            now_ns,
            first_seq,
            log_reads: false,
            untagged: None,
            // No batches here: asynchronous NFs run synchronously (the reference).
            prefetched: None,
            declared: &[],
        };
        let stats = &mut self.tasks[vid];
        invoke(&*self.dag.vertices[vid].nf, &site, input, &mut self.bufs, stats);
        if let Some(t0) = t0 {
            stats.busy_ns += t0.elapsed().as_nanos() as u64 * BUSY_SAMPLE;
        }
    }

    fn after_nf(
        &mut self,
        vid: usize,
        task: u32,
        clock: u64,
        now_ns: u64,
        payload: Payload,
    ) -> io::Result<()> {
        for a in self.bufs.alerts.drain(..) {
            self.tasks[vid].alerts += 1;
            self.alerts.push(AlertRecord {
                kind: a.kind,
                vertex: self.dag.vertices[vid].name.clone(),
                task,
                clock,
                ts_ns: now_ns,
                fields: a.fields,
            })?;
        }
        for (at, p) in self.bufs.timers.drain(..) {
            self.store.schedule_timer(at, self.dag.id, vid as u32, Some(task), p);
            self.due.note(at);
        }
        let emits = std::mem::take(&mut self.bufs.emits);
        let mut pkt = match payload {
            Payload::Packet(p) => Some(p),
            Payload::Context(_) => None,
        };
        let last_packet_emit = emits.iter().filter(|e| matches!(e, Emit::Packet(_))).count();
        let had_packet = pkt.is_some();
        let mut left = false;
        let mut packet_emits_seen = 0;
        let mut emits = emits;
        for e in emits.drain(..) {
            let (port, out) = match e {
                Emit::Context(port, msg) => {
                    self.tasks[vid].contexts_out += 1;
                    let routes = self.take_routes(vid, port);
                    let mut result = Ok(());
                    for r in &routes {
                        result = self.deliver(&r.route, Payload::Context(msg.clone()));
                        if result.is_err() {
                            break;
                        }
                    }
                    self.put_routes(vid, port, routes);
                    result?;
                    continue;
                }
                Emit::NewPacket(port, mut np) => {
                    np.meta.clock = clock;
                    (port, np)
                }
                Emit::Packet(port) => {
                    packet_emits_seen += 1;
                    let Some(p) = pkt.as_ref() else { continue };
                    let out = if packet_emits_seen == last_packet_emit {
                        match pkt.take() {
                            Some(p) => p,
                            None => continue,
                        }
                    } else {
                        self.copy_packet(p)
                    };
                    (port, out)
                }
            };
            let routes = self.take_routes(vid, port);
            let mut admitted = false;
            let r = self.route_packet(&routes, out, &mut admitted);
            self.put_routes(vid, port, routes);
            r?;
            if admitted {
                self.tasks[vid].packets_out += 1;
                left = true;
            }
        }
        if had_packet && !left {
            self.tasks[vid].dropped += 1;
        }
        self.bufs.emits = emits;
        if let Some(p) = pkt {
            self.recycle(p);
        }
        Ok(())
    }

    fn take_routes(&mut self, vid: usize, port: usize) -> Vec<RouteEdge> {
        self.out_routes.get_mut(vid).and_then(|v| v.get_mut(port)).map(std::mem::take).unwrap_or_default()
    }

    fn put_routes(&mut self, vid: usize, port: usize, routes: Vec<RouteEdge>) {
        if let Some(slot) = self.out_routes.get_mut(vid).and_then(|v| v.get_mut(port)) {
            *slot = routes;
        }
    }

    /// Fires timers due at or before `now_ns`, in due order, at the clock of the last
    /// packet (a timer has no clock of its own, so it never renumbers packets; see
    /// [`streamnf_dag::NetworkFunction::on_timer`]). Its alerts and timers count; what it
    /// emits is discarded.
    fn fire_timers(&mut self, now_ns: u64) -> io::Result<()> {
        self.due.forget_through(now_ns);
        let due = self.store.due_timers(now_ns);
        for t in due {
            let vid = t.vertex as usize;
            if t.dag != self.dag.id || vid >= self.dag.vertices.len() {
                continue;
            }
            let clock = self.next_clock.saturating_sub(1);
            let first_seq = self.timer_seq.next(clock, vid);
            let task = t.task.unwrap_or(0);
            self.tasks[vid].timers += 1;
            self.call_nf(vid, task, clock, t.at_ns, 0, NfInput::Timer(&t.payload, first_seq));
            self.tasks[vid].discarded_emits += self.bufs.emits.len() as u64;
            self.bufs.emits.clear();
            self.after_nf(vid, task, clock, t.at_ns, Payload::Context(ContextMsg::Null))?;
            self.run_callbacks()?;
        }
        Ok(())
    }

    /// Delivers the changes of watched state made so far, and those the callbacks make in
    /// turn, until none is left (see [`crate::callbacks`]). A callback's alerts and timers
    /// count; what it emits is discarded.
    fn run_callbacks(&mut self) -> io::Result<()> {
        let Some(mut watchers) = self.watchers.take() else { return Ok(()) };
        let mut result = Ok(());
        loop {
            if let Err(e) = self.store.flush() {
                result = Err(io::Error::other(format!("state store: {e}")));
                break;
            }
            let deliveries = watchers.drain();
            if deliveries.is_empty() {
                break;
            }
            for d in deliveries {
                let clock = d.change.clock;
                self.tasks[d.vertex].callbacks += 1;
                self.call_nf(
                    d.vertex,
                    0,
                    clock,
                    self.cur_ts,
                    0,
                    NfInput::StateChange(&d.change, d.first_seq),
                );
                let emitted = self.bufs.emits.len() as u64;
                self.tasks[d.vertex].discarded_emits += emitted;
                self.bufs.emits.clear();
                result = self.after_nf(d.vertex, 0, clock, self.cur_ts, Payload::Context(ContextMsg::Null));
                if result.is_err() {
                    break;
                }
            }
            if result.is_err() {
                break;
            }
        }
        self.watchers = Some(watchers);
        result
    }

    /// Removes and returns the sink packets kept so far (with `keep`), per sink port.
    pub fn take_outputs(&mut self) -> BTreeMap<String, Vec<SinkRecord>> {
        self.sinks.take_kept()
    }

    /// Final state of this chain in the store, keys rendered as stable strings.
    pub fn final_state(&self) -> BTreeMap<String, Value> {
        self.store.snapshot(self.dag.id)
    }

    /// Tells the engine that the caller waited `d` between packets (pacing), so that
    /// time is not counted as processing time.
    pub fn add_idle(&mut self, d: std::time::Duration) {
        self.idle += d;
    }

    /// Flushes sinks and alerts and returns what the run produced.
    pub fn finish(mut self) -> io::Result<EngineReport> {
        // Timers due by the last packet's time that no later packet fired (set by the last
        // packets, or by timers firing now) fire at the end, as the parallel engine does.
        while self.due.any_due(self.cur_ts) {
            self.fire_timers(self.cur_ts)?;
        }
        self.run_callbacks()?;
        if let Some(w) = &self.watchers {
            w.unsubscribe(&*self.store);
        }
        let busy = self.started.map(|s| s.elapsed().saturating_sub(self.idle)).unwrap_or_default();
        self.chain.packets_out = self.sinks.counts();
        self.alerts.flush()?;
        let output_files = self.sinks.finish()?;
        let _ = self.store.flush();
        let mut tasks = BTreeMap::new();
        for (v, s) in self.dag.vertices.iter().zip(self.tasks.iter()) {
            tasks.insert(v.name.clone(), vec![s.clone()]);
        }
        Ok(EngineReport {
            chain: self.chain,
            tasks,
            alerts: self.alerts.per_kind().clone(),
            alert_records: self.alerts.kept().to_vec(),
            sink_records: self.sinks.kept(),
            output_files,
            latency: self.latency,
            busy,
            manager: None,
            workers: 1,
            events: Vec::new(),
            guarantees: None,
        })
    }
}
