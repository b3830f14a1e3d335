//! Concurrency: no lost updates on one hot key, and duplicate suppression when an original
//! task and its clone race with the same tags.

use std::sync::Arc;

use streamnf_store::{EmbeddedStore, KeyBytes, Op, StateKey, StateStore, Update, UpdateTag, Value};

const N: u64 = 100_000;

fn hot_key() -> StateKey {
    StateKey::shared(1, 1, 1, KeyBytes::new(b"hot"))
}

fn hammer(store: &dyn StateStore, threads: u32) {
    let k = hot_key();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for c in 1..=N {
                    let u = Update::new(k, Op::Incr(1), UpdateTag::new(c, t), t);
                    store.execute(&u).expect("incr");
                }
            });
        }
    });
    assert_eq!(store.get(&k), Ok(Some(Value::Int(i64::from(threads) * N as i64))));
}

#[test]
fn two_threads_one_key_lose_nothing() {
    hammer(&EmbeddedStore::new(), 2);
}

#[test]
fn four_threads_one_key_single_shard_lose_nothing() {
    hammer(&EmbeddedStore::with_shards(1), 4);
}

#[test]
fn racing_clones_apply_each_tag_once() {
    // An original and a clone process the same packets (same tags) concurrently; GC runs
    // concurrently below a watermark neither of them will replay.
    let store = Arc::new(EmbeddedStore::new());
    let keys: Vec<StateKey> = (0..8u64).map(|i| StateKey::shared(1, 2, 1, KeyBytes::from_u64(i))).collect();
    std::thread::scope(|s| {
        for task in 0..2u32 {
            let (store, keys) = (&store, &keys);
            s.spawn(move || {
                for c in 1..=N {
                    let k = keys[(c % 8) as usize];
                    let u = Update::new(k, Op::Incr(1), UpdateTag::new(c, 0), task);
                    store.execute(&u).expect("incr");
                }
            });
        }
    });
    let total: i64 =
        keys.iter().map(|k| store.get(k).ok().flatten().and_then(|v| v.as_int()).unwrap_or(0)).sum();
    assert_eq!(total, N as i64);
    store.gc_below(u64::MAX);
    assert_eq!(store.clock_log_len(), 0);
}

#[test]
fn nonblocking_from_many_threads_visible_after_join() {
    let store = EmbeddedStore::new();
    let k = hot_key();
    std::thread::scope(|s| {
        for t in 0..3u32 {
            let store = &store;
            s.spawn(move || {
                for c in 1..=10_000u64 {
                    let u = Update::new(k, Op::Incr(1), UpdateTag::new(c, t), t);
                    store.execute_nonblocking(u).expect("nb");
                }
            });
        }
    });
    assert_eq!(store.get(&k), Ok(Some(Value::Int(30_000))));
}
