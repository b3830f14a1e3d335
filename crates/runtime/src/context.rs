//! [`TaskContext`]: the runtime's implementation of [`NfContext`] for one input at one task.
//!
//! It turns an NF's state calls into store updates tagged with the input's logical clock
//! and a per-input sequence number (so a replayed input reissues the same tags and the
//! store can emulate them), and buffers the NF's outputs, alerts and timers for the engine
//! to route after the NF returns. It never routes anything itself.

use streamnf_dag::{Alert, ContextMsg, NfContext, NfError};
use streamnf_store::{CustomOpId, KeyBytes, Op, StateKey, StateStore, TaskId, Update, UpdateTag, Value};

/// Something the NF asked to send.
#[derive(Clone, Debug, PartialEq)]
pub enum Emit {
    /// The current packet, to this output port.
    Packet(usize),
    /// A context message, to this output port.
    Context(usize, ContextMsg),
}

/// Per-input context handed to an NF.
pub struct TaskContext<'a> {
    /// The store.
    pub store: &'a dyn StateStore,
    /// DAG id (store namespace).
    pub dag_id: u32,
    /// Vertex index.
    pub vertex: u32,
    /// Task (instance) index within the vertex.
    pub task: TaskId,
    /// Per state object: true when per-flow (owned by a task).
    pub per_flow: &'a [bool],
    /// Logical clock of the input.
    pub clock: u64,
    /// Trace time of the input.
    pub now_ns: u64,
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
}

impl TaskContext<'_> {
    fn update(&mut self, object: usize, key: &[u8], op: Op) -> Result<Update, NfError> {
        let Some(&per_flow) = self.per_flow.get(object) else {
            return Err(NfError::State(format!(
                "state object #{object} is not declared (the NF declares {})",
                self.per_flow.len()
            )));
        };
        let object = u16::try_from(object).map_err(|_| NfError::State("too many state objects".into()))?;
        let sub = KeyBytes::new(key);
        let key = if per_flow {
            StateKey::per_flow(self.dag_id, self.vertex, self.task, object, sub)
        } else {
            StateKey::shared(self.dag_id, self.vertex, object, sub)
        };
        let tag = UpdateTag { clock: self.clock, seq: self.seq };
        self.seq = self.seq.wrapping_add(1);
        self.state_ops += 1;
        Ok(Update::new(key, op, tag, self.task))
    }
}

impl NfContext for TaskContext<'_> {
    fn clock(&self) -> u64 {
        self.clock
    }

    fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn forward(&mut self, port: usize) {
        self.emits.push(Emit::Packet(port));
    }

    fn emit_context(&mut self, port: usize, msg: ContextMsg) {
        self.emits.push(Emit::Context(port, msg));
    }

    fn alert(&mut self, alert: Alert) {
        self.alerts.push(alert);
    }

    fn state(&mut self, object: usize, key: &[u8], op: Op) -> Result<Option<Value>, NfError> {
        let u = self.update(object, key, op)?;
        Ok(self.store.execute(&u)?)
    }

    fn state_nonblocking(&mut self, object: usize, key: &[u8], op: Op) -> Result<(), NfError> {
        let u = self.update(object, key, op)?;
        Ok(self.store.execute_nonblocking(u)?)
    }

    fn schedule_timer(&mut self, at_ns: u64, payload: Vec<u8>) {
        self.timers.push((at_ns, payload));
    }

    fn custom_op(&self, name: &str) -> Option<CustomOpId> {
        self.store.custom_op_id(name)
    }
}
