//! Property tests: no lost update, no doubled update, and agreement with a simple model.

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::prelude::*;
use streamnf_store::{
    EmbeddedStore, KeyBytes, Op, StateKey, StateStore, StoreError, Update, UpdateTag, Value,
};

const DAG: u32 = 3;

fn keys() -> Vec<StateKey> {
    vec![
        StateKey::shared(DAG, 1, 1, KeyBytes::new(b"a")),
        StateKey::shared(DAG, 1, 1, KeyBytes::new(b"b")),
        StateKey::shared(DAG, 2, 1, KeyBytes::EMPTY),
        // Per-flow key owned by task 1 (issuer 2 is refused).
        StateKey::per_flow(DAG, 1, 1, 2, KeyBytes::new(b"flow")),
    ]
}

fn small_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..3).prop_map(Value::Int),
        (0u8..2).prop_map(|b| Value::Bytes(vec![b])),
        (0u8..2).prop_map(|b| Value::List(VecDeque::from(vec![vec![b]]))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Get),
        Just(Op::LoggedGet),
        small_value().prop_map(Op::Set),
        Just(Op::Delete),
        (-3i64..4).prop_map(Op::Incr),
        (-3i64..4, -2i64..1, 0i64..5).prop_map(|(delta, min, max)| Op::IncrIf { delta, min, max }),
        (any::<bool>(), 0u8..3).prop_map(|(back, b)| Op::Push { back, item: vec![b] }),
        any::<bool>().prop_map(|back| Op::Pop { back }),
        (proptest::option::of(small_value()), proptest::option::of(small_value()))
            .prop_map(|(expected, new)| Op::CompareAndSet { expected, new }),
    ]
}

/// (key index, op, clock, seq, issuer)
fn update(max_clock: u64) -> impl Strategy<Value = Update> {
    (0usize..4, op(), 1..=max_clock, 0u32..2, 1u32..3).prop_map(|(k, op, clock, seq, issuer)| {
        Update::new(keys()[k], op, UpdateTag::new(clock, seq), issuer)
    })
}

fn kind(r: &Result<Option<Value>, StoreError>) -> Result<Option<Value>, &'static str> {
    match r {
        Ok(v) => Ok(v.clone()),
        Err(StoreError::NotOwner { .. }) => Err("not-owner"),
        Err(StoreError::TypeMismatch { .. }) => Err("type"),
        Err(_) => Err("other"),
    }
}

/// Independent model of the documented semantics.
#[derive(Default)]
struct Model {
    vals: HashMap<StateKey, Value>,
    log: HashMap<(StateKey, UpdateTag), Option<Value>>,
}

impl Model {
    fn exec(&mut self, u: &Update) -> Result<Option<Value>, &'static str> {
        let k = u.key;
        if u.op == Op::Get {
            return Ok(self.vals.get(&k).cloned());
        }
        if matches!(k.owner, Some(o) if o != u.issuer) {
            return Err("not-owner");
        }
        if let Some(r) = self.log.get(&(k, u.tag)) {
            return Ok(r.clone());
        }
        let cur = self.vals.get(&k).cloned();
        let int_of = |c: &Option<Value>| match c {
            None => Ok(0),
            Some(Value::Int(x)) => Ok(*x),
            Some(_) => Err("type"),
        };
        let list_of = |c: &Option<Value>| match c {
            None => Ok(VecDeque::new()),
            Some(Value::List(l)) => Ok(l.clone()),
            Some(_) => Err("type"),
        };
        let (res, new): (Option<Value>, Option<Value>) = match &u.op {
            Op::Get => unreachable!(),
            Op::LoggedGet => (cur.clone(), cur.clone()),
            Op::Set(v) => (None, Some(v.clone())),
            Op::Delete => (cur.clone(), None),
            Op::Incr(d) => {
                let n = int_of(&cur)?.wrapping_add(*d);
                (Some(Value::Int(n)), Some(Value::Int(n)))
            }
            Op::IncrIf { delta, min, max } => {
                let old = int_of(&cur)?;
                match old.checked_add(*delta) {
                    Some(n) if *min <= n && n <= *max => (Some(Value::Int(n)), Some(Value::Int(n))),
                    _ => (Some(Value::Int(old)), cur.clone()),
                }
            }
            Op::Push { back, item } => {
                let mut l = list_of(&cur)?;
                if *back {
                    l.push_back(item.clone())
                } else {
                    l.push_front(item.clone())
                }
                (Some(Value::Int(l.len() as i64)), Some(Value::List(l)))
            }
            Op::Pop { back } => {
                let mut l = list_of(&cur)?;
                let item = if *back { l.pop_back() } else { l.pop_front() };
                let new = if l.is_empty() { None } else { Some(Value::List(l)) };
                (item.map(Value::Bytes), new)
            }
            Op::CompareAndSet { expected, new } => {
                if &cur == expected {
                    (Some(Value::Int(1)), new.clone())
                } else {
                    (Some(Value::Int(0)), cur.clone())
                }
            }
            Op::Custom { .. } => return Err("other"),
        };
        match new {
            Some(v) => self.vals.insert(k, v),
            None => self.vals.remove(&k),
        };
        self.log.insert((k, u.tag), res.clone());
        Ok(res)
    }

    fn snapshot(&self) -> BTreeMap<String, Value> {
        self.vals.iter().map(|(k, v)| (k.to_stable_string(), v.clone())).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// (a) Concurrent Incr from 2-4 threads on shared keys: final value == sum of deltas.
    #[test]
    fn no_lost_update(per_thread in prop::collection::vec(
        prop::collection::vec((0usize..3, -100i64..100), 1..300), 2..=4)) {
        let store = EmbeddedStore::with_shards(2);
        let ks = keys();
        std::thread::scope(|s| {
            for (t, ops) in per_thread.iter().enumerate() {
                let (store, ks) = (&store, &ks);
                s.spawn(move || {
                    for (i, (k, d)) in ops.iter().enumerate() {
                        let u = Update::new(ks[*k], Op::Incr(*d), UpdateTag::new(i as u64 + 1, t as u32), t as u32);
                        store.execute(&u).expect("incr");
                    }
                });
            }
        });
        for (k, key) in ks.iter().enumerate().take(3) {
            let sum: i64 = per_thread.iter().flatten().filter(|(i, _)| *i == k).map(|(_, d)| d).sum();
            let touched = per_thread.iter().flatten().any(|(i, _)| *i == k);
            let got = store.get(key).expect("get");
            prop_assert_eq!(got, touched.then_some(Value::Int(sum)));
        }
    }

    /// (b) Re-applying a random subset of successful updates with the same tags, in random
    /// order, returns the same results and leaves the state unchanged.
    #[test]
    fn no_doubled_update(
        ops in prop::collection::vec((0usize..4, op(), 1u32..3), 1..60),
        pick in prop::collection::vec(any::<bool>(), 60),
        seed in any::<u64>(),
    ) {
        let store = EmbeddedStore::new();
        let ks = keys();
        let updates: Vec<Update> = ops.iter().enumerate()
            .map(|(i, (k, op, issuer))| Update::new(ks[*k], op.clone(), UpdateTag::new(i as u64 + 1, 0), *issuer))
            .collect();
        let first: Vec<_> = updates.iter().map(|u| kind(&store.execute(u))).collect();
        let state = store.snapshot(DAG);
        let mut again: Vec<usize> = (0..updates.len())
            .filter(|&i| pick[i] && first[i].is_ok() && updates[i].op != Op::Get)
            .collect();
        // Deterministic shuffle from the seed.
        let mut x = seed | 1;
        for i in (1..again.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            again.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for i in again {
            let r = kind(&store.execute(&updates[i]));
            prop_assert_eq!(&r, &first[i], "repeat of #{} {:?}", i, updates[i]);
        }
        prop_assert_eq!(store.snapshot(DAG), state);
    }

    /// (c) Random ops with colliding tags (so repeats and out-of-order tags happen) give the
    /// same results and final state as a simple model.
    #[test]
    fn matches_model(updates in prop::collection::vec(update(12), 1..120)) {
        let store = EmbeddedStore::with_shards(4);
        let mut model = Model::default();
        for u in &updates {
            let got = kind(&store.execute(u));
            let want = model.exec(u);
            prop_assert_eq!(got, want, "{:?}", u);
        }
        prop_assert_eq!(store.snapshot(DAG), model.snapshot());
        prop_assert_eq!(store.clock_log_len(), model.log.len());
        // GC half the clocks, then replay everything: forgotten tags apply again.
        store.gc_below(7);
        model.log.retain(|(_, t), _| t.clock >= 7);
        prop_assert_eq!(store.clock_log_len(), model.log.len());
        for u in &updates {
            let got = kind(&store.execute(u));
            let want = model.exec(u);
            prop_assert_eq!(got, want, "after gc: {:?}", u);
        }
        prop_assert_eq!(store.snapshot(DAG), model.snapshot());
    }
}

#[test]
fn key_bytes_fold_and_order() {
    let long = [7u8; 100];
    let k = KeyBytes::new(&long);
    assert!(k.is_folded());
    assert_eq!(k.as_bytes().len(), 48);
    assert!(KeyBytes::try_new(&long).is_none());
    assert_ne!(k, KeyBytes::new(&long[..48]));
    assert_ne!(k, KeyBytes::new(&[7u8; 99]));
    assert!(KeyBytes::new(b"a") < KeyBytes::new(b"a\0"));
    assert!(KeyBytes::new(b"ab") < KeyBytes::new(b"b"));
    assert_eq!(KeyBytes::new(b"").as_bytes(), KeyBytes::EMPTY.as_bytes());
    let sk = StateKey::shared(1, 2, 3, KeyBytes::new(&[0xde, 0xad]));
    assert_eq!(sk.to_string(), "1/2/*/3/dead");
    let json = serde_json::to_string(&Value::List(VecDeque::from(vec![vec![1u8]]))).expect("json");
    let back: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(back, Value::List(VecDeque::from(vec![vec![1u8]])));
}
