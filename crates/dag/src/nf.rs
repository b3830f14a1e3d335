//! The NF API: what a network function declares ([`NfSpec`]) and how it processes
//! packets and context messages through an [`NfContext`].
//!
//! An NF is a `&self`-only object shared by all instances (tasks) of its vertex: it has
//! no mutable fields, so everything it remembers must go through the state API
//! ([`NfContext::state`]). That is what lets the framework scale, fail over and clone
//! instances without losing state. Never add interior mutability (`Cell`, `Mutex`,
//! atomics) to an NF: the runtime cannot see or replay such state.

use serde_json::Value as Json;
use streamnf_packet::{Flowspace, Packet};
use streamnf_store::{CustomOpId, Op, Value};

/// What an NF port carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortClass {
    /// Packets.
    Packets,
    /// JSON context messages of a named type (e.g. `"verdict"`); edges must join equal types.
    Context(String),
}

impl std::fmt::Display for PortClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortClass::Packets => f.write_str("packets"),
            PortClass::Context(t) => write!(f, "context<{t}>"),
        }
    }
}

/// A typed input or output port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// Port name, unique among the NF's inputs (or outputs).
    pub name: String,
    /// What flows through it.
    pub class: PortClass,
    /// A required port must be connected in every chain that uses the NF.
    pub required: bool,
}

impl PortSpec {
    /// A required packet port.
    pub fn packets(name: &str) -> PortSpec {
        PortSpec { name: name.into(), class: PortClass::Packets, required: true }
    }
    /// An optional packet port.
    pub fn optional_packets(name: &str) -> PortSpec {
        PortSpec { name: name.into(), class: PortClass::Packets, required: false }
    }
    /// An optional context port of message type `ty`.
    pub fn context(name: &str, ty: &str) -> PortSpec {
        PortSpec { name: name.into(), class: PortClass::Context(ty.into()), required: false }
    }
}

/// Who may update a state object, and how its keys partition traffic (§3.1, §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateScope {
    /// Per-flow state: one value per key of these flowspaces (ordered fine → coarse);
    /// only the task that owns a flow updates it.
    PerFlow(Vec<Flowspace>),
    /// Shared by every instance of the vertex; the store serialises updates.
    Shared,
}

/// A state object an NF declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateObjectSpec {
    /// Name, unique within the NF.
    pub name: String,
    /// Scope.
    pub scope: StateScope,
    /// Read far more than written: eligible for client-side caching with invalidation.
    pub read_heavy: bool,
}

impl StateObjectSpec {
    /// A per-flow object keyed by one flowspace.
    pub fn per_flow(name: &str, flowspace: Flowspace) -> StateObjectSpec {
        StateObjectSpec { name: name.into(), scope: StateScope::PerFlow(vec![flowspace]), read_heavy: false }
    }
    /// A shared object.
    pub fn shared(name: &str) -> StateObjectSpec {
        StateObjectSpec { name: name.into(), scope: StateScope::Shared, read_heavy: false }
    }
}

/// An NF's static declaration: its ports and state objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NfSpec {
    /// Input ports; index = port number passed to `on_packet` / `on_context`.
    pub inputs: Vec<PortSpec>,
    /// Output ports; index = port number passed to [`NfContext::forward`].
    pub outputs: Vec<PortSpec>,
    /// State objects; index = object number passed to [`NfContext::state`].
    pub state: Vec<StateObjectSpec>,
    /// The NF terminates connections (consumes logical clocks, §5).
    pub connection_terminating: bool,
}

impl NfSpec {
    /// Index of the input port called `name`.
    pub fn input(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|p| p.name == name)
    }
    /// Index of the output port called `name`.
    pub fn output(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|p| p.name == name)
    }
}

/// A state object of some vertex whose changes an NF wants to hear about (§2.1, §4.4
/// callbacks): the off-path analyzer that learns of a firewall's per-host counts without any
/// traffic mirrored to it, say. Declared by [`NetworkFunction::watches`]; the chain builder
/// resolves the names and refuses unknown ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateWatch {
    /// Name of the watched vertex in the chain; empty means the watching vertex itself.
    pub vertex: String,
    /// Name of the state object in that vertex's [`NfSpec::state`].
    pub object: String,
}

impl StateWatch {
    /// Watches object `object` of vertex `vertex` (empty `vertex` = this vertex).
    pub fn new(vertex: &str, object: &str) -> StateWatch {
        StateWatch { vertex: vertex.into(), object: object.into() }
    }
}

/// One change of a watched state object, handed to [`NetworkFunction::on_state_change`].
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    /// Index of the watch in [`NetworkFunction::watches`].
    pub watch: usize,
    /// Sub-key of the changed key (the bytes the writing NF passed to `state`).
    pub key: Vec<u8>,
    /// Value after the change (`None` = deleted).
    pub value: Option<Value>,
    /// Logical clock of the update that made the change.
    pub clock: u64,
}

/// A JSON context message sent between NFs (e.g. the IDS's `suspicious` verdict).
pub type ContextMsg = Json;

/// An alert raised by an NF. The runtime adds `vertex`, `clock` and `ts` when it writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Alert kind, e.g. `port_scan`, `syn_flood`, `dpi_match`.
    pub kind: String,
    /// Subject fields, e.g. `{"src_ip": "10.0.0.1", "count": 20}`.
    pub fields: serde_json::Map<String, Json>,
}

impl Alert {
    /// A new alert of `kind` with no fields.
    pub fn new(kind: &str) -> Alert {
        Alert { kind: kind.into(), fields: serde_json::Map::new() }
    }
    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Json>) -> Alert {
        self.fields.insert(key.into(), value.into());
        self
    }
}

/// An error an NF returns for one input; the runtime counts it per vertex and drops the input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NfError {
    /// A state operation failed.
    #[error("state: {0}")]
    State(String),
    /// The input was not what the NF expected.
    #[error("bad input: {0}")]
    BadInput(String),
}

impl From<streamnf_store::StoreError> for NfError {
    fn from(e: streamnf_store::StoreError) -> Self {
        NfError::State(e.to_string())
    }
}

/// What an NF can do while processing one input. Implemented by the runtime.
pub trait NfContext {
    /// Logical clock of the packet being processed (or that caused this context message).
    fn clock(&self) -> u64;
    /// Timestamp of that packet in nanoseconds (trace time, not wall-clock).
    fn now_ns(&self) -> u64;
    /// Sends the current packet to output port `port` once processing returns. Calling it
    /// for several ports sends copies; not calling it drops the packet.
    fn forward(&mut self, port: usize);
    /// Sends a context message to output port `port`.
    fn emit_context(&mut self, port: usize, msg: ContextMsg);
    /// Sends a packet the NF built itself (a caching proxy's answer, say) to output port
    /// `port` once processing returns. It carries the current input's logical clock.
    /// Build it complete (valid headers and checksums) and parsed (`Packet::new`).
    fn send_packet(&mut self, port: usize, pkt: Packet);
    /// Raises an alert.
    fn alert(&mut self, alert: Alert);
    /// Applies a state operation to `key` of state object `object` and waits for its result.
    fn state(&mut self, object: usize, key: &[u8], op: Op) -> Result<Option<Value>, NfError>;
    /// Applies an update without waiting (the store applies it before any later read).
    fn state_nonblocking(&mut self, object: usize, key: &[u8], op: Op) -> Result<(), NfError>;
    /// Schedules `on_timer(payload)` at trace time `at_ns` on this task (see
    /// [`NetworkFunction::on_timer`]).
    fn schedule_timer(&mut self, at_ns: u64, payload: Vec<u8>);
    /// Looks up a custom store operation registered in [`NetworkFunction::custom_ops`].
    fn custom_op(&self, name: &str) -> Option<CustomOpId>;
    /// A random 64-bit value, recorded in the store under this input's clock (appendix,
    /// "non-deterministic values"): processing the same input again — a replay after a
    /// failover, or a straggler's clone — gets the same values in the same order. Use it
    /// for any random choice that affects state or output.
    fn random(&mut self) -> Result<u64, NfError>;
    /// The wall-clock time in nanoseconds since the Unix epoch, recorded like
    /// [`NfContext::random`]. NFs should prefer trace time ([`NfContext::now_ns`]).
    fn wall_clock_ns(&mut self) -> Result<u64, NfError>;
}

/// Convenience wrappers over [`NfContext::state`] for Table 1 operations.
pub trait StateExt: NfContext {
    /// Reads an integer (missing = 0).
    fn get_int(&mut self, object: usize, key: &[u8]) -> Result<i64, NfError> {
        match self.state(object, key, Op::Get)? {
            Some(Value::Int(v)) => Ok(v),
            None => Ok(0),
            Some(other) => Err(NfError::State(format!("expected an integer, found {other:?}"))),
        }
    }
    /// Reads any value.
    fn get(&mut self, object: usize, key: &[u8]) -> Result<Option<Value>, NfError> {
        self.state(object, key, Op::Get)
    }
    /// Increments and returns the new value.
    fn incr(&mut self, object: usize, key: &[u8], delta: i64) -> Result<i64, NfError> {
        match self.state(object, key, Op::Incr(delta))? {
            Some(Value::Int(v)) => Ok(v),
            other => Err(NfError::State(format!("increment returned {other:?}"))),
        }
    }
    /// Increments without waiting.
    fn incr_nb(&mut self, object: usize, key: &[u8], delta: i64) -> Result<(), NfError> {
        self.state_nonblocking(object, key, Op::Incr(delta))
    }
    /// Sets a value.
    fn set(&mut self, object: usize, key: &[u8], value: Value) -> Result<(), NfError> {
        self.state(object, key, Op::Set(value)).map(|_| ())
    }
}

impl<T: NfContext + ?Sized> StateExt for T {}

/// How an NF waits for its state reads (paper appendix, "Asynchronous processing").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProcessingMode {
    /// Every read waits for the store (on Redis: one round trip per read).
    #[default]
    Synchronous,
    /// The NF names each packet's reads in [`NetworkFunction::prefetch`]; the task asks the
    /// store for the reads of a whole batch of packets at once (on Redis: one round trip),
    /// and runs [`NetworkFunction::on_packet`] — the callback — for each packet when its
    /// data has arrived, serving those reads from what arrived. Packets still run in the
    /// order they came, so each flow's packets stay in order; what the task overlaps are the
    /// waits of different packets. A read of a key an earlier packet of the batch updated
    /// is not served from the prefetch but from the store, so the NF sees exactly what it
    /// would see in synchronous mode, with one exception: a prefetched read of a *shared*
    /// object may miss updates other instances made while the batch ran (use an update
    /// op — increment, compare-and-set — when the current value matters).
    ///
    /// Runs with fault tolerance (churn events, automatic churn) log every read under a tag
    /// so that a replay or a clone reads what the original read. There, only the *per-flow*
    /// keys an NF names are prefetched, each as a logged read under a tag of its own (the
    /// key's place among the named ones), and a batch is fetched in rounds that never hold
    /// two packets of one flow partition; reads of shared objects wait for the store. The
    /// single-instance reference engine has no batches and runs asynchronous NFs
    /// synchronously.
    Asynchronous,
}

/// What a [`ReadSet`] can look up: the values fetched in earlier rounds for the packet being
/// asked about (`Some(None)`: fetched and missing in the store; `None`: not fetched).
pub type FetchedLookup<'a> = &'a dyn Fn(usize, &[u8]) -> Option<Option<Value>>;

/// The state reads one packet needs, named by an asynchronous NF in
/// [`NetworkFunction::prefetch`]. The framework asks in rounds (at most
/// [`ReadSet::MAX_ROUNDS`]): a read that depends on another read's value (the mapping a
/// NAT's reverse slot names, say) is named in a later round, once
/// [`ReadSet::fetched`] has the value it depends on.
#[derive(Default)]
pub struct ReadSet<'a> {
    reads: Vec<(usize, Vec<u8>)>,
    fetched: Option<FetchedLookup<'a>>,
}

impl<'a> ReadSet<'a> {
    /// Rounds of reads the framework fetches for one batch.
    pub const MAX_ROUNDS: usize = 3;

    /// An empty set with nothing fetched yet (the first round).
    pub fn new() -> ReadSet<'a> {
        ReadSet::default()
    }
    /// An empty set whose [`ReadSet::fetched`] answers from `lookup` (later rounds).
    pub fn with_fetched(lookup: FetchedLookup<'a>) -> ReadSet<'a> {
        ReadSet { reads: Vec::new(), fetched: Some(lookup) }
    }
    /// Names a read of `key` of state object `object` (an index into [`NfSpec::state`]).
    /// Naming a read already fetched is harmless.
    pub fn read(&mut self, object: usize, key: &[u8]) {
        self.reads.push((object, key.to_vec()));
    }
    /// The value an earlier round fetched for `key` of `object` (`Some(None)`: the key is
    /// missing in the store), or `None` when it has not been fetched (yet).
    pub fn fetched(&self, object: usize, key: &[u8]) -> Option<Option<Value>> {
        self.fetched.and_then(|f| f(object, key))
    }
    /// The reads named so far, in order.
    pub fn reads(&self) -> &[(usize, Vec<u8>)] {
        &self.reads
    }
    /// Number of reads named.
    pub fn len(&self) -> usize {
        self.reads.len()
    }
    /// True when no read is named.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }
}

impl std::fmt::Debug for ReadSet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSet").field("reads", &self.reads).finish_non_exhaustive()
    }
}

/// A network function. One object serves every instance of its vertex.
pub trait NetworkFunction: Send + Sync {
    /// Ports and state objects. Called once when the chain is built.
    fn spec(&self) -> NfSpec;

    /// Processes a packet arriving on input port `port`. May rewrite the packet in place
    /// (then call [`Packet::reparse`]) before forwarding it.
    fn on_packet(&self, port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError>;

    /// Processes a context message arriving on input port `port`.
    fn on_context(&self, port: usize, msg: &ContextMsg, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let _ = (port, msg, ctx);
        Ok(())
    }

    /// Handles a timer this NF scheduled. It runs at trace time `at_ns` (its due time), on
    /// the task that scheduled it, between packets: with no packet of its own and no logical
    /// clock of its own (it runs at the clock of the last packet before it), so a timer never
    /// renumbers packets. It may read and update state, raise alerts and schedule timers;
    /// what it emits is discarded (counted in the task's `discarded_emits`). A parallel run
    /// may fire a timer some packets later than a single-instance run: keep expiry logical
    /// (decided from packet times) and use timers to clean up.
    fn on_timer(&self, payload: &[u8], ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let _ = (payload, ctx);
        Ok(())
    }

    /// The partition key of a packet arriving for this NF, when the NF needs a split its
    /// per-flow flowspaces cannot express (a NAT's replies are addressed to the external
    /// address, not to the connection that owns them). `None` (the default) lets the
    /// splitter use the vertex's flowspaces. Must depend on the packet only. An NF with its
    /// own key should also return true from [`NetworkFunction::rewrites_headers`] when
    /// its key does not follow its flowspaces, so downstream vertices order their input.
    fn partition_hash(&self, pkt: &Packet) -> Option<u64> {
        let _ = pkt;
        None
    }

    /// True when the NF rewrites header fields (addresses, ports) of packets it forwards.
    /// The runtime then cannot assume a downstream flow passed through one instance, and
    /// orders that vertex's input by logical clock. Default: false.
    fn rewrites_headers(&self) -> bool {
        false
    }

    /// State objects (of this or other vertices) whose changes this NF wants delivered to
    /// [`NetworkFunction::on_state_change`]. Default: none.
    fn watches(&self) -> Vec<StateWatch> {
        Vec::new()
    }

    /// Handles a change of a watched object. The call runs at the clock of the update that
    /// made the change; it may read and update state, raise alerts and schedule timers.
    /// Packets and context messages it emits are discarded: a callback has no place in the
    /// packet order (the runtime counts them in the task's `discarded_emits`).
    fn on_state_change(&self, change: &StateChange, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let _ = (change, ctx);
        Ok(())
    }

    /// Whether the NF's reads wait one by one or are prefetched for a batch of packets
    /// (see [`ProcessingMode`]). Default: synchronous.
    fn mode(&self) -> ProcessingMode {
        ProcessingMode::Synchronous
    }

    /// Asynchronous mode: names the state reads [`NetworkFunction::on_packet`] will make for
    /// `pkt` on input `port` (object, key). Called once per round for each packet of a
    /// batch; a read that needs another read's value names it once [`ReadSet::fetched`]
    /// has that value. Reads it does not name, or names wrongly, still work (they wait for
    /// the store); naming a read the packet does not make costs a wasted fetch. Must depend
    /// on the packet and the fetched values only.
    fn prefetch(&self, port: usize, pkt: &Packet, reads: &mut ReadSet<'_>) {
        let _ = (port, pkt, reads);
    }

    /// Custom store operations this NF needs, by name (registered once per store).
    fn custom_ops(&self) -> Vec<(String, streamnf_store::CustomOpFn)> {
        Vec::new()
    }
}
