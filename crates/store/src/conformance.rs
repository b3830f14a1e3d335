//! Backend conformance checks: generic functions that exercise a [`StateStore`] only
//! through the trait and panic (with a message) on any deviation from the documented
//! semantics. Run them from a backend's tests:
//!
//! ```
//! streamnf_store::conformance::run_all(&|| streamnf_store::EmbeddedStore::new());
//! ```
//!
//! Each check takes a fresh, empty store. [`run_all`] runs every check; [`run_untagged`]
//! runs only those that do not rely on clock logs or ownership (for [`crate::LocalStore`]).
//! All keys used live in DAG [`DAG`] (and [`OTHER_DAG`] for snapshot isolation).

use std::sync::Arc;

use crossbeam_channel::unbounded;

use crate::types::{CustomOpFn, KeyBytes, KeyFilter, Op, StateKey, StoreError, Update, UpdateTag, Value};
use crate::StateStore;

/// DAG id used by the checks.
pub const DAG: u32 = 7;
/// A second DAG id (snapshot isolation).
pub const OTHER_DAG: u32 = 8;

/// A conformance check.
pub type Check = fn(&dyn StateStore);

/// Every check, with its name.
pub const ALL: &[(&str, Check)] = &[
    ("get_set_delete", get_set_delete),
    ("incr", incr),
    ("incr_if", incr_if),
    ("push_pop", push_pop),
    ("compare_and_set", compare_and_set),
    ("type_mismatch", type_mismatch),
    ("custom_ops", custom_ops),
    ("nonblocking_then_read", nonblocking_then_read),
    ("execute_reads", execute_reads),
    ("execute_reads_logged", execute_reads_logged),
    ("callbacks", callbacks),
    ("timers", timers),
    ("snapshot", snapshot),
    ("emulation", emulation),
    ("emulation_is_per_key_and_tag", emulation_is_per_key_and_tag),
    ("ownership", ownership),
    ("failed_op_not_logged", failed_op_not_logged),
    ("get_with_tag_is_a_read", get_with_tag_is_a_read),
    ("logged_get", logged_get),
    ("gc_below", gc_below),
];

/// Names of the checks that rely on clock logs or ownership (skipped by [`run_untagged`]).
pub const TAGGED_ONLY: &[&str] = &[
    "emulation",
    "emulation_is_per_key_and_tag",
    "ownership",
    "failed_op_not_logged",
    "get_with_tag_is_a_read",
    "logged_get",
    "execute_reads_logged",
    "gc_below",
];

/// Runs every check, each on a fresh store from `make`.
pub fn run_all<S: StateStore>(make: &dyn Fn() -> S) {
    for (name, check) in ALL {
        let store = make();
        eprintln!("conformance[{}]: {name}", store.backend_name());
        check(&store);
    }
}

/// Runs the checks that do not involve clock logs or ownership (for baseline backends).
pub fn run_untagged<S: StateStore>(make: &dyn Fn() -> S) {
    for (name, check) in ALL.iter().filter(|(n, _)| !TAGGED_ONLY.contains(n)) {
        let store = make();
        eprintln!("conformance[{}]: {name}", store.backend_name());
        check(&store);
    }
}

// ---------------------------------------------------------------------------------------
// helpers

/// A shared key of DAG [`DAG`].
pub fn key(vertex: u32, object: u16, sub: &str) -> StateKey {
    StateKey::shared(DAG, vertex, object, KeyBytes::new(sub.as_bytes()))
}

struct Tagger(u64);

impl Tagger {
    fn new() -> Tagger {
        Tagger(0)
    }
    fn next(&mut self) -> UpdateTag {
        self.0 += 1;
        UpdateTag::new(self.0, 0)
    }
}

/// Executes as the key's owner (task 1 for shared keys), panicking on error.
fn exec(s: &dyn StateStore, k: StateKey, op: Op, tag: UpdateTag) -> Option<Value> {
    match s.execute(&Update::new(k, op.clone(), tag, k.owner.unwrap_or(1))) {
        Ok(v) => v,
        Err(e) => panic!("{op:?} on {k} failed: {e}"),
    }
}

fn get(s: &dyn StateStore, k: StateKey) -> Option<Value> {
    match s.get(&k) {
        Ok(v) => v,
        Err(e) => panic!("get {k} failed: {e}"),
    }
}

fn int(v: i64) -> Option<Value> {
    Some(Value::Int(v))
}

fn bytes(b: &[u8]) -> Option<Value> {
    Some(Value::Bytes(b.to_vec()))
}

fn list(items: &[&[u8]]) -> Option<Value> {
    Some(Value::List(items.iter().map(|i| i.to_vec()).collect()))
}

fn push(back: bool, item: &[u8]) -> Op {
    Op::Push { back, item: item.to_vec() }
}

fn register_append(s: &dyn StateStore) -> crate::CustomOpId {
    // "append": appends arg to a Bytes value (missing = empty); returns the new length.
    // Fails on non-bytes, and on arg "fail" after having modified the value (the change
    // must be discarded).
    let f: CustomOpFn = Arc::new(|v: &mut Option<Value>, arg: &[u8]| {
        let mut cur = match v.take() {
            None => Vec::new(),
            Some(Value::Bytes(b)) => b,
            Some(other) => {
                let name = other.type_name();
                *v = Some(other);
                return Err(StoreError::Custom(format!("append needs bytes, found {name}")));
            }
        };
        cur.extend_from_slice(arg);
        let len = cur.len() as i64;
        *v = Some(Value::Bytes(cur));
        if arg == b"fail" {
            return Err(StoreError::Custom("asked to fail".into()));
        }
        Ok(Some(Value::Int(len)))
    });
    match s.register_custom_op("append", f) {
        Ok(id) => id,
        Err(e) => panic!("register_custom_op failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Table 1

/// Get/Set/Delete: results and effects.
pub fn get_set_delete(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let k = key(1, 1, "a");
    assert_eq!(get(s, k), None, "fresh key must be missing");
    assert_eq!(exec(s, k, Op::Get, t.next()), None);
    assert_eq!(exec(s, k, Op::Set(bytes(b"x").unwrap()), t.next()), None, "Set returns None");
    assert_eq!(get(s, k), bytes(b"x"));
    assert_eq!(exec(s, k, Op::Get, t.next()), bytes(b"x"));
    assert_eq!(exec(s, k, Op::Set(Value::Int(5)), t.next()), None);
    assert_eq!(get(s, k), int(5), "Set replaces any type");
    assert_eq!(exec(s, k, Op::Delete, t.next()), int(5), "Delete returns removed value");
    assert_eq!(get(s, k), None);
    assert_eq!(exec(s, k, Op::Delete, t.next()), None, "Delete of missing returns None");
    // Different metadata = different keys.
    let k2 = StateKey { vertex: 2, ..k };
    let k3 = StateKey { object: 2, ..k };
    let k4 = StateKey { owner: Some(1), ..k };
    exec(s, k, Op::Set(Value::Int(1)), t.next());
    exec(s, k2, Op::Set(Value::Int(2)), t.next());
    exec(s, k3, Op::Set(Value::Int(3)), t.next());
    exec(s, k4, Op::Set(Value::Int(4)), t.next());
    assert_eq!([get(s, k), get(s, k2), get(s, k3), get(s, k4)], [int(1), int(2), int(3), int(4)]);
}

/// Incr: missing counts as 0, returns the new value.
pub fn incr(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let k = key(1, 1, "ctr");
    assert_eq!(exec(s, k, Op::Incr(3), t.next()), int(3));
    assert_eq!(exec(s, k, Op::Incr(-5), t.next()), int(-2));
    assert_eq!(exec(s, k, Op::Incr(0), t.next()), int(-2));
    assert_eq!(get(s, k), int(-2));
}

/// IncrIf: applied within [min, max], else returns old and changes nothing.
pub fn incr_if(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let k = key(1, 1, "bounded");
    let op = |delta, min, max| Op::IncrIf { delta, min, max };
    assert_eq!(exec(s, k, op(5, 0, 4), t.next()), int(0), "out of range on missing");
    assert_eq!(get(s, k), None, "missing key stays missing");
    assert_eq!(exec(s, k, op(3, 0, 4), t.next()), int(3));
    assert_eq!(exec(s, k, op(2, 0, 4), t.next()), int(3), "above max: not applied");
    assert_eq!(exec(s, k, op(1, 0, 4), t.next()), int(4), "== max: applied");
    assert_eq!(exec(s, k, op(-5, 0, 4), t.next()), int(4), "below min: not applied");
    assert_eq!(exec(s, k, op(-4, 0, 4), t.next()), int(0), "== min: applied");
    assert_eq!(get(s, k), int(0));
    exec(s, k, Op::Set(Value::Int(i64::MAX)), t.next());
    assert_eq!(
        exec(s, k, op(1, i64::MIN, i64::MAX), t.next()),
        int(i64::MAX),
        "overflow counts as out of range"
    );
}

/// Push/Pop at both ends; an emptied list disappears.
pub fn push_pop(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let k = key(1, 2, "q");
    assert_eq!(exec(s, k, Op::Pop { back: true }, t.next()), None, "pop missing");
    assert_eq!(exec(s, k, push(true, b"b"), t.next()), int(1));
    assert_eq!(exec(s, k, push(true, b"c"), t.next()), int(2));
    assert_eq!(exec(s, k, push(false, b"a"), t.next()), int(3));
    assert_eq!(get(s, k), list(&[b"a", b"b", b"c"]));
    assert_eq!(exec(s, k, Op::Pop { back: false }, t.next()), bytes(b"a"));
    assert_eq!(exec(s, k, Op::Pop { back: true }, t.next()), bytes(b"c"));
    assert_eq!(exec(s, k, Op::Pop { back: true }, t.next()), bytes(b"b"));
    assert_eq!(get(s, k), None, "an emptied list is removed");
    assert_eq!(exec(s, k, Op::Pop { back: false }, t.next()), None);
    // After the list vanished, the key is free for other types.
    assert_eq!(exec(s, k, Op::Incr(1), t.next()), int(1));
}

/// CompareAndSet: applies only on equality; `None` means missing / delete.
pub fn compare_and_set(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let k = key(1, 3, "cas");
    let cas = |e: Option<Value>, n: Option<Value>| Op::CompareAndSet { expected: e, new: n };
    assert_eq!(exec(s, k, cas(int(1), int(2)), t.next()), int(0), "missing != 1");
    assert_eq!(get(s, k), None);
    assert_eq!(exec(s, k, cas(None, int(1)), t.next()), int(1), "create if missing");
    assert_eq!(exec(s, k, cas(None, int(9)), t.next()), int(0));
    assert_eq!(exec(s, k, cas(int(1), bytes(b"z")), t.next()), int(1));
    assert_eq!(get(s, k), bytes(b"z"));
    assert_eq!(exec(s, k, cas(int(1), int(3)), t.next()), int(0), "type differs");
    assert_eq!(exec(s, k, cas(bytes(b"z"), None), t.next()), int(1), "delete");
    assert_eq!(get(s, k), None);
}

/// Type mismatches are errors and change nothing.
pub fn type_mismatch(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let kb = key(1, 4, "bytes");
    let ki = key(1, 4, "int");
    exec(s, kb, Op::Set(Value::Bytes(b"v".to_vec())), t.next());
    exec(s, ki, Op::Set(Value::Int(1)), t.next());
    let cases: Vec<(StateKey, Op, &str, &str)> = vec![
        (kb, Op::Incr(1), "int", "bytes"),
        (kb, Op::IncrIf { delta: 1, min: 0, max: 9 }, "int", "bytes"),
        (ki, push(true, b"x"), "list", "int"),
        (ki, Op::Pop { back: true }, "list", "int"),
    ];
    for (k, op, exp, found) in cases {
        match s.execute(&Update::new(k, op.clone(), t.next(), 1)) {
            Err(StoreError::TypeMismatch { expected, found: f, .. }) => {
                assert_eq!((expected, f), (exp, found), "{op:?}");
            }
            other => panic!("{op:?} on {k}: expected TypeMismatch, got {other:?}"),
        }
    }
    assert_eq!(get(s, kb), bytes(b"v"));
    assert_eq!(get(s, ki), int(1));
}

/// Custom ops: registration (idempotent by name), execution, errors discard changes,
/// unknown ids are refused.
pub fn custom_ops(s: &dyn StateStore) {
    let mut t = Tagger::new();
    assert_eq!(s.custom_op_id("append"), None);
    let id = register_append(s);
    assert_eq!(s.custom_op_id("append"), Some(id));
    assert_eq!(register_append(s), id, "same name, same id");
    let other: CustomOpFn = Arc::new(|_v: &mut Option<Value>, _a: &[u8]| Ok(None));
    let id2 = s.register_custom_op("noop", other).unwrap_or_else(|e| panic!("register noop: {e}"));
    assert_ne!(id, id2);
    let k = key(2, 1, "log");
    let app = |a: &[u8]| Op::Custom { op: id, arg: a.to_vec() };
    assert_eq!(exec(s, k, app(b"ab"), t.next()), int(2));
    assert_eq!(exec(s, k, app(b"c"), t.next()), int(3));
    assert_eq!(get(s, k), bytes(b"abc"));
    match s.execute(&Update::new(k, app(b"fail"), t.next(), 1)) {
        Err(StoreError::Custom(_)) => {}
        other => panic!("expected Custom error, got {other:?}"),
    }
    assert_eq!(get(s, k), bytes(b"abc"), "a failing custom op changes nothing");
    let bad = Op::Custom { op: crate::CustomOpId(u16::MAX), arg: vec![] };
    match s.execute(&Update::new(k, bad, t.next(), 1)) {
        Err(StoreError::UnknownCustomOp(n)) => assert_eq!(n, u16::MAX),
        other => panic!("expected UnknownCustomOp, got {other:?}"),
    }
}

/// Non-blocking updates are visible to any later read (same thread or another).
pub fn nonblocking_then_read(s: &dyn StateStore) {
    let k = key(3, 1, "nb");
    for c in 1..=100u64 {
        let u = Update::new(k, Op::Incr(2), UpdateTag::new(c, 0), 1);
        s.execute_nonblocking(u).unwrap_or_else(|e| panic!("execute_nonblocking: {e}"));
    }
    assert_eq!(get(s, k), int(200));
    let k2 = key(3, 1, "nb2");
    std::thread::scope(|sc| {
        sc.spawn(|| {
            for c in 1..=50u64 {
                let u = Update::new(k2, push(true, &c.to_le_bytes()), UpdateTag::new(c, 0), 2);
                s.execute_nonblocking(u).unwrap_or_else(|e| panic!("execute_nonblocking: {e}"));
            }
        });
    });
    match get(s, k2) {
        Some(Value::List(l)) => assert_eq!(l.len(), 50),
        other => panic!("expected a 50-item list, got {other:?}"),
    }
    s.flush().unwrap_or_else(|e| panic!("flush: {e}"));
    assert_eq!(get(s, k), int(200));
}

/// A batch of reads gives what one read at a time gives, in order: missing keys, values of
/// every type, per-flow keys read by their owner and by another task, non-blocking updates
/// made just before; an update in the batch is refused alone.
pub fn execute_reads(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let shared = key(4, 1, "r-int");
    let owned = StateKey::per_flow(DAG, 4, 3, 2, KeyBytes::new(b"r-flow"));
    exec(s, shared, Op::Set(Value::Int(5)), t.next());
    exec(s, owned, push(true, b"a"), t.next());
    exec(s, key(4, 1, "r-bytes"), Op::Set(Value::Bytes(b"xy".to_vec())), t.next());
    for _ in 0..10 {
        let u = Update::new(shared, Op::Incr(1), t.next(), 1);
        s.execute_nonblocking(u).unwrap_or_else(|e| panic!("execute_nonblocking: {e}"));
    }
    let read = |k: StateKey, issuer: u32| Update::new(k, Op::Get, UpdateTag::new(0, 0), issuer);
    let batch = vec![
        read(shared, 1),
        read(key(4, 1, "r-missing"), 1),
        read(owned, 3),
        read(owned, 9),
        Update::new(shared, Op::Incr(1), t.next(), 1),
        read(key(4, 1, "r-bytes"), 2),
        read(shared, 2),
    ];
    let mut out = vec![Ok(int(-1))];
    s.execute_reads(&batch, &mut out);
    assert_eq!(out.len(), batch.len() + 1, "one result per read, appended");
    let expect = [int(-1), int(15), None, list(&[b"a"]), list(&[b"a"]), None, bytes(b"xy"), int(15)];
    for (i, (got, want)) in out.iter().zip(expect.iter()).enumerate() {
        if i == 5 {
            assert!(got.is_err(), "an update in a read batch is refused, got {got:?}");
            continue;
        }
        assert_eq!(got.as_ref().ok(), Some(want), "read #{i} of the batch");
    }
    assert_eq!(get(s, shared), int(15), "the refused update changed nothing");
    let mut none = Vec::new();
    s.execute_reads(&[], &mut none);
    assert!(none.is_empty());
}

/// Logged reads in a batch: logged under their tags like `execute` logs them (asked again
/// after a change, the same value), refused for a task that does not own the key.
pub fn execute_reads_logged(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let owned = StateKey::per_flow(DAG, 4, 3, 2, KeyBytes::new(b"r-flow"));
    exec(s, owned, push(true, b"a"), t.next());
    let tag = t.next();
    let logged = |issuer: u32| Update::new(owned, Op::LoggedGet, tag, issuer);
    let plain = Update::new(owned, Op::Get, UpdateTag::new(0, 0), 3);
    let mut out = Vec::new();
    s.execute_reads(&[logged(3), plain.clone(), logged(9)], &mut out);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_ref().ok(), Some(&list(&[b"a"])));
    assert_eq!(out[1].as_ref().ok(), Some(&list(&[b"a"])));
    assert!(matches!(out[2], Err(StoreError::NotOwner { .. })), "a non-owner's logged read: {:?}", out[2]);
    exec(s, owned, push(true, b"b"), t.next());
    let mut again = Vec::new();
    s.execute_reads(&[logged(3), plain], &mut again);
    assert_eq!(again[0].as_ref().ok(), Some(&list(&[b"a"])), "a repeated logged read is emulated");
    assert_eq!(again[1].as_ref().ok(), Some(&list(&[b"a", b"b"])), "a plain read sees the change");
}

/// Subscriptions: matching changes are notified with the new value and tag; non-matching
/// keys, no-op updates and unsubscribed filters are not.
pub fn callbacks(s: &dyn StateStore) {
    let (tx, rx) = unbounded();
    let sub = s.subscribe(KeyFilter::object(DAG, 4, 1), tx);
    let (tx_all, rx_all) = unbounded();
    let sub_all = s.subscribe(KeyFilter::dag(DAG), tx_all);
    let k = key(4, 1, "watched");
    let other_obj = key(4, 2, "other");
    let other_dag = StateKey { dag: OTHER_DAG, ..k };
    exec(s, k, Op::Incr(5), UpdateTag::new(1, 0));
    exec(s, other_obj, Op::Incr(1), UpdateTag::new(2, 0));
    exec(s, other_dag, Op::Incr(1), UpdateTag::new(3, 0));
    // No change: failed CAS, Get.
    let cas = Op::CompareAndSet { expected: int(99), new: int(0) };
    exec(s, k, cas, UpdateTag::new(4, 0));
    exec(s, k, Op::Get, UpdateTag::new(5, 0));
    exec(s, k, Op::Delete, UpdateTag::new(6, 0));
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 2, "notifications: {got:?}");
    assert_eq!((got[0].key, &got[0].value, got[0].tag), (k, &int(5), UpdateTag::new(1, 0)));
    assert_eq!((got[1].key, &got[1].value, got[1].tag), (k, &None, UpdateTag::new(6, 0)));
    let all: Vec<_> = rx_all.try_iter().map(|n| n.key).collect();
    assert_eq!(all, vec![k, other_obj, k], "DAG-wide filter");
    s.unsubscribe(sub);
    exec(s, k, Op::Incr(1), UpdateTag::new(7, 0));
    assert_eq!(rx.try_iter().count(), 0, "unsubscribed");
    assert_eq!(rx_all.try_iter().count(), 1);
    // A dropped receiver must not break updates.
    drop(rx_all);
    exec(s, k, Op::Incr(1), UpdateTag::new(8, 0));
    exec(s, k, Op::Incr(1), UpdateTag::new(9, 0));
    s.unsubscribe(sub_all);
    assert_eq!(get(s, k), int(3));
}

/// Timers: due ones are returned once, ordered by (at_ns, id); cancel works.
pub fn timers(s: &dyn StateStore) {
    let a = s.schedule_timer(300, DAG, 1, None, b"a".to_vec());
    let b = s.schedule_timer(100, DAG, 1, Some(3), b"b".to_vec());
    let c = s.schedule_timer(100, DAG, 2, None, b"c".to_vec());
    let d = s.schedule_timer(200, DAG, 1, None, b"d".to_vec());
    let e = s.schedule_timer(400, DAG, 1, None, b"e".to_vec());
    assert!(b < c, "timer ids increase");
    assert!(s.due_timers(99).is_empty());
    assert!(s.cancel_timer(d));
    assert!(!s.cancel_timer(d), "second cancel");
    let due = s.due_timers(300);
    let ids: Vec<u64> = due.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![b, c, a]);
    assert_eq!(due[0].task, Some(3));
    assert_eq!(due[0].payload, b"b".to_vec());
    assert_eq!((due[1].dag, due[1].vertex, due[1].at_ns), (DAG, 2, 100));
    assert!(s.due_timers(300).is_empty(), "due timers are removed");
    assert_eq!(s.due_timers(u64::MAX).iter().map(|t| t.id).collect::<Vec<_>>(), vec![e]);
    assert!(!s.cancel_timer(e), "fired timers cannot be cancelled");
}

/// Snapshot: one DAG only, stable rendered keys, deleted keys absent.
pub fn snapshot(s: &dyn StateStore) {
    let mut t = Tagger::new();
    let k1 = key(1, 1, "x");
    let k2 = StateKey::per_flow(DAG, 2, 5, 3, KeyBytes::new(&[0xab, 0x01]));
    let gone = key(1, 1, "gone");
    let other = StateKey { dag: OTHER_DAG, ..k1 };
    exec(s, k1, Op::Incr(4), t.next());
    exec(s, k2, push(true, b"p"), t.next());
    exec(s, gone, Op::Incr(1), t.next());
    exec(s, gone, Op::Delete, t.next());
    exec(s, other, Op::Incr(1), t.next());
    let snap = s.snapshot(DAG);
    let keys: Vec<&String> = snap.keys().collect();
    assert_eq!(keys, vec!["7/1/*/1/78", "7/2/5/3/ab01"]);
    assert_eq!(k1.to_stable_string(), "7/1/*/1/78");
    assert_eq!(snap.get("7/1/*/1/78"), int(4).as_ref());
    assert_eq!(snap.get("7/2/5/3/ab01"), list(&[b"p"]).as_ref());
    assert_eq!(s.snapshot(OTHER_DAG).len(), 1);
    assert!(s.snapshot(999).is_empty());
}

// ---------------------------------------------------------------------------------------
// Clock logs and ownership

/// Repeating an update with the same tag returns the logged result and changes nothing,
/// for every kind of update.
pub fn emulation(s: &dyn StateStore) {
    let id = register_append(s);
    let k = |sub: &str| key(5, 1, sub);
    let t = |c| UpdateTag::new(c, 0);
    let cas = Op::CompareAndSet { expected: None, new: int(1) };
    let script: Vec<(StateKey, Op)> = vec![
        (k("i"), Op::Incr(5)),
        (k("i"), Op::IncrIf { delta: 10, min: 0, max: 100 }),
        (k("s"), Op::Set(Value::Bytes(b"v1".to_vec()))),
        (k("l"), push(true, b"a")),
        (k("l"), push(false, b"b")),
        (k("l"), Op::Pop { back: true }),
        (k("c"), cas),
        (k("u"), Op::Custom { op: id, arg: b"xy".to_vec() }),
        (k("d"), Op::Set(Value::Int(9))),
        (k("d"), Op::Delete),
        (k("e"), Op::Pop { back: true }),
    ];
    let mut first = Vec::new();
    for (c, (key, op)) in script.iter().enumerate() {
        first.push(exec(s, *key, op.clone(), t(c as u64 + 1)));
    }
    let before = s.snapshot(DAG);
    // Something pushed onto the previously empty list "e" must not be popped by a replay.
    exec(s, k("e"), push(true, b"late"), t(100));
    let mid = s.snapshot(DAG);
    for _round in 0..2 {
        for (c, (key, op)) in script.iter().enumerate().rev() {
            let again = exec(s, *key, op.clone(), t(c as u64 + 1));
            assert_eq!(again, first[c], "repeat of {op:?} (clock {}) on {key}", c + 1);
        }
        assert_eq!(s.snapshot(DAG), mid, "repeats must not change state");
    }
    assert_ne!(before, mid);
    assert_eq!(first[0], int(5));
    assert_eq!(first[1], int(15));
    assert_eq!(first[5], bytes(b"a"));
    assert_eq!(first[6], int(1));
    assert_eq!(first[9], int(9));
    assert_eq!(first[10], None);
}

/// Emulation is keyed by (key, tag): another seq of the same clock, or the same tag on
/// another key, is a new update; the issuer does not matter.
pub fn emulation_is_per_key_and_tag(s: &dyn StateStore) {
    let a = key(5, 2, "a");
    let b = key(5, 2, "b");
    let tag = UpdateTag::new(10, 0);
    assert_eq!(exec(s, a, Op::Incr(1), tag), int(1));
    assert_eq!(exec(s, a, Op::Incr(1), UpdateTag::new(10, 1)), int(2), "other seq");
    assert_eq!(exec(s, b, Op::Incr(1), tag), int(1), "other key");
    // Same tag from another issuer (e.g. a clone of a straggler) is emulated.
    let r = s.execute(&Update::new(a, Op::Incr(1), tag, 42));
    assert_eq!(r, Ok(int(1)));
    // Out-of-order tags: older, never-seen tags are applied; seen ones emulated.
    assert_eq!(exec(s, a, Op::Incr(1), UpdateTag::new(5, 0)), int(3));
    assert_eq!(exec(s, a, Op::Incr(1), UpdateTag::new(7, 3)), int(4));
    assert_eq!(exec(s, a, Op::Incr(1), UpdateTag::new(5, 0)), int(3));
    assert_eq!(exec(s, a, Op::Incr(1), UpdateTag::new(10, 1)), int(2));
    assert_eq!(get(s, a), int(4));
}

/// Only the owner task may update a per-flow key; anyone may read; refusals change nothing
/// and are not logged.
pub fn ownership(s: &dyn StateStore) {
    let k = StateKey::per_flow(DAG, 6, 3, 1, KeyBytes::new(b"flow"));
    let tag = UpdateTag::new(1, 0);
    match s.execute(&Update::new(k, Op::Incr(1), tag, 4)) {
        Err(StoreError::NotOwner { owner, issuer, key }) => {
            assert_eq!((owner, issuer), (3, 4));
            assert_eq!(key, k.to_string());
        }
        other => panic!("expected NotOwner, got {other:?}"),
    }
    assert_eq!(get(s, k), None, "refused update changed nothing");
    // Same tag by the owner is applied (the refusal was not logged).
    assert_eq!(s.execute(&Update::new(k, Op::Incr(1), tag, 3)), Ok(int(1)));
    // Anyone may read, with or without a tag.
    assert_eq!(s.execute(&Update::new(k, Op::Get, UpdateTag::new(2, 0), 9)), Ok(int(1)));
    assert_eq!(get(s, k), int(1));
    // Shared keys accept any issuer.
    let sh = key(6, 1, "shared");
    for issuer in 0..4 {
        let u = Update::new(sh, Op::Incr(1), UpdateTag::new(1, issuer), issuer);
        assert_eq!(s.execute(&u), Ok(int(i64::from(issuer) + 1)));
    }
    // Non-blocking refusals are reported too.
    assert!(matches!(
        s.execute_nonblocking(Update::new(k, Op::Delete, UpdateTag::new(3, 0), 0)),
        Err(StoreError::NotOwner { .. })
    ));
    assert_eq!(get(s, k), int(1));
}

/// LoggedGet: reads like Get and changes nothing, but its result is logged under its tag:
/// a repeat of the tag reads what the first read did, after the key changed or vanished;
/// a non-blocking one is a no-op that still logs; per-flow keys refuse other issuers.
pub fn logged_get(s: &dyn StateStore) {
    let k = key(6, 2, "read");
    let t = |c| UpdateTag::new(c, 0);
    assert_eq!(exec(s, k, Op::LoggedGet, t(1)), None, "missing key");
    exec(s, k, Op::Set(bytes(b"v1").unwrap()), t(2));
    assert_eq!(exec(s, k, Op::LoggedGet, t(3)), bytes(b"v1"));
    assert_eq!(get(s, k), bytes(b"v1"), "a logged read changes nothing");
    exec(s, k, Op::Set(Value::Int(7)), t(4));
    let nb = Update::new(k, Op::LoggedGet, t(5), 1);
    if let Err(e) = s.execute_nonblocking(nb) {
        panic!("non-blocking logged read failed: {e}");
    }
    exec(s, k, Op::Delete, t(6));
    // Repeats read the logged values, not the current (missing) one.
    assert_eq!(exec(s, k, Op::LoggedGet, t(3)), bytes(b"v1"), "repeat after change");
    assert_eq!(exec(s, k, Op::LoggedGet, t(1)), None, "repeat of a read of a missing key");
    assert_eq!(exec(s, k, Op::LoggedGet, t(5)), int(7), "repeat of a non-blocking read");
    assert_eq!(get(s, k), None, "repeats change nothing");
    // A fresh tag reads the current value.
    assert_eq!(exec(s, k, Op::LoggedGet, t(7)), None);
    let f = StateKey::per_flow(DAG, 6, 3, 2, KeyBytes::new(b"flow"));
    exec(s, f, Op::Set(Value::Int(3)), t(8));
    match s.execute(&Update::new(f, Op::LoggedGet, t(9), 4)) {
        Err(StoreError::NotOwner { owner, issuer, .. }) => assert_eq!((owner, issuer), (3, 4)),
        other => panic!("a logged read of a per-flow key by another task: expected NotOwner, got {other:?}"),
    }
    assert_eq!(exec(s, f, Op::LoggedGet, t(9)), int(3), "the refusal was not logged");
}

/// A failed update is not logged: repeating its tag once it can succeed applies it.
pub fn failed_op_not_logged(s: &dyn StateStore) {
    let k = key(6, 2, "f");
    exec(s, k, Op::Set(Value::Bytes(b"b".to_vec())), UpdateTag::new(1, 0));
    let tag = UpdateTag::new(2, 0);
    let r = s.execute(&Update::new(k, Op::Incr(1), tag, 1));
    assert!(matches!(r, Err(StoreError::TypeMismatch { .. })), "{r:?}");
    exec(s, k, Op::Set(Value::Int(10)), UpdateTag::new(3, 0));
    assert_eq!(exec(s, k, Op::Incr(1), tag), int(11));
    assert_eq!(exec(s, k, Op::Incr(1), tag), int(11), "now logged");
}

/// A `Get` carrying a tag is a plain read and is not logged.
pub fn get_with_tag_is_a_read(s: &dyn StateStore) {
    let k = key(6, 3, "g");
    let tag = UpdateTag::new(1, 0);
    assert_eq!(exec(s, k, Op::Get, tag), None);
    assert_eq!(s.clock_log_len(), 0);
    // The same tag is still fresh for an update.
    assert_eq!(exec(s, k, Op::Incr(2), tag), int(2));
    assert_eq!(exec(s, k, Op::Get, tag), int(2));
    exec(s, k, Op::Incr(3), UpdateTag::new(2, 0));
    assert_eq!(exec(s, k, Op::Get, tag), int(5), "Get is never emulated");
    assert_eq!(s.clock_log_len(), 2);
}

/// `gc_below(w)` drops log entries with clock < w; afterwards a repeated old tag is applied
/// again (it can no longer be recognised).
pub fn gc_below(s: &dyn StateStore) {
    let a = key(7, 1, "a");
    let b = key(7, 1, "b");
    for c in 1..=10u64 {
        exec(s, a, Op::Incr(1), UpdateTag::new(c, 0));
        exec(s, b, Op::Incr(1), UpdateTag::new(c, 1));
    }
    exec(s, b, Op::Delete, UpdateTag::new(11, 0));
    assert_eq!(s.clock_log_len(), 21);
    s.gc_below(6);
    assert_eq!(s.clock_log_len(), 11, "clocks 6..=10 for a and b, 11 for b");
    assert_eq!(exec(s, a, Op::Incr(1), UpdateTag::new(7, 0)), int(7), "still emulated");
    assert_eq!(exec(s, a, Op::Incr(1), UpdateTag::new(3, 0)), int(11), "forgotten: applied");
    assert_eq!(s.clock_log_len(), 12);
    s.gc_below(u64::MAX);
    assert_eq!(s.clock_log_len(), 0);
    assert_eq!(get(s, a), int(11), "GC keeps values");
    assert_eq!(get(s, b), None);
    assert_eq!(s.snapshot(DAG).len(), 1);
}
