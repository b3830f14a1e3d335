//! [`TaskContext`]: the runtime's implementation of [`NfContext`] for one input at one task.
//!
//! It turns an NF's state calls into store updates tagged with the input's logical clock
//! and a per-input sequence number (so a replayed input reissues the same tags and the
//! store can emulate them), and buffers the NF's outputs, alerts and timers for the engine
//! to route after the NF returns. It never routes anything itself.

use crate::stats::TaskStats;
use std::panic::{catch_unwind, AssertUnwindSafe};
use streamnf_dag::{Alert, ContextMsg, NetworkFunction, NfContext, NfError, StateChange};
use streamnf_packet::Packet;
use streamnf_store::{CustomOpId, KeyBytes, Op, StateKey, StateStore, TaskId, Update, UpdateTag, Value};

/// Something the NF asked to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Emit {
    /// The current packet, to this output port.
    Packet(usize),
    /// A context message, to this output port.
    Context(usize, ContextMsg),
    /// A packet the NF built (a proxy's answer from its cache), to this output port.
    NewPacket(usize, Packet),
}

/// Per-input context handed to an NF.
pub struct TaskContext<'a> {
    /// Where and when the input runs: store, DAG, vertex, task, clock, time.
    pub site: CallSite<'a>,
    /// Next update sequence number within this input.
    pub seq: u32,
    /// Buffered outputs.
    pub emits: &'a mut Vec<Emit>,
    /// Buffered alerts.
    pub alerts: &'a mut Vec<Alert>,
    /// Buffered timers (due time, payload).
    pub timers: &'a mut Vec<(u64, Vec<u8>)>,
    /// State operations issued.
    pub state_ops: u64,
    /// Bit `i` set: this input has updated the `i`-th of `site.declared` (its later reads are
    /// ordinary reads).
    pub declared_updated: u64,
}

impl TaskContext<'_> {
    fn key(&self, object: usize, key: &[u8]) -> Result<StateKey, NfError> {
        state_key(self.site.dag_id, self.site.vertex, self.site.task, self.site.per_flow, object, key)
    }

    fn update(&mut self, object: usize, key: &[u8], op: Op) -> Result<Update, NfError> {
        let key = self.key(object, key)?;
        Ok(self.update_key(key, op))
    }

    /// The tagged update of `key` by `op`; an update that is not a read first invalidates
    /// the key's prefetched value and marks it updated among the declared keys.
    fn update_key(&mut self, key: StateKey, op: Op) -> Update {
        if !matches!(op, Op::Get | Op::LoggedGet) {
            if let Some(p) = self.site.prefetched {
                p.invalidate(&key);
            }
            if let Some(i) = self.site.declared.iter().position(|k| *k == key) {
                self.declared_updated |= 1 << i;
            }
        }
        self.tagged(key, op)
    }

    /// A logged read (fault tolerance) of a key the NF named for this input, before the
    /// input updated it: tagged by the key's place among the named ones (see
    /// [`crate::callbacks::DECLARED_READ_SEQ`]), answered from the prefetch when the batch
    /// fetched it. `None`: not such a read.
    fn declared_read(&mut self, key: StateKey) -> Result<Option<Option<Value>>, NfError> {
        if !self.site.log_reads {
            return Ok(None);
        }
        let Some(i) = self.site.declared.iter().position(|k| *k == key) else { return Ok(None) };
        if self.declared_updated & (1 << i) != 0 {
            return Ok(None);
        }
        self.state_ops += 1;
        if let Some(v) = self.site.prefetched.and_then(|p| p.serve(&key)) {
            return Ok(Some(v));
        }
        let seq = self.site.first_seq + crate::callbacks::DECLARED_READ_SEQ + i as u32;
        let u = Update::new(key, Op::LoggedGet, UpdateTag { clock: self.site.clock, seq }, self.site.task);
        Ok(Some(self.site.store.execute(&u)?))
    }

    /// The update of `key` by `op`, tagged with this input's clock and its next sequence
    /// number (counted as a state operation).
    fn tagged(&mut self, key: StateKey, op: Op) -> Update {
        let clock = match self.site.untagged {
            Some(n) => n.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            None => self.site.clock,
        };
        let tag = UpdateTag { clock, seq: self.seq };
        self.seq = self.seq.wrapping_add(1);
        self.state_ops += 1;
        let issuer = if key.owner.is_some() { self.site.task } else { self.site.slot };
        Update::new(key, op, tag, issuer)
    }

    /// Records `fresh` under this input's clock and the next update number, and returns the
    /// recorded value: `fresh` the first time, the first call's value on a replay.
    fn record(&mut self, fresh: u64) -> Result<u64, NfError> {
        let op = self
            .site
            .store
            .custom_op_id(RECORD_OP)
            .ok_or_else(|| NfError::State("the record operation is not registered".into()))?;
        // One key per clock: recorded values spread over keys, and vanish with the clock log.
        let key = StateKey::shared(
            self.site.dag_id,
            self.site.vertex,
            RECORD_OBJECT,
            KeyBytes::from_u64(self.site.clock),
        );
        let u = self.tagged(key, Op::Custom { op, arg: fresh.to_be_bytes().to_vec() });
        match self.site.store.execute(&u)? {
            Some(Value::Bytes(b)) => <[u8; 8]>::try_from(b.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| NfError::State("recorded value of the wrong size".into())),
            other => Err(NfError::State(format!("record returned {other:?}"))),
        }
    }
}

impl NfContext for TaskContext<'_> {
    fn clock(&self) -> u64 {
        match self.site.untagged {
            // Guarantees off: no logical clock, only the order inputs arrive in.
            Some(n) => n.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            None => self.site.clock,
        }
    }

    fn now_ns(&self) -> u64 {
        self.site.now_ns
    }

    fn forward(&mut self, port: usize) {
        self.emits.push(Emit::Packet(port));
    }

    fn emit_context(&mut self, port: usize, msg: ContextMsg) {
        self.emits.push(Emit::Context(port, msg));
    }

    fn send_packet(&mut self, port: usize, mut pkt: Packet) {
        pkt.meta.clock = self.site.clock;
        self.emits.push(Emit::NewPacket(port, pkt));
    }

    fn alert(&mut self, alert: Alert) {
        self.alerts.push(alert);
    }

    fn state(&mut self, object: usize, key: &[u8], op: Op) -> Result<Option<Value>, NfError> {
        let key = self.key(object, key)?;
        if op.is_read() {
            if let Some(v) = self.declared_read(key)? {
                return Ok(v);
            }
        }
        // A logged read: the store keeps its result under this input's tag.
        let op = if self.site.log_reads && op.is_read() { Op::LoggedGet } else { op };
        let u = self.update_key(key, op);
        if u.op.is_read() {
            // Asynchronous mode: the value fetched for this batch, unless this task updated
            // the key since (then `update` invalidated it).
            if let Some(v) = self.site.prefetched.and_then(|p| p.serve(&u.key)) {
                return Ok(v);
            }
        }
        Ok(self.site.store.execute(&u)?)
    }

    fn state_nonblocking(&mut self, object: usize, key: &[u8], op: Op) -> Result<(), NfError> {
        let u = self.update(object, key, op)?;
        Ok(self.site.store.execute_nonblocking(u)?)
    }

    fn schedule_timer(&mut self, at_ns: u64, payload: Vec<u8>) {
        self.timers.push((at_ns, payload));
    }

    fn custom_op(&self, name: &str) -> Option<CustomOpId> {
        self.site.store.custom_op_id(name)
    }

    fn random(&mut self) -> Result<u64, NfError> {
        let fresh = fresh_random(self.site.clock, self.site.vertex, self.seq);
        self.record(fresh)
    }

    fn wall_clock_ns(&mut self) -> Result<u64, NfError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.record(now)
    }
}

/// Name of the store operation that records non-deterministic values (`ctx.random()`,
/// `ctx.wall_clock_ns()`) under the input's tag; the engines register it with
/// [`record_op`].
pub const RECORD_OP: &str = "streamnf.record.v1";

/// State object id reserved for recorded values (never an NF's own object).
pub const RECORD_OBJECT: u16 = u16::MAX;

/// The `record` operation: returns its argument and changes nothing. Its result lives only in
/// the key's clock log, so a repeated tag (a replay) returns the first call's value until the
/// store forgets that clock.
pub fn record_op() -> streamnf_store::CustomOpFn {
    std::sync::Arc::new(|_value: &mut Option<Value>, arg: &[u8]| Ok(Some(Value::Bytes(arg.to_vec()))))
}

/// A value no two inputs are likely to share: a process-wide random seed mixed with the
/// input's clock, vertex and update number (splitmix64).
fn fresh_random(clock: u64, vertex: u32, seq: u32) -> u64 {
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        (t as u64) ^ (u64::from(std::process::id()) << 32)
    });
    let mut z = seed ^ clock.rotate_left(17) ^ (u64::from(vertex) << 40) ^ u64::from(seq);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One input as handed to an NF.
pub enum NfInput<'a> {
    /// A packet on an input port.
    Packet(usize, &'a mut Packet),
    /// A context message on an input port.
    Context(usize, &'a ContextMsg),
    /// A timer's payload, and the first update sequence number its handler uses (see
    /// [`crate::callbacks::TIMER_SEQ_BASE`]).
    Timer(&'a [u8], u32),
    /// A change of a watched state object, and the first update sequence number its
    /// callback uses (see [`crate::callbacks`]).
    StateChange(&'a StateChange, u32),
}

/// What an NF call wrote: outputs, alerts and timers, in order.
#[derive(Default)]
pub struct TaskBuffers {
    /// Outputs to route.
    pub emits: Vec<Emit>,
    /// Alerts raised.
    pub alerts: Vec<Alert>,
    /// Timers asked for (due time, payload).
    pub timers: Vec<(u64, Vec<u8>)>,
}

/// Where and when one NF call runs.
#[derive(Clone, Copy)]
pub struct CallSite<'a> {
    /// The store.
    pub store: &'a dyn StateStore,
    /// DAG id (store namespace).
    pub dag_id: u32,
    /// Vertex index.
    pub vertex: u32,
    /// Owner of the per-flow keys this input touches: the flow partition it belongs to
    /// (see [`crate::partition`]; 0 in the reference engine). It issues their updates.
    pub task: TaskId,
    /// The task (instance index within the vertex) running the input: it issues the
    /// updates of shared keys (the store keeps one clock-log run per issuer).
    pub slot: TaskId,
    /// Per state object: true when per-flow.
    pub per_flow: &'a [bool],
    /// Logical clock of the input.
    pub clock: u64,
    /// Trace time of the input.
    pub now_ns: u64,
    /// First update sequence number of a packet or context input (see
    /// [`crate::callbacks::MessageSeq`]); timers and callbacks bring their own.
    pub first_seq: u32,
    /// Reads are logged in the store under the input's tag (fault tolerance): a replayed
    /// input reads what the original read, not what later inputs wrote since.
    pub log_reads: bool,
    /// Guarantees off: updates are tagged with a fresh number from this counter instead
    /// of the input's clock, so the store never emulates a repeat (the naive baseline).
    pub untagged: Option<&'a std::sync::atomic::AtomicU64>,
    /// Reads fetched ahead for the batch this input belongs to (asynchronous NFs): served
    /// instead of a store read until the input's task updates the key.
    pub prefetched: Option<&'a crate::prefetch::Prefetched>,
    /// With logged reads (fault tolerance), the per-flow keys an asynchronous NF named for
    /// this packet input, in order (see [`crate::prefetch::declared_keys`]); empty otherwise.
    pub declared: &'a [StateKey],
}

/// The store key of `key` in state object `object` of `vertex`: per-flow objects are owned by
/// flow partition `part`. An object the NF did not declare is an error.
pub fn state_key(
    dag_id: u32,
    vertex: u32,
    part: TaskId,
    per_flow: &[bool],
    object: usize,
    key: &[u8],
) -> Result<StateKey, NfError> {
    let Some(&is_per_flow) = per_flow.get(object) else {
        return Err(NfError::State(format!(
            "state object #{object} is not declared (the NF declares {})",
            per_flow.len()
        )));
    };
    let object = u16::try_from(object).map_err(|_| NfError::State("too many state objects".into()))?;
    let sub = KeyBytes::new(key);
    Ok(if is_per_flow {
        StateKey::per_flow(dag_id, vertex, part, object, sub)
    } else {
        StateKey::shared(dag_id, vertex, object, sub)
    })
}

/// Runs one input through `nf` with a fresh [`TaskContext`], leaving what it emitted in
/// `bufs` (cleared first). An error or a panic is isolated: it is counted in `stats` and
/// drops the input's outputs (alerts and timers already raised stay).
pub fn invoke(
    nf: &dyn NetworkFunction,
    site: &CallSite<'_>,
    input: NfInput<'_>,
    bufs: &mut TaskBuffers,
    stats: &mut TaskStats,
) {
    bufs.emits.clear();
    bufs.alerts.clear();
    bufs.timers.clear();
    let mut ctx = TaskContext {
        site: *site,
        seq: match &input {
            NfInput::StateChange(_, first_seq) | NfInput::Timer(_, first_seq) => *first_seq,
            _ => site.first_seq,
        },
        emits: &mut bufs.emits,
        alerts: &mut bufs.alerts,
        timers: &mut bufs.timers,
        state_ops: 0,
        declared_updated: 0,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| match input {
        NfInput::Packet(port, p) => nf.on_packet(port, p, &mut ctx),
        NfInput::Context(port, m) => nf.on_context(port, m, &mut ctx),
        NfInput::Timer(payload, _) => nf.on_timer(payload, &mut ctx),
        NfInput::StateChange(change, _) => nf.on_state_change(change, &mut ctx),
    }));
    stats.state_ops += ctx.state_ops;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            stats.nf_errors += 1;
            bufs.emits.clear();
        }
        Err(_) => {
            stats.nf_panics += 1;
            bufs.emits.clear();
        }
    }
}
