//! # streamnf-store
//!
//! The state layer of streamnf (StreamNF §4.4, §5.1): all NF state is externalised to a
//! store behind the [`StateStore`] trait.
//!
//! What this crate owns:
//! - **NF state**: keys ([`StateKey`]: DAG, vertex, owning task for per-flow objects,
//!   object id, sub-key) and values ([`Value`]: int, bytes, list);
//! - **offloaded operations** ([`Op`], Table 1): get/set/delete, increment (plain and
//!   bounded), push/pop on lists, compare-and-set, and registered custom operations;
//! - **per-key serialisation**: concurrent operations on one key are applied one at a time
//!   and none is lost; operations on different keys proceed in parallel;
//! - **ownership**: only the owner task may update a per-flow key; anyone may read;
//! - **clock logs** (§5.1): every update carries the [`UpdateTag`] (logical clock of the
//!   causing packet + index of the update) and the store keeps, per key, the results of the
//!   updates it applied; a repeated `(key, tag)` is *emulated* (the logged result is returned
//!   and nothing changes) until [`StateStore::gc_below`] forgets it;
//! - **callbacks**: update notifications to subscribers ([`KeyFilter`]) and timers
//!   ([`Timer`]).
//!
//! What it never does: parse packets, assign clocks, or schedule tasks — the runtime does
//! that and calls the store.
//!
//! Backends: [`EmbeddedStore`] (sharded in-process store with clock logs; the default) and
//! [`LocalStore`] (the "traditional NF" baseline with no clock log, for benchmarks only).
//! [`conformance`] holds trait-only checks any backend should pass; [`bench`](mod@bench) holds
//! throughput measurements.
#![warn(missing_docs)]

pub mod bench;
pub mod cached;
pub mod conformance;
pub mod embedded;
pub mod local;
mod ops;
pub mod redis;
pub mod redis_server;
mod types;

use std::collections::BTreeMap;

pub use cached::CachedStore;
pub use embedded::EmbeddedStore;
pub use local::{Checkpoint, LocalStore};
pub use redis::{RedisOptions, RedisStore};
pub use types::{
    Clock, CustomOpFn, CustomOpId, KeyBytes, KeyFilter, Notification, Op, StateKey, StoreError, TaskId,
    Timer, Update, UpdateTag, Value, KEY_BYTES_MAX,
};

/// The state API used by NF tasks and the runtime. Implementations are shared between
/// threads (`Send + Sync`) and must be object safe (`&dyn StateStore` is common).
///
/// Semantics common to all operations:
/// - Only the owner may update a per-flow key: `key.owner == Some(t)` and `issuer != t`
///   gives [`StoreError::NotOwner`] and changes nothing. Reads are open to all.
/// - `Get` (with or without a tag) is a plain read; it is not logged.
/// - Every other op is logged under `(key, tag)` when it succeeds; if the key's clock log
///   already holds `tag`, the update is emulated: the logged result is returned and nothing
///   changes (no notification either).
/// - A failed op (any `Err`) changes nothing and is not logged, so repeating it executes
///   it again.
/// - After [`StateStore::gc_below`]`(w)`, tags with `clock < w` are forgotten; repeating
///   such an update applies it again (callers must only GC clocks that can no longer be
///   replayed).
pub trait StateStore: Send + Sync {
    /// Applies an update (or a `Get`) and returns its result (see [`Op`] for each op's
    /// result). Updates (anything but `Get`) carry a tag; if the key's clock log already
    /// holds that tag, the update is *emulated*: returns the logged result, changes nothing.
    fn execute(&self, u: &Update) -> Result<Option<Value>, StoreError>;

    /// Non-blocking update: returns at once; guaranteed applied before any later read of
    /// that key from any task. Errors detected at submission are returned; a backend that
    /// applies later may drop the result of the op (it is still logged for emulation).
    fn execute_nonblocking(&self, u: Update) -> Result<(), StoreError>;

    /// Reads a key without a tag.
    fn get(&self, key: &StateKey) -> Result<Option<Value>, StoreError>;

    /// Applies a batch of reads (`Get` and `LoggedGet` updates; anything else is refused with
    /// [`StoreError::Backend`]) and appends one result per read to `out`, in order: the same
    /// results as calling [`StateStore::execute`] on each, but a remote backend sends them
    /// together (on Redis: one pipelined round trip). Asynchronous NFs prefetch their
    /// packets' reads through it (see `NetworkFunction::prefetch`).
    fn execute_reads(&self, reads: &[Update], out: &mut Vec<Result<Option<Value>, StoreError>>) {
        for u in reads {
            out.push(if is_batch_read(&u.op) { self.execute(u) } else { Err(not_a_read(u)) });
        }
    }

    /// Registers a custom operation under `name` and returns its id. Registering the same
    /// name again is idempotent: it returns the same id and keeps the first function.
    fn register_custom_op(&self, name: &str, f: CustomOpFn) -> Result<CustomOpId, StoreError>;

    /// Id of the custom operation registered under `name`.
    fn custom_op_id(&self, name: &str) -> Option<CustomOpId>;

    /// Subscribes `sink` to changes of keys matching `filter`: after an update that changes
    /// a matching key (a failed CAS, an out-of-range `IncrIf`, a pop on a missing list or an
    /// emulated repeat change nothing), a [`Notification`] with the new value is sent.
    /// Returns the subscription id. A disconnected receiver unsubscribes automatically.
    fn subscribe(&self, filter: KeyFilter, sink: crossbeam_channel::Sender<Notification>) -> u64;

    /// Removes a subscription (unknown ids are ignored).
    fn unsubscribe(&self, id: u64);

    /// Schedules a timer due at `at_ns` for a vertex (optionally one task); returns its id
    /// (unique, increasing).
    fn schedule_timer(
        &self,
        at_ns: u64,
        dag: u32,
        vertex: u32,
        task: Option<TaskId>,
        payload: Vec<u8>,
    ) -> u64;

    /// Cancels a pending timer; true if it was pending.
    fn cancel_timer(&self, id: u64) -> bool;

    /// Removes and returns timers due at or before `now_ns`, ordered by `(at_ns, id)`.
    fn due_timers(&self, now_ns: u64) -> Vec<Timer>;

    /// Forgets clock-log entries with `clock < watermark` (those updates can no longer be
    /// replayed; repeating one afterwards applies it again).
    fn gc_below(&self, watermark: Clock);

    /// Number of clock-log entries held (for tests/memory checks).
    fn clock_log_len(&self) -> usize;

    /// Every key/value of one DAG, with keys rendered by [`StateKey::to_stable_string`],
    /// sorted (final-state comparisons). Missing (deleted) keys are absent.
    fn snapshot(&self, dag: u32) -> BTreeMap<String, Value>;

    /// Applies all pending non-blocking updates.
    fn flush(&self) -> Result<(), StoreError>;

    /// Short backend name (e.g. `"embedded"`).
    fn backend_name(&self) -> &'static str;

    /// Updates applied and updates emulated (repeated tags) so far, when the backend
    /// counts them (the embedded store does; duplicate-update experiments read it).
    fn update_counts(&self) -> Option<(u64, u64)> {
        None
    }
}

/// True for the operations [`StateStore::execute_reads`] takes: `Get` and `LoggedGet`.
pub fn is_batch_read(op: &Op) -> bool {
    matches!(op, Op::Get | Op::LoggedGet)
}

/// The error [`StateStore::execute_reads`] gives an update that is not a read.
pub fn not_a_read(u: &Update) -> StoreError {
    StoreError::Backend(format!(
        "execute_reads takes reads only (get, logged get), got {:?} on {}",
        u.op, u.key
    ))
}
