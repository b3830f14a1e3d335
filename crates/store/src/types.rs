//! Plain data types of the state API: keys, values, operations, updates, notifications,
//! subscription filters, timers and errors.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Logical clock of a packet. The root splitter starts at 1; clock 0 is free for
/// bootstrap writes (e.g. configuration loaded before any packet).
pub type Clock = u64;

/// Identifier of one task (physical instance of a logical vertex).
pub type TaskId = u32;

/// Identifies one update among those one packet causes at one vertex: `(clock, seq)`, where
/// `seq` is the index of the update within that packet's processing at that vertex
/// (0, 1, 2, ...).
///
/// Ordered by `clock` first, then `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UpdateTag {
    /// Logical clock of the packet that caused the update.
    pub clock: Clock,
    /// Index of the update within that packet's processing at one vertex.
    pub seq: u32,
}

impl UpdateTag {
    /// Builds a tag.
    pub const fn new(clock: Clock, seq: u32) -> Self {
        UpdateTag { clock, seq }
    }
}

/// Maximum number of key bytes held verbatim by [`KeyBytes`].
pub const KEY_BYTES_MAX: usize = 48;

/// Marker stored in `len` for folded (over-long) keys; never a valid verbatim length.
const FOLDED: u8 = u8::MAX;

/// Inline key bytes (the "object key" part of a [`StateKey`]): `Copy`, no allocation.
///
/// Up to [`KEY_BYTES_MAX`] (48) bytes are stored verbatim. A longer input is *folded*:
/// the first 40 bytes are kept and the last 8 bytes hold the little-endian 64-bit FNV-1a
/// hash of the whole input. A folded key never compares equal to a verbatim key (it
/// carries a flag), but two different long inputs sharing their first 40 bytes and their
/// FNV-1a hash would collide; callers needing exactness should keep sub-keys <= 48 bytes
/// (flow 5-tuples are 13 or 37 bytes) or use [`KeyBytes::try_new`], which refuses long input.
///
/// Ordering is lexicographic on [`KeyBytes::as_bytes`] (folded keys sort after a verbatim
/// key with the same bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyBytes {
    // Invariant: bytes past the logical length are zero (makes the derived Eq/Ord correct
    // and lets Hash/Eq work on whole words).
    data: [u8; KEY_BYTES_MAX],
    len: u8,
}

impl KeyBytes {
    /// The empty key.
    pub const EMPTY: KeyBytes = KeyBytes { data: [0; KEY_BYTES_MAX], len: 0 };

    /// Builds key bytes from `bytes`; inputs longer than 48 bytes are folded (see the type
    /// documentation).
    pub fn new(bytes: &[u8]) -> KeyBytes {
        let mut data = [0u8; KEY_BYTES_MAX];
        if bytes.len() <= KEY_BYTES_MAX {
            data[..bytes.len()].copy_from_slice(bytes);
            KeyBytes { data, len: bytes.len() as u8 }
        } else {
            let keep = KEY_BYTES_MAX - 8;
            data[..keep].copy_from_slice(&bytes[..keep]);
            data[keep..].copy_from_slice(&fnv1a64(bytes).to_le_bytes());
            KeyBytes { data, len: FOLDED }
        }
    }

    /// Builds key bytes, refusing inputs longer than 48 bytes (returns `None`).
    pub fn try_new(bytes: &[u8]) -> Option<KeyBytes> {
        (bytes.len() <= KEY_BYTES_MAX).then(|| KeyBytes::new(bytes))
    }

    /// Builds key bytes from a `u64` (8 little-endian bytes); handy for numeric sub-keys.
    pub fn from_u64(v: u64) -> KeyBytes {
        KeyBytes::new(&v.to_le_bytes())
    }

    /// The stored bytes (48 bytes, prefix + hash, for a folded key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data[..self.stored_len()]
    }

    /// Number of stored bytes.
    pub fn len(&self) -> usize {
        self.stored_len()
    }

    /// True when no bytes are stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the input was longer than 48 bytes and was folded.
    pub fn is_folded(&self) -> bool {
        self.len == FOLDED
    }

    fn stored_len(&self) -> usize {
        if self.len == FOLDED {
            KEY_BYTES_MAX
        } else {
            self.len as usize
        }
    }
}

impl Default for KeyBytes {
    fn default() -> Self {
        KeyBytes::EMPTY
    }
}

impl Hash for KeyBytes {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Length, then the used 8-byte words (zero padded): consistent with Eq because
        // bytes past the length are always zero.
        state.write_u64(u64::from(self.len));
        let words = self.stored_len().div_ceil(8);
        for chunk in self.data.chunks_exact(8).take(words) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            state.write_u64(u64::from_le_bytes(w));
        }
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyBytes({self})")
    }
}

impl fmt::Display for KeyBytes {
    /// Lower-case hex of the stored bytes, prefixed by `fnv:` for a folded key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_folded() {
            f.write_str("fnv:")?;
        }
        // One write of all the digits (a `write!` per byte is several times slower, and key
        // strings are built for every Redis update and every snapshot entry).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 2 * KEY_BYTES_MAX];
        let bytes = self.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&buf[..2 * bytes.len()]).unwrap_or(""))
    }
}

impl From<&[u8]> for KeyBytes {
    fn from(b: &[u8]) -> Self {
        KeyBytes::new(b)
    }
}

impl From<&str> for KeyBytes {
    fn from(s: &str) -> Self {
        KeyBytes::new(s.as_bytes())
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Full key of one state object, including the metadata of §4.4: DAG id, vertex id, the
/// owning task for per-flow objects, the object id assigned at DAG initialisation, and a
/// sub-key (e.g. the flow or host the entry is about).
///
/// Per-flow objects carry `owner: Some(task)`; only that task may update them. Shared
/// (cross-flow) objects carry `owner: None` and any task of the vertex may update them.
/// Anyone may read any key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateKey {
    /// DAG id.
    pub dag: u32,
    /// Logical vertex id within the DAG.
    pub vertex: u32,
    /// State object id within the vertex.
    pub object: u16,
    /// `Some(t)`: per-flow object owned by task `t`; `None`: shared object.
    pub owner: Option<TaskId>,
    /// Sub-key within the object.
    pub sub: KeyBytes,
}

impl Hash for StateKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Packed into two words (cheaper than field-by-field), then the sub-key.
        state.write_u64(u64::from(self.dag) | (u64::from(self.vertex) << 32));
        let owner = match self.owner {
            Some(t) => (1u64 << 16) | (u64::from(t) << 32),
            None => 0,
        };
        state.write_u64(u64::from(self.object) | owner);
        self.sub.hash(state);
    }
}

impl StateKey {
    /// Key of a shared object entry (`owner: None`).
    pub fn shared(dag: u32, vertex: u32, object: u16, sub: KeyBytes) -> StateKey {
        StateKey { dag, vertex, object, owner: None, sub }
    }

    /// Key of a per-flow object entry owned by `owner`.
    pub fn per_flow(dag: u32, vertex: u32, owner: TaskId, object: u16, sub: KeyBytes) -> StateKey {
        StateKey { dag, vertex, object, owner: Some(owner), sub }
    }

    /// Stable string form used in snapshots: `dag/vertex/task-or-*/object/hex(sub)`,
    /// identical to the `Display` form (e.g. `1/2/*/3/0a0b` or `1/2/7/3/0a0b`).
    pub fn to_stable_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/", self.dag, self.vertex)?;
        match self.owner {
            Some(t) => write!(f, "{t}")?,
            None => f.write_str("*")?,
        }
        write!(f, "/{}/{}", self.object, self.sub)
    }
}

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Signed 64-bit integer (counters).
    Int(i64),
    /// Opaque bytes (encoded records, mappings).
    Bytes(Vec<u8>),
    /// A list of byte strings, usable as a queue or stack.
    List(VecDeque<Vec<u8>>),
}

impl Value {
    /// Name of the variant, as used in [`StoreError::TypeMismatch`]: `"int"`, `"bytes"`, `"list"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
        }
    }

    /// The integer, if this is an `Int`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The bytes, if this is `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// Index of a registered custom operation (see [`crate::StateStore::register_custom_op`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomOpId(pub u16);

/// A custom operation: mutates the key's value in place (`None` = missing; setting it to
/// `None` deletes the key) given an argument, and returns the operation's result.
///
/// It must be deterministic and must not call back into the store. If it returns an error,
/// any change it made to the value is discarded.
pub type CustomOpFn =
    Arc<dyn Fn(&mut Option<Value>, &[u8]) -> Result<Option<Value>, StoreError> + Send + Sync>;

/// A state operation (Table 1 of the paper, plus custom operations).
///
/// Results (the `Ok` value of [`crate::StateStore::execute`]):
///
/// | op | effect | result |
/// |---|---|---|
/// | `Get` | none | current value or `None` |
/// | `LoggedGet` | none (but logged under the update's tag) | current value or `None`; a repeated tag gets the first read's value |
/// | `Set(v)` | value := v | `None` |
/// | `Delete` | removes the key | the removed value, or `None` if missing |
/// | `Incr(d)` | int += d (missing counts as 0; wrapping on overflow) | `Some(Int(new))` |
/// | `IncrIf{delta,min,max}` | see the variant | `Some(Int(new))` or `Some(Int(old))` |
/// | `Push{back,item}` | pushes onto the list (created if missing) | `Some(Int(new_len))` |
/// | `Pop{back}` | pops from the list; a list left empty is removed | `Some(Bytes(item))`, `None` if empty/missing |
/// | `CompareAndSet{expected,new}` | value := new iff value == expected | `Some(Int(1))` applied, `Some(Int(0))` not |
/// | `Custom{op,arg}` | whatever the custom function does | whatever it returns |
///
/// Type errors ([`StoreError::TypeMismatch`]): `Incr`/`IncrIf` on a non-int, `Push`/`Pop`
/// on a non-list. An empty list is never stored (like Redis), so after popping the last
/// item the key is missing again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reads the value.
    Get,
    /// Reads the value as an update: nothing changes, but the result is logged under the
    /// update's tag like any update's, so a repeat of the tag (a replayed input, a clone)
    /// reads what the first read did even if the key changed since. The runtime issues it
    /// for NF reads when fault tolerance is on. Per-flow keys: owner only, like updates.
    LoggedGet,
    /// Sets the value.
    Set(Value),
    /// Deletes the key.
    Delete,
    /// Adds a delta to an integer; a missing key counts as 0. Returns `Some(Int(new))`.
    Incr(i64),
    /// Conditional add: with `old` the current integer (0 if missing) and
    /// `new = old + delta` (checked; overflow counts as out of range), the value is set to
    /// `new` only if `min <= new <= max`, returning `Some(Int(new))`; otherwise nothing
    /// changes (a missing key stays missing) and the result is `Some(Int(old))`.
    /// (With `delta != 0`, the caller tells the cases apart by `result != old`.)
    IncrIf {
        /// Amount to add.
        delta: i64,
        /// Lowest allowed new value (inclusive).
        min: i64,
        /// Highest allowed new value (inclusive).
        max: i64,
    },
    /// Pushes an item at the back (`back: true`) or front of a list, creating the list.
    /// Returns `Some(Int(new_len))`.
    Push {
        /// Push at the back (true) or front (false).
        back: bool,
        /// The item.
        item: Vec<u8>,
    },
    /// Pops from the back (`back: true`) or front of a list. Returns `Some(Bytes(item))`,
    /// or `None` when the list is missing (empty lists are not stored).
    Pop {
        /// Pop from the back (true) or front (false).
        back: bool,
    },
    /// Sets the value to `new` (`None` deletes) iff the current value equals `expected`
    /// (`None` = missing). Returns `Some(Int(1))` when applied, `Some(Int(0))` otherwise.
    CompareAndSet {
        /// Expected current value (`None` = key missing).
        expected: Option<Value>,
        /// New value (`None` = delete).
        new: Option<Value>,
    },
    /// Runs a registered custom operation.
    Custom {
        /// Which operation.
        op: CustomOpId,
        /// Its argument.
        arg: Vec<u8>,
    },
}

impl Op {
    /// True for `Get`, the only operation that does not modify state and is never logged.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get)
    }
}

/// One state operation issued by a task on behalf of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// Target key.
    pub key: StateKey,
    /// Operation.
    pub op: Op,
    /// Clock tag of the causing packet (used for emulation of repeats).
    pub tag: UpdateTag,
    /// Issuing task (checked against `key.owner` for per-flow keys).
    pub issuer: TaskId,
}

impl Update {
    /// Builds an update.
    pub fn new(key: StateKey, op: Op, tag: UpdateTag, issuer: TaskId) -> Update {
        Update { key, op, tag, issuer }
    }
}

/// Sent to subscribers after an update changed a key matching their filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The changed key.
    pub key: StateKey,
    /// Its value after the update (`None` = deleted).
    pub value: Option<Value>,
    /// Tag of the update that changed it.
    pub tag: UpdateTag,
}

/// Prefix-style subscription filter: all keys of `dag`, optionally narrowed to one vertex
/// and/or one object id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyFilter {
    /// DAG id (always matched).
    pub dag: u32,
    /// Vertex id, or any.
    pub vertex: Option<u32>,
    /// Object id, or any.
    pub object: Option<u16>,
}

impl KeyFilter {
    /// Matches every key of a DAG.
    pub fn dag(dag: u32) -> KeyFilter {
        KeyFilter { dag, vertex: None, object: None }
    }

    /// Matches every key of one object of one vertex.
    pub fn object(dag: u32, vertex: u32, object: u16) -> KeyFilter {
        KeyFilter { dag, vertex: Some(vertex), object: Some(object) }
    }

    /// True when `key` matches.
    #[inline]
    pub fn matches(&self, key: &StateKey) -> bool {
        self.dag == key.dag
            && (self.vertex.is_none() || self.vertex == Some(key.vertex))
            && (self.object.is_none() || self.object == Some(key.object))
    }
}

/// A scheduled timer (§4.4 callbacks on timer events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// Unique id returned by `schedule_timer`.
    pub id: u64,
    /// Due time in nanoseconds (caller's time base).
    pub at_ns: u64,
    /// DAG id.
    pub dag: u32,
    /// Vertex id.
    pub vertex: u32,
    /// Target task, or `None` for any task of the vertex.
    pub task: Option<TaskId>,
    /// Opaque payload.
    pub payload: Vec<u8>,
}

/// Errors of the state store. A failed operation changes nothing and is not logged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A task tried to update a per-flow key owned by another task.
    #[error("task {issuer} may not update key {key}: it is owned by task {owner}")]
    NotOwner {
        /// The key, rendered.
        key: String,
        /// Owning task.
        owner: TaskId,
        /// Issuing task.
        issuer: TaskId,
    },
    /// The operation does not apply to the stored value's type.
    #[error("type mismatch on key {key}: operation needs {expected}, value is {found}")]
    TypeMismatch {
        /// The key, rendered.
        key: String,
        /// Type the operation needs.
        expected: &'static str,
        /// Type found.
        found: &'static str,
    },
    /// No custom operation is registered under this id.
    #[error("unknown custom operation id {0}")]
    UnknownCustomOp(u16),
    /// Error raised by a custom operation.
    #[error("custom operation failed: {0}")]
    Custom(String),
    /// Backend failure (I/O, protocol, capacity).
    #[error("store backend error: {0}")]
    Backend(String),
}
