//! Churn in the parallel engine (§5.1–5.3): scale a vertex with partition handover, fail
//! or kill a task and recover by replay, clone a straggler and keep the faster copy, make
//! a task straggle. The root thread applies each event between two input packets.
//!
//! - **Scale** (§5.3): a new partition epoch starts at the next clock. Every moved
//!   partition has a handover: its new task holds its input from that clock on; its old
//!   task, once it has processed everything before the clock, flushes its store operations
//!   and releases the partitions (per-flow state is keyed by partition, so nothing moves in
//!   the store); then the new task runs what it held. Merging receivers order the two
//!   tasks' outputs by clock, so no flow is reordered downstream.
//! - **Fail / kill** (§5.1): every message in flight is discarded (the failed task's input
//!   is lost with it) and the root replays every packet still in its log. Each task
//!   re-runs what it gets: the store emulates updates (and logged reads) it already
//!   applied, and sinks, alerts and timers drop what they have seen (same lineage).
//! - **Clone** (§5.2): the clone gets a copy of every message of its original's partitions
//!   from the replay on; receivers drop the second copy, the store emulates the second
//!   update, merging receivers go by the faster of the two; once the replay is done the
//!   slower one is retired.
//!
//! With guarantees off ([`ParallelConfig::guarantees`]) the same events are naive: a
//! failed task's messages are lost, a scale switches at once, a clone's copies go through.
//! This module never touches NF state.

use super::*;
use crate::events::{Action, EventSpec};
use crate::partition::{rebalance, Epoch};
use serde::Serialize;

/// The input packets a referencing packet log replays from: packet by input index.
pub type ReplayInput = Arc<dyn Fn(u64) -> Option<Packet> + Send + Sync>;

/// A [`ReplayInput`] over a trace held in memory.
pub fn replay_input(records: Arc<Vec<streamnf_packet::trace::RawRecord>>) -> ReplayInput {
    Arc::new(move |i| records.get(i as usize).map(|r| r.clone().into_packet()))
}

/// What happened for one event (listed in `--summary-json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventRecord {
    /// The event as written.
    pub event: String,
    /// scale, fail, kill, clone, straggle.
    pub kind: String,
    /// Input packet index it happened before.
    pub packet: u64,
    /// First clock after it.
    pub clock: u64,
    /// What the engine did.
    pub outcome: String,
    /// Packets replayed from the log (fail, kill, clone).
    pub replayed: u64,
    /// Messages lost (guarantees off: the failed task's queue).
    pub lost: u64,
    /// Partitions that changed task (scale, clone decision).
    pub moved_partitions: u64,
    /// Longest handover of the event, microseconds (scale).
    pub handover_us: Option<f64>,
    /// From the failure until every replayed packet was finished, microseconds.
    pub recovery_us: Option<f64>,
    /// Time the root spent applying the event (stop, discard, replay), microseconds.
    pub apply_us: f64,
}

/// Clocks a clone and its original both run, after the replay, before the faster is kept.
pub const CLONE_RACE_CLOCKS: u64 = 2048;

/// Input packets between a task's crash and its detection (a missed heartbeat).
pub const DETECT_PACKETS: u64 = 256;

/// A crashed task not detected yet.
struct PendingFailure {
    event: usize,
    task: usize,
    detect_at: u64,
}

/// The store timer a discarded timer message came from (to fire it again after a replay).
fn discarded_timer(
    sh: &Shared,
    vertex: usize,
    part: u16,
    at_ns: u64,
    payload: Vec<u8>,
) -> streamnf_store::Timer {
    streamnf_store::Timer {
        id: 0,
        at_ns,
        dag: sh.dag.id,
        vertex: vertex as u32,
        task: Some(u32::from(part)),
        payload,
    }
}

/// Drops messages of a dead task (of `vertex`). With guarantees they stay in the packet log
/// (their clocks are replayed) and their timers wait for the replay; without, their clocks
/// are settled and their timers are gone. Returns how many were dropped.
pub(super) fn lose_messages(sh: &Shared, msgs: Vec<Msg>, vertex: usize) -> u64 {
    let keep = sh.guarantees && sh.ft;
    let n = msgs.len() as u64;
    let mut settle = Vec::new();
    for m in msgs {
        match m.body {
            Body::Timer(payload, first_seq) => {
                sh.timers_in_flight.fetch_sub(1, Ordering::AcqRel);
                if keep {
                    let timer = discarded_timer(sh, vertex, m.part, m.ts_ns, payload);
                    sh.lost_timers.lock().push((m.clock, timer, first_seq));
                }
            }
            _ if !keep => settle.push((m.clock, 1, false)),
            _ => {}
        }
    }
    if !settle.is_empty() {
        if let Err(e) = sh.log.settle(&settle) {
            sh.record_io_error(io::Error::other(format!("packet log: {:?}", e.failures.first())));
        }
    }
    n
}

/// A task's NF panicked at `clock`: unless that clock already failed this task over (the
/// replay hit the same panic: then it is only isolated, as without fault tolerance), the task
/// dies here and the root replaces it at its next packet.
pub(super) fn note_panic(sh: &Shared, task: &mut Task, clock: u64) {
    if task.panic_clocks.contains(&clock) {
        return;
    }
    task.panic_clocks.push(clock);
    task.dead = true;
    sh.panicked.lock().push((task.id, clock));
    sh.any_panicked.store(true, Ordering::Release);
}

/// A clone whose faster copy is not chosen yet.
struct PendingClone {
    event: usize,
    vertex: usize,
    original: u16,
    clone: u16,
    /// The choice is made once every clock below this one is finished.
    decide_after: u64,
}

/// Churn bookkeeping of one engine.
#[derive(Default)]
pub(super) struct ChurnState {
    pub(super) records: Vec<EventRecord>,
    /// Handover ids of each event (by record index).
    handovers: Vec<(usize, Vec<u64>)>,
    next_handover: u64,
    clones: Vec<PendingClone>,
    failures: Vec<PendingFailure>,
    /// Recoveries under way: (record index, start, last replayed clock).
    recoveries: Vec<(usize, Instant, u64)>,
    pub(super) replay_input: Option<ReplayInput>,
    /// The vertex manager's hints trigger events, scaling up to this many instances.
    pub(super) auto: Option<u32>,
    /// Per vertex name: the manager window of its last automatic event (cool-down).
    auto_last: std::collections::HashMap<String, u64>,
    auto_windows: u64,
}

/// Manager windows between two automatic events on one vertex.
const AUTO_COOLDOWN: u64 = 4;

impl ChurnState {
    /// Nothing applied yet; `auto`: the vertex manager's hints trigger events.
    pub(super) fn new(auto: Option<u32>) -> ChurnState {
        ChurnState { auto, ..ChurnState::default() }
    }

    /// True when no clone waits for its decision and no recovery is under way.
    pub(super) fn is_idle(&self) -> bool {
        self.clones.is_empty() && self.recoveries.is_empty() && self.failures.is_empty()
    }
}

impl ParallelEngine {
    /// Gives the engine the input it replays from when its packet log keeps input indexes
    /// (the default local log): without it a failure cannot be recovered.
    pub fn set_replay_input(&mut self, input: ReplayInput) {
        self.churn.replay_input = Some(input);
    }

    /// Applies one event before input packet `packet`. An event naming an instance that
    /// does not exist at that point is an error naming the event.
    pub fn apply_event(&mut self, ev: &EventSpec, packet: u64) -> io::Result<()> {
        let t0 = Instant::now();
        let bad = |m: String| io::Error::other(format!("event `{}`: {m}", ev.text));
        let vname = ev.action.vertex();
        let vid = self.sh.dag.vertex_id(vname).ok_or_else(|| bad(format!("no vertex `{vname}`")))?;
        let mut rec = EventRecord {
            event: ev.text.clone(),
            kind: ev.action.kind().into(),
            packet,
            clock: self.clocks.peek(),
            ..EventRecord::default()
        };
        let idx = self.churn.records.len();
        // A clone not decided yet on this vertex is decided now: one change at a time.
        self.decide_clones(Some(vid))?;
        let current = self.sh.tables[vid].current();
        let task_of = |t: u32| -> io::Result<u16> {
            if ev.relative && !current.active.is_empty() {
                return Ok(current.active[t as usize % current.active.len()]);
            }
            let t16 = u16::try_from(t).map_err(|_| bad(format!("instance {t} is out of range")))?;
            if current.active.contains(&t16) {
                Ok(t16)
            } else {
                Err(bad(format!(
                    "`{vname}` has no instance {t} now (running: {})",
                    current.active.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
                )))
            }
        };
        match &ev.action {
            Action::Scale { to, .. } => {
                let ids = self.scale(vid, *to as usize, &mut rec).map_err(bad)?;
                self.churn.handovers.push((idx, ids));
            }
            Action::Fail { task, .. } | Action::Kill { task, .. } => {
                let t = task_of(*task)?;
                self.fail(vid, t, idx, &mut rec)?;
            }
            Action::Clone { task, .. } => {
                let t = task_of(*task)?;
                self.clone_task(vid, t, idx, &mut rec).map_err(|e| bad(e.to_string()))?;
            }
            Action::Straggle { task, delay_ns, .. } => {
                let t = task_of(*task)?;
                let gid = self.first_task[vid] + usize::from(t);
                self.sh.tasks[gid].lock().straggle_ns = *delay_ns;
                rec.outcome = format!("{vname}/{t} takes {delay_ns} ns longer per message");
            }
        }
        rec.apply_us = t0.elapsed().as_secs_f64() * 1e6;
        self.churn.records.push(rec);
        Ok(())
    }

    /// Turns the vertex manager's hints into events (§4.1): an overloaded task scales its
    /// vertex up by one, an underloaded one scales it down by one, a suspected straggler is
    /// cloned; at most one event per vertex per window and none within [`AUTO_COOLDOWN`]
    /// windows of the last, only for running tasks and within the vertex's slots.
    pub(super) fn auto_churn(&mut self, hints: &[crate::manager::Hint]) -> io::Result<()> {
        use crate::manager::Hint;
        let Some(max) = self.churn.auto.map(|m| m as usize) else { return Ok(()) };
        self.churn.auto_windows += 1;
        let window = self.churn.auto_windows;
        let packet = self.chain.packets_in;
        let mut done: Vec<String> = Vec::new();
        for h in hints {
            let (vertex, task) = (h.vertex().to_string(), h.task());
            if done.contains(&vertex)
                || self.churn.auto_last.get(&vertex).is_some_and(|&w| window < w + AUTO_COOLDOWN)
            {
                continue;
            }
            let Some(vid) = self.sh.dag.vertex_id(&vertex) else { continue };
            let cur = self.sh.tables[vid].current();
            let Ok(t16) = u16::try_from(task) else { continue };
            if !cur.active.contains(&t16) || self.churn.clones.iter().any(|c| c.vertex == vid) {
                continue;
            }
            let n = cur.active.len();
            let free = self.free_slots(vid, &cur).len();
            let spec = match h {
                Hint::Overloaded { .. } if free > 0 && n < max => {
                    format!("at={packet} scale {vertex} to {}", n + 1)
                }
                Hint::Underloaded { .. } if n > 1 => format!("at={packet} scale {vertex} to {}", n - 1),
                // A straggler is slow next to its running siblings.
                Hint::StragglerSuspected { .. } if free > 0 && n > 1 => {
                    format!("at={packet} clone {vertex}/{task}")
                }
                _ => continue,
            };
            let Ok(mut ev) = spec.parse::<EventSpec>() else { continue };
            ev.text = format!("auto ({}): {spec}", h.kind());
            self.apply_event(&ev, packet)?;
            self.churn.auto_last.insert(vertex.clone(), window);
            done.push(vertex);
        }
        Ok(())
    }

    /// A slot of vertex `vid` for a clone: used by no epoch routing clocks still in flight
    /// and by no pending clone.
    fn clone_slot(&self, vid: usize) -> Option<u16> {
        let busy = self.sh.tables[vid].slots_in_use_from(self.sh.log.watermark(), self.tasks_per_vertex[vid]);
        let pending = self.racing_slots(vid);
        (0..self.tasks_per_vertex[vid] as u16).find(|t| !busy[usize::from(*t)] && !pending.contains(t))
    }

    /// Slots of vertex `vid` taken by clones still racing their originals.
    fn racing_slots(&self, vid: usize) -> Vec<u16> {
        self.churn.clones.iter().filter(|c| c.vertex == vid).flat_map(|c| [c.original, c.clone]).collect()
    }

    /// Waits until the chain has finished every packet handed out so far.
    fn drain(&mut self) -> io::Result<()> {
        self.flush_root();
        while !self.sh.log.is_empty() || self.sh.timers_in_flight.load(Ordering::Acquire) > 0 {
            if self.sh.failed.load(Ordering::Acquire) {
                return Err(self
                    .sh
                    .io_error
                    .lock()
                    .take()
                    .unwrap_or_else(|| io::Error::other("a worker failed")));
            }
            self.help_or_wait();
        }
        Ok(())
    }

    /// Free task slots of vertex `vid` (neither owning, replicating nor active), lowest first.
    fn free_slots(&self, vid: usize, cur: &Epoch) -> Vec<u16> {
        let pending = self.racing_slots(vid);
        (0..self.tasks_per_vertex[vid] as u16).filter(|&t| !cur.uses(t) && !pending.contains(&t)).collect()
    }

    /// Scales vertex `vid` to `to` tasks from the next clock; returns the handover ids.
    fn scale(&mut self, vid: usize, to: usize, rec: &mut EventRecord) -> Result<Vec<u64>, String> {
        // The handover is timed from here: computing the new owners is part of it.
        let started = Instant::now();
        let cur = self.sh.tables[vid].current();
        let n = cur.active.len();
        let name = self.sh.dag.vertices[vid].name.clone();
        if to == n {
            rec.outcome = format!("{name} already runs {n} instances");
            return Ok(Vec::new());
        }
        let mut keep: Vec<u16> = cur.active.clone();
        if to > n {
            let free = self.free_slots(vid, &cur);
            if free.len() < to - n {
                return Err(format!(
                    "{name} has {} task slots; scaling to {to} needs more (the slots come from the event schedule)",
                    self.tasks_per_vertex[vid]
                ));
            }
            keep.extend(free.into_iter().take(to - n));
        } else {
            keep.truncate(to);
        }
        keep.sort_unstable();
        let (owner, moves) = rebalance(&cur, &keep);
        let clock = self.clocks.peek();
        let mut ids = Vec::new();
        if self.sh.guarantees {
            for m in &moves {
                let id = self.churn.next_handover;
                self.churn.next_handover += 1;
                let (from, to) =
                    (self.first_task[vid] + usize::from(m.from), self.first_task[vid] + usize::from(m.to));
                self.sh.handovers.lock().push(Handover { id, released: false, started, took: None });
                self.sh.tasks[to].lock().holds.push((id, clock));
                self.sh.tasks[from].lock().releases.push((id, clock));
                ids.push(id);
            }
        }
        rec.moved_partitions = moves.iter().map(|m| m.partitions.len() as u64).sum();
        self.sh.tables[vid].push(Epoch {
            from: clock,
            owner,
            replica: vec![NO_REPLICA; PARTITIONS],
            active: keep,
        });
        // No wake-up here: the tasks see the new epoch on their next turn, and the root
        // wakes sleeping workers when it hands them work or idles with work left (a wake-up
        // of a sleeping worker costs ~8 µs here, a third of a whole handover at 200 kpps).
        rec.outcome = format!(
            "{name}: {n} -> {to} instances, {} partitions moved in {} handovers{}",
            rec.moved_partitions,
            moves.len(),
            if self.sh.guarantees { "" } else { " (naive: no hold, no release)" }
        );
        Ok(ids)
    }

    /// Task `t` of vertex `vid` crashes: what it held is gone, and until the failure is
    /// detected (a missed heartbeat, [`DETECT_PACKETS`] input packets later) what reaches
    /// it is lost too. Then a new task takes its place (see [`Self::detect_failures`]).
    fn fail(&mut self, vid: usize, t: u16, idx: usize, rec: &mut EventRecord) -> io::Result<()> {
        let name = self.sh.dag.vertices[vid].name.clone();
        let gid = self.first_task[vid] + usize::from(t);
        let sh = Arc::clone(&self.sh);
        {
            let mut task = sh.tasks[gid].lock();
            task.dead = true;
            let mut lost: Vec<Msg> = task.held.drain(..).collect();
            task.held_min = u64::MAX;
            for ob in task.outbox.iter_mut() {
                lost.append(ob);
            }
            if let Some(r) = task.reorder.as_mut() {
                lost.extend(std::mem::take(&mut r.waiting).into_values());
            }
            let vertex = task.vertex;
            task.lost += lose_messages(&sh, lost, vertex);
        }
        let detect = DETECT_PACKETS.min(self.sh.log.capacity() as u64 / 4).max(1);
        self.churn.failures.push(PendingFailure {
            event: idx,
            task: gid,
            detect_at: self.chain.packets_in + detect,
        });
        rec.outcome = format!("{name}/{t} crashed; detected {detect} packets later");
        Ok(())
    }

    /// Turns the tasks whose NF panicked into failures detected at once (listed as events).
    pub(super) fn fail_panicked(&mut self) -> io::Result<()> {
        let list: Vec<(usize, u64)> = std::mem::take(&mut *self.sh.panicked.lock());
        self.sh.any_panicked.store(false, Ordering::Release);
        for (gid, clock) in list {
            let vid = self.sh.tasks[gid].lock().vertex;
            let t = gid - self.first_task[vid];
            let name = self.sh.dag.vertices[vid].name.clone();
            let idx = self.churn.records.len();
            self.churn.records.push(EventRecord {
                event: format!("panic {name}/{t}"),
                kind: "panic".into(),
                packet: self.chain.packets_in,
                clock,
                outcome: format!("{name}/{t} panicked at clock {clock}"),
                ..EventRecord::default()
            });
            self.churn.failures.push(PendingFailure { event: idx, task: gid, detect_at: 0 });
        }
        Ok(())
    }

    /// Recovers the failed tasks whose failure is detected by now (`all`: every one, at
    /// the end of the input). With guarantees, every message in flight is discarded and
    /// the log replayed (§5.1); without, the task just comes back, its lost input gone.
    pub(super) fn detect_failures(&mut self, all: bool) -> io::Result<()> {
        let now = self.chain.packets_in;
        let (due, wait): (Vec<PendingFailure>, Vec<PendingFailure>) =
            std::mem::take(&mut self.churn.failures).into_iter().partition(|f| all || f.detect_at <= now);
        self.churn.failures = wait;
        if due.is_empty() {
            return Ok(());
        }
        // With guarantees the tasks stay dead until the replay's stop-the-world (a task
        // revived earlier would run its newest input before the replayed older one).
        let revive = !(self.sh.guarantees && self.sh.ft);
        let mut lost = Vec::new();
        for f in &due {
            let mut task = self.sh.tasks[f.task].lock();
            // The replacement is a fresh task: whatever slowed the old one is gone.
            task.straggle_ns = 0;
            lost.push(std::mem::take(&mut task.lost));
            if revive {
                task.dead = false;
            }
        }
        if !revive {
            let (n, last) = self.abort_and_replay()?;
            for f in &due {
                self.churn.recoveries.push((f.event, Instant::now(), last));
                if let Some(r) = self.churn.records.get_mut(f.event) {
                    r.replayed = n;
                    r.outcome.push_str(&format!("; replaced, {n} packets replayed"));
                }
            }
        } else {
            for (f, lost) in due.iter().zip(lost) {
                if let Some(r) = self.churn.records.get_mut(f.event) {
                    r.lost = lost;
                    r.outcome.push_str(&format!("; replaced, {lost} messages lost (no replay)"));
                }
            }
        }
        Ok(())
    }

    /// Starts a clone of task `t` of vertex `vid` in a free slot.
    fn clone_task(&mut self, vid: usize, t: u16, idx: usize, rec: &mut EventRecord) -> io::Result<()> {
        let name = self.sh.dag.vertices[vid].name.clone();
        // The clone must be a slot no epoch still in flight uses: it gets copies of the
        // original's messages from the oldest clock in flight on, and a merging receiver
        // takes either one's progress for both. If every free slot was in use by an older
        // epoch (a task scaled away whose clocks are still in flight), finish those first.
        // Likewise a previous clone's replicated epochs must be finished: the new clone's
        // replay starts at the oldest clock in flight, and there only one copy may be racing.
        let w = self.sh.log.watermark();
        if self.sh.tables[vid].replicas_from(w) {
            self.detect_failures(true)?;
            self.drain()?;
        }
        let mut slot = self.clone_slot(vid);
        if slot.is_none() {
            self.detect_failures(true)?;
            self.drain()?;
            slot = self.clone_slot(vid);
        }
        let Some(c) = slot else {
            return Err(io::Error::other(format!(
                "{name} has no free task slot for a clone ({} slots)",
                self.tasks_per_vertex[vid]
            )));
        };
        let (orig_id, clone_id) =
            (self.first_task[vid] + usize::from(t) + 1, self.first_task[vid] + usize::from(c) + 1);
        self.sh.replicated[orig_id].store(true, Ordering::Release);
        self.sh.replicated[clone_id].store(true, Ordering::Release);
        let add_replica = |e: &mut Epoch| {
            for p in 0..PARTITIONS {
                if e.owner[p] == t {
                    e.replica[p] = c;
                }
            }
        };
        if self.sh.guarantees && self.sh.ft {
            // The clone gets the replay, then every message its original gets.
            self.flush_root();
            let from = self.sh.log.watermark();
            self.sh.tables[vid].rewrite_from(from, add_replica);
            self.sh.pair[orig_id].store(clone_id as u32, Ordering::Release);
            self.sh.pair[clone_id].store(orig_id as u32, Ordering::Release);
            let (n, last) = self.abort_and_replay()?;
            rec.replayed = n;
            self.churn.clones.push(PendingClone {
                event: idx,
                vertex: vid,
                original: t,
                clone: c,
                decide_after: last.max(self.clocks.peek()) + CLONE_RACE_CLOCKS,
            });
            rec.outcome = format!("{name}/{t} cloned as {name}/{c}; {n} packets replayed to it");
        } else {
            let from = self.clocks.peek();
            self.sh.tables[vid].rewrite_from(from, add_replica);
            self.churn.clones.push(PendingClone {
                event: idx,
                vertex: vid,
                original: t,
                clone: c,
                decide_after: from + CLONE_RACE_CLOCKS,
            });
            rec.outcome = format!("{name}/{t} cloned as {name}/{c} (naive: no replay, no suppression)");
        }
        self.sh.ring_workers();
        Ok(())
    }

    /// Keeps the faster copy of every clone whose replay is done (or of every clone on
    /// vertex `force`, done or not): the slower one gets no input from the next clock on.
    pub(super) fn decide_clones(&mut self, force: Option<usize>) -> io::Result<()> {
        if self.churn.clones.is_empty() {
            return Ok(());
        }
        let watermark = self.sh.log.watermark();
        let mut i = 0;
        while i < self.churn.clones.len() {
            let c = &self.churn.clones[i];
            if force != Some(c.vertex) && watermark < c.decide_after {
                i += 1;
                continue;
            }
            let c = self.churn.clones.remove(i);
            let first = self.first_task[c.vertex];
            let progress = |t: u16| self.sh.progress[first + usize::from(t) + 1].load(Ordering::Acquire);
            // A tie keeps the clone: it is the fresh one.
            let (keep, retire) = if progress(c.clone) >= progress(c.original) {
                (c.clone, c.original)
            } else {
                (c.original, c.clone)
            };
            let cur = self.sh.tables[c.vertex].current();
            let mut next = Epoch { from: self.clocks.peek(), ..(*cur).clone() };
            let mut moved = 0;
            for p in 0..PARTITIONS {
                if next.owner[p] == c.original && next.replica[p] == c.clone {
                    if keep != next.owner[p] {
                        moved += 1;
                    }
                    next.owner[p] = keep;
                    next.replica[p] = NO_REPLICA;
                }
            }
            next.active.retain(|&t| t != retire);
            if !next.active.contains(&keep) {
                next.active.push(keep);
                next.active.sort_unstable();
            }
            self.sh.tables[c.vertex].push(next);
            for t in [c.original, c.clone] {
                self.sh.pair[first + usize::from(t) + 1].store(0, Ordering::Release);
            }
            // The retired copy is gone; a task started later in its slot is a fresh one.
            self.sh.tasks[first + usize::from(retire)].lock().straggle_ns = 0;
            let name = &self.sh.dag.vertices[c.vertex].name;
            if let Some(r) = self.churn.records.get_mut(c.event) {
                r.moved_partitions = moved;
                r.outcome.push_str(&format!("; kept {name}/{keep}, retired {name}/{retire}"));
            }
        }
        Ok(())
    }

    /// Notes recoveries whose replayed packets are all finished.
    pub(super) fn check_recoveries(&mut self) {
        if self.churn.recoveries.is_empty() {
            return;
        }
        let watermark = self.sh.log.watermark();
        let records = &mut self.churn.records;
        self.churn.recoveries.retain(|&(idx, start, last)| {
            if watermark <= last {
                return true;
            }
            if let Some(r) = records.get_mut(idx) {
                r.recovery_us = Some(start.elapsed().as_secs_f64() * 1e6);
            }
            false
        });
    }

    /// The events applied, with handover and recovery times filled in (end of run; a clone
    /// still racing its original is decided now, on how far each got).
    pub(super) fn event_records(&mut self) -> Vec<EventRecord> {
        let vertices: Vec<usize> = self.churn.clones.iter().map(|c| c.vertex).collect();
        for v in vertices {
            let _ = self.decide_clones(Some(v));
        }
        self.check_recoveries();
        let h = self.sh.handovers.lock();
        for (idx, ids) in &self.churn.handovers {
            let took = h.iter().filter(|x| ids.contains(&x.id)).filter_map(|x| x.took).max();
            if let (Some(r), Some(t)) = (self.churn.records.get_mut(*idx), took) {
                r.handover_us = Some(t.as_secs_f64() * 1e6);
            }
        }
        std::mem::take(&mut self.churn.records)
    }

    /// Stops the world, discards every message in flight and replays every packet still in
    /// the log from the root (§5.1). Returns (packets replayed, last clock replayed).
    fn abort_and_replay(&mut self) -> io::Result<(u64, u64)> {
        self.flush_root();
        let sh = Arc::clone(&self.sh);
        // Every non-blocking update reaches the store before anything is re-run.
        sh.store.flush().map_err(|e| io::Error::other(format!("state store: {e}")))?;
        let mut timers: Vec<(u64, streamnf_store::Timer, u32)> = Vec::new();
        {
            sh.stopping.store(true, Ordering::Release);
            let mut guards: Vec<_> = sh.tasks.iter().map(|t| t.lock()).collect();
            sh.stopping.store(false, Ordering::Release);
            let mut buf = Vec::new();
            let mut discard = |m: Msg, vertex: usize| {
                if let Body::Timer(payload, first_seq) = m.body {
                    sh.timers_in_flight.fetch_sub(1, Ordering::AcqRel);
                    timers.push((m.clock, discarded_timer(&sh, vertex, m.part, m.ts_ns, payload), first_seq));
                }
            };
            let base = sh.log.watermark().saturating_sub(1);
            for (i, task) in guards.iter_mut().enumerate() {
                let vertex = task.vertex;
                while sh.queues[i].pop_batch(&mut buf, 1024) > 0 {
                    for m in buf.drain(..) {
                        discard(m, vertex);
                    }
                }
                for m in task.held.drain(..) {
                    discard(m, vertex);
                }
                task.held_min = u64::MAX;
                // Only the root sends timers, so an outbox holds none; the vertex is moot.
                let outs: Vec<Msg> = task.outbox.iter_mut().flat_map(std::mem::take).collect();
                for m in outs {
                    discard(m, vertex);
                }
                if let Some(r) = task.reorder.as_mut() {
                    for m in std::mem::take(&mut r.waiting).into_values() {
                        discard(m, vertex);
                    }
                    r.last_recv.iter_mut().for_each(|l| *l = 0);
                }
                task.seen = Dedupe::new(sh.guarantees);
                task.dead = false;
                task.msg_seq = MessageSeq::default();
                task.published = base;
            }
            // Every clock below the watermark is finished everywhere; nothing above it has
            // been handed over any more.
            for p in &sh.progress {
                p.store(base, Ordering::Release);
            }
        }
        timers.append(&mut sh.lost_timers.lock());
        timers.sort_by_key(|t| t.0);
        // A timer of a task only the root sends to goes back into the replay at its clock,
        // so it runs between the same packets as before; others wait for their upstream
        // tasks' progress again, as when they first came due.
        let mut in_stream = VecDeque::new();
        for (clock, t, seq) in timers.into_iter().rev() {
            let vid = t.vertex as usize;
            let part = (t.task.unwrap_or(0) as usize).min(PARTITIONS - 1);
            let owner = sh.tables[vid].with_epoch(clock, |e| usize::from(e.owner[part]));
            let gid = self.first_task[vid] + owner.min(self.tasks_per_vertex[vid] - 1);
            if self.task_sources.get(gid).is_some_and(|s| s.iter().all(|&x| x == 0)) {
                in_stream.push_front((clock, gid, part as u16, t, seq));
            } else {
                self.timers.push_front((clock, t, Some(seq)));
            }
        }
        // Replay from the root, in clock order.
        let entries: Vec<(u64, Packet)> = if self.log_frames {
            sh.log.in_flight_from(0).map_err(|e| io::Error::other(format!("packet log: {e}")))?
        } else {
            let input = self.churn.replay_input.clone().ok_or_else(|| {
                io::Error::other("cannot replay: the engine was not given its input (set_replay_input)")
            })?;
            let mut v = Vec::new();
            for (clock, index) in sh.log.in_flight_refs(0) {
                let mut p = input(index).ok_or_else(|| {
                    io::Error::other(format!("cannot replay clock {clock}: input packet {index} is gone"))
                })?;
                p.meta.ingress_index = index;
                v.push((clock, p));
            }
            v
        };
        let n = entries.len() as u64;
        let last = entries.last().map_or(0, |e| e.0);
        for (clock, mut p) in entries {
            while in_stream.front().is_some_and(|t| t.0 < clock) {
                if let Some((c, gid, part, t, seq)) = in_stream.pop_front() {
                    self.send_timer(gid, part, c, t, seq);
                }
            }
            p.meta.clock = clock;
            p.meta.marks.insert(streamnf_packet::Marks::REPLAYED);
            if clock == last {
                p.meta.marks.insert(streamnf_packet::Marks::LAST);
            }
            let (to_tasks, to_sinks) = self.route_input(p, clock)?;
            if to_sinks > 0 && to_tasks > 0 {
                let _ = sh.log.settle(&[(clock, 0, true)]);
            }
            sh.log.set_refs(clock, to_tasks).map_err(|e| io::Error::other(format!("packet log: {e}")))?;
            for t in 0..self.outbox.len() {
                if self.outbox[t].len() >= sh.batch {
                    self.push_blocking(t)?;
                }
            }
        }
        while let Some((c, gid, part, t, seq)) = in_stream.pop_front() {
            self.send_timer(gid, part, c, t, seq);
        }
        for t in 0..self.outbox.len() {
            if !self.outbox[t].is_empty() {
                self.push_blocking(t)?;
            }
        }
        self.publish_root_progress(self.clocks.peek().saturating_sub(1), true);
        Ok((n, last))
    }
}
