//! Prefetched reads of asynchronous NFs (paper appendix, "Asynchronous processing"; see
//! [`streamnf_dag::ProcessingMode::Asynchronous`]).
//!
//! What this module owns: collecting the reads an asynchronous NF names for a batch of
//! packets ([`Prefetcher`]), fetching them from the store one batch per round (a round's
//! reads may depend on what earlier rounds fetched), and the values that
//! arrived ([`Prefetched`]), which the task's [`crate::context::TaskContext`] serves reads
//! from until the batch ends or the task updates the key.
//!
//! With logged reads (fault tolerance) it fetches only the per-flow keys an NF names
//! ([`declared_keys`]), as logged reads under the tags the task's context gives those reads
//! ([`crate::callbacks::DECLARED_READ_SEQ`]), so a replay or a clone reads the same values
//! whether or not its batch was prefetched.
//!
//! What it must never do: serve a value after the task updated its key (the context
//! invalidates it first), outlive the batch (or round) it was fetched for (the engine ends
//! it), or put an unlogged value where a logged read is expected.

use std::cell::{Cell, RefCell};

use rustc_hash::{FxHashMap, FxHashSet};
use streamnf_dag::{NetworkFunction, ReadSet};
use streamnf_packet::Packet;
use streamnf_store::{Op, StateKey, StateStore, StoreError, TaskId, Update, UpdateTag, Value};

use crate::callbacks::{first_input_seq, DECLARED_READS_MAX, DECLARED_READ_SEQ};
use crate::context::state_key;

/// Values fetched ahead for one batch of packets at one task.
#[derive(Default)]
pub struct Prefetched {
    values: RefCell<FxHashMap<StateKey, Option<Value>>>,
    hits: Cell<u64>,
}

impl Prefetched {
    /// The fetched value of `key` (`Some(None)`: fetched, missing in the store), counted as a
    /// hit; `None` when it was not fetched or was invalidated.
    pub fn serve(&self, key: &StateKey) -> Option<Option<Value>> {
        let values = self.values.borrow();
        if values.is_empty() {
            return None;
        }
        let v = values.get(key).cloned();
        if v.is_some() {
            self.hits.set(self.hits.get() + 1);
        }
        v
    }

    /// Forgets the fetched value of `key`: the task is updating it.
    pub fn invalidate(&self, key: &StateKey) {
        let mut values = self.values.borrow_mut();
        if !values.is_empty() {
            values.remove(key);
        }
    }

    /// The batch is over: forgets every fetched value and returns the reads served since
    /// the last call.
    pub fn end_batch(&self) -> u64 {
        let mut values = self.values.borrow_mut();
        if !values.is_empty() {
            values.clear();
        }
        self.hits.replace(0)
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.values.borrow().len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.values.borrow().is_empty()
    }
}

/// Where the packets of a batch run: what a state key needs besides the NF's object and key.
#[derive(Clone, Copy)]
pub struct PrefetchSite<'a> {
    /// DAG id (store namespace).
    pub dag_id: u32,
    /// Vertex index.
    pub vertex: u32,
    /// The task running the batch (issuer of shared reads).
    pub slot: TaskId,
    /// Per state object: true when per-flow.
    pub per_flow: &'a [bool],
}

/// One packet of a batch as the prefetch sees it: input port, owning flow partition, packet.
pub type BatchPacket<'p> = (usize, TaskId, &'p Packet);

/// With logged reads (fault tolerance): the per-flow keys `nf` names for `pkt` in its first
/// round, distinct, in naming order, at most [`DECLARED_READS_MAX`], into `out` (cleared
/// first). The `i`-th key's first read by the input is logged under a tag of its own (see
/// [`crate::callbacks::DECLARED_READ_SEQ`]), so a replay reads it under the same tag however
/// the batches fall. Shared keys are left out: other instances update them, and only per-flow
/// keys are sure to hold, when the input runs, what was fetched before it.
pub fn declared_keys(
    nf: &dyn NetworkFunction,
    site: &PrefetchSite<'_>,
    port: usize,
    part: TaskId,
    pkt: &Packet,
    out: &mut Vec<StateKey>,
) {
    out.clear();
    let mut names = ReadSet::new();
    nf.prefetch(port, pkt, &mut names);
    for (object, key) in names.reads() {
        let Ok(key) = state_key(site.dag_id, site.vertex, part, site.per_flow, *object, key) else {
            continue;
        };
        if key.owner.is_some() && !out.contains(&key) && out.len() < DECLARED_READS_MAX {
            out.push(key);
        }
    }
}

/// Collects the reads of a batch of packets and fetches them, one store call per round.
#[derive(Default)]
pub struct Prefetcher {
    reads: Vec<Update>,
    seen: FxHashSet<StateKey>,
    results: Vec<Result<Option<Value>, StoreError>>,
}

impl Prefetcher {
    /// Asks `nf` for the reads of every packet of `batch` and fetches them from `store` into
    /// `into`, in up to [`ReadSet::MAX_ROUNDS`] rounds (a later round names the reads that
    /// depend on values fetched before; a key is fetched once). Returns the reads fetched.
    /// Reads that fail are left out: the NF's own read meets the error.
    pub fn run(
        &mut self,
        nf: &dyn NetworkFunction,
        site: &PrefetchSite<'_>,
        batch: &[BatchPacket<'_>],
        store: &dyn StateStore,
        into: &Prefetched,
    ) -> u64 {
        let mut fetched = 0;
        for round in 0..ReadSet::MAX_ROUNDS {
            for &(port, part, pkt) in batch {
                let key_of = |object: usize, key: &[u8]| {
                    state_key(site.dag_id, site.vertex, part, site.per_flow, object, key).ok()
                };
                let lookup = |object: usize, key: &[u8]| {
                    key_of(object, key).and_then(|k| into.values.borrow().get(&k).cloned())
                };
                let mut names = if round == 0 { ReadSet::new() } else { ReadSet::with_fetched(&lookup) };
                nf.prefetch(port, pkt, &mut names);
                for (object, key) in names.reads() {
                    // An undeclared object is skipped: the NF's own read reports it.
                    let Some(key) = key_of(*object, key) else { continue };
                    if self.seen.insert(key) {
                        let issuer = if key.owner.is_some() { part } else { site.slot };
                        self.reads.push(Update::new(key, Op::Get, UpdateTag::new(0, 0), issuer));
                    }
                }
            }
            if self.reads.is_empty() {
                break;
            }
            fetched += self.fetch(store, into);
        }
        self.seen.clear();
        fetched
    }

    /// With logged reads (fault tolerance): fetches the declared keys ([`declared_keys`]) of
    /// every packet of `batch` in one store call, each as a logged read under its declared
    /// tag, into `into`. The caller makes sure that no two packets of `batch` share a flow
    /// partition and that each is the first input of its partition at its clock (see
    /// [`crate::callbacks::MessageSeq::is_first`]). Returns the reads fetched.
    pub fn run_logged(
        &mut self,
        nf: &dyn NetworkFunction,
        site: &PrefetchSite<'_>,
        batch: &[(usize, TaskId, u64, &Packet)],
        store: &dyn StateStore,
        into: &Prefetched,
    ) -> u64 {
        let mut keys = Vec::new();
        for &(port, part, clock, pkt) in batch {
            declared_keys(nf, site, port, part, pkt, &mut keys);
            let first = first_input_seq(part as u16);
            for (i, key) in keys.iter().enumerate() {
                let tag = UpdateTag::new(clock, first + DECLARED_READ_SEQ + i as u32);
                self.reads.push(Update::new(*key, Op::LoggedGet, tag, part));
            }
        }
        if self.reads.is_empty() {
            return 0;
        }
        self.fetch(store, into)
    }

    /// Fetches the collected reads in one store call into `into`; returns how many arrived.
    fn fetch(&mut self, store: &dyn StateStore, into: &Prefetched) -> u64 {
        self.results.clear();
        store.execute_reads(&self.reads, &mut self.results);
        let mut values = into.values.borrow_mut();
        let mut n = 0;
        for (u, r) in self.reads.drain(..).zip(self.results.drain(..)) {
            if let Ok(v) = r {
                values.insert(u.key, v);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamnf_store::{EmbeddedStore, KeyBytes};

    #[test]
    fn served_until_invalidated_or_cleared() {
        let p = Prefetched::default();
        let k = StateKey::shared(1, 2, 0, KeyBytes::new(b"k"));
        let other = StateKey::shared(1, 2, 0, KeyBytes::new(b"o"));
        p.values.borrow_mut().insert(k, Some(Value::Int(3)));
        p.values.borrow_mut().insert(other, None);
        assert_eq!(p.serve(&k), Some(Some(Value::Int(3))));
        assert_eq!(p.serve(&other), Some(None), "fetched and missing is an answer too");
        p.invalidate(&k);
        assert_eq!(p.serve(&k), None);
        assert_eq!(p.end_batch(), 2);
        assert_eq!(p.serve(&other), None);
        assert!(p.is_empty());
        assert_eq!(p.end_batch(), 0, "hits are counted once");
    }

    #[test]
    fn fetch_reads_each_key_once_through_the_store() {
        let store = EmbeddedStore::new();
        let k = StateKey::per_flow(1, 2, 5, 0, KeyBytes::new(b"flow"));
        let u = Update::new(k, Op::Set(Value::Int(9)), UpdateTag::new(1, 0), 5);
        assert!(store.execute(&u).is_ok());
        let mut f = Prefetcher::default();
        f.reads.push(Update::new(k, Op::Get, UpdateTag::new(0, 0), 5));
        let shared = StateKey::shared(1, 2, 1, KeyBytes::new(b"none"));
        f.reads.push(Update::new(shared, Op::Get, UpdateTag::new(0, 0), 0));
        let p = Prefetched::default();
        assert_eq!(f.fetch(&store, &p), 2);
        assert!(f.reads.is_empty());
        assert_eq!(p.serve(&k), Some(Some(Value::Int(9))));
        assert_eq!(p.serve(&shared), Some(None));
    }
}
