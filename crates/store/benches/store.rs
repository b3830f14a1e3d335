//! Criterion benchmarks of the embedded store (and the local baseline): single-op latency
//! for incr/get/set/cas on 10k existing shared keys, and a 1- vs 2-thread Incr throughput
//! group.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use streamnf_store::bench::{gc_interval, incr_throughput, populate};
use streamnf_store::{EmbeddedStore, LocalStore, Op, StateStore, Update, UpdateTag, Value};

const KEYS: u32 = 10_000;

fn xorshift(s: &mut u64) -> usize {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s % u64::from(KEYS)) as usize
}

fn single_thread(c: &mut Criterion) {
    let stores: Vec<Box<dyn StateStore>> = vec![Box::new(EmbeddedStore::new()), Box::new(LocalStore::new())];
    let mut g = c.benchmark_group("store_1thread");
    g.throughput(Throughput::Elements(1));
    for store in &stores {
        let store: &dyn StateStore = store.as_ref();
        let keys = populate(store, KEYS).expect("populate");
        let name = store.backend_name();
        let mut clock = 0u64;
        let mut rng = 0x1234_5678u64;
        let every = gc_interval(KEYS);
        g.bench_function(BenchmarkId::new("incr", name), |b| {
            b.iter(|| {
                clock += 1;
                let k = keys[xorshift(&mut rng)];
                let u = Update::new(k, Op::Incr(1), UpdateTag::new(clock, 0), 0);
                black_box(store.execute(&u)).ok();
                if clock % every == 0 {
                    store.gc_below(clock);
                }
            })
        });
        g.bench_function(BenchmarkId::new("get", name), |b| {
            b.iter(|| {
                let k = &keys[xorshift(&mut rng)];
                black_box(store.get(k)).ok();
            })
        });
        g.bench_function(BenchmarkId::new("set", name), |b| {
            b.iter(|| {
                clock += 1;
                let k = keys[xorshift(&mut rng)];
                let op = Op::Set(Value::Int(clock as i64));
                let u = Update::new(k, op, UpdateTag::new(clock, 0), 0);
                black_box(store.execute(&u)).ok();
                if clock % every == 0 {
                    store.gc_below(clock);
                }
            })
        });
        g.bench_function(BenchmarkId::new("cas", name), |b| {
            b.iter(|| {
                clock += 1;
                let k = keys[xorshift(&mut rng)];
                // Expected value is usually wrong: measures the compare path plus logging.
                let op = Op::CompareAndSet { expected: Some(Value::Int(0)), new: Some(Value::Int(1)) };
                let u = Update::new(k, op, UpdateTag::new(clock, 0), 0);
                black_box(store.execute(&u)).ok();
                if clock % every == 0 {
                    store.gc_below(clock);
                }
            })
        });
        store.gc_below(u64::MAX);
    }
    g.finish();
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_incr_threads");
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 2] {
        for (name, make) in [
            ("embedded", (|| Box::new(EmbeddedStore::new()) as Box<dyn StateStore>) as fn() -> _),
            ("local", || Box::new(LocalStore::new()) as Box<dyn StateStore>),
        ] {
            g.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    let store = make();
                    let per = (iters / threads as u64).max(1);
                    let rate = incr_throughput(store.as_ref(), threads, per, KEYS);
                    // Time for `iters` ops at the measured aggregate rate (excludes populate).
                    Duration::from_secs_f64(iters as f64 / rate.max(1.0))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, single_thread, threads);
criterion_main!(benches);
