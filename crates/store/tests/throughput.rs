//! Throughput smoke test of the `bench` module (release builds only give meaningful
//! numbers: `cargo test -p streamnf-store --release --test throughput -- --ignored --nocapture`).

use streamnf_store::bench::{cas_throughput, get_throughput, incr_throughput, set_throughput};
use streamnf_store::{EmbeddedStore, LocalStore, StateStore};

#[test]
fn bench_functions_run() {
    let s = EmbeddedStore::new();
    assert!(incr_throughput(&s, 2, 10_000, 100) > 0.0);
    assert!(get_throughput(&s, 2, 10_000, 100) > 0.0);
    assert!(set_throughput(&s, 2, 10_000, 100) > 0.0);
    assert!(cas_throughput(&s, 2, 10_000, 100) > 0.0);
    // Every thread's CAS succeeded: each key ends at the count of CASes on it, and the
    // sum over keys (bench DAG) equals the ops issued by the last run.
    let total: i64 = s.snapshot(streamnf_store::bench::BENCH_DAG).values().filter_map(|v| v.as_int()).sum();
    assert_eq!(total, 20_000);
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn report_throughput() {
    let n = 5_000_000;
    for threads in [1, 2] {
        for (name, s) in [
            ("embedded", Box::new(EmbeddedStore::new()) as Box<dyn StateStore>),
            ("local", Box::new(LocalStore::new()) as Box<dyn StateStore>),
        ] {
            let s = s.as_ref();
            let incr = incr_throughput(s, threads, n, 10_000);
            let get = get_throughput(s, threads, n, 10_000);
            let set = set_throughput(s, threads, n, 10_000);
            let cas = cas_throughput(s, threads, n, 10_000);
            println!(
                "{name:9} threads={threads} incr={:.1}M/s get={:.1}M/s set={:.1}M/s cas={:.1}M/s",
                incr / 1e6,
                get / 1e6,
                set / 1e6,
                cas / 1e6
            );
        }
    }
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn report_incr_only() {
    let n = 10_000_000;
    for keys in [100, 10_000] {
        for threads in [1, 2] {
            let e = incr_throughput(&EmbeddedStore::new(), threads, n / threads as u64, keys);
            let l = incr_throughput(&LocalStore::new(), threads, n / threads as u64, keys);
            println!(
                "incr keys={keys} threads={threads}: embedded {:.1}M/s ({:.0} ns/op/thread), local {:.1}M/s",
                e / 1e6,
                1e9 * threads as f64 / e,
                l / 1e6
            );
        }
    }
}
