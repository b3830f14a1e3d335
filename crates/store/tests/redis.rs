//! The Redis backend against real `redis-server` processes started by the tests (never a
//! mock, never the system service): the conformance suite on one server and on a 3-node
//! cluster, namespace isolation, pub/sub between two store instances, a server killed and
//! restarted under pipelined updates, a server gone for good, and a property test against
//! the embedded store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use streamnf_store::conformance;
use streamnf_store::redis_server::{RedisCluster, RedisServer};
use streamnf_store::{
    EmbeddedStore, KeyBytes, KeyFilter, Op, RedisOptions, RedisStore, StateKey, StateStore, StoreError,
    Update, UpdateTag, Value,
};

static NS: AtomicU64 = AtomicU64::new(0);

/// A namespace no other store in this test binary uses.
fn fresh_ns() -> String {
    format!("t{}-{}", std::process::id(), NS.fetch_add(1, Ordering::Relaxed))
}

fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("the Redis tests need redis-server: {e}"))
}

fn open(url: &str, opts: RedisOptions) -> RedisStore {
    RedisStore::open(url, &fresh_ns(), opts).unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn key(sub: u64) -> StateKey {
    StateKey::shared(3, 1, 1, KeyBytes::from_u64(sub))
}

#[test]
fn conformance_embedded() {
    conformance::run_all(&EmbeddedStore::new);
}

#[test]
fn conformance_single_redis() {
    let s = server();
    conformance::run_all(&|| open(&s.url(), RedisOptions::default()));
    // Small batches exercise the pipeline path of every check.
    conformance::run_all(&|| open(&s.url(), RedisOptions { batch: 3, publish: false, ..Default::default() }));
    // The benchmarks' "wait for the ACK" model keeps every semantic.
    conformance::run_all(&|| open(&s.url(), RedisOptions { wait_for_ack: true, ..Default::default() }));
}

#[test]
fn conformance_redis_cluster() {
    let c = RedisCluster::start(3).unwrap_or_else(|e| panic!("the Redis tests need redis-server: {e}"));
    let store = open(&c.url(), RedisOptions::default());
    assert_eq!(store.backend_name(), "redis-cluster");
    // The keys of one DAG spread over several masters, so snapshots must scan them all.
    for i in 0..64 {
        store.execute(&Update::new(key(i), Op::Incr(1), UpdateTag::new(1, 0), 1)).unwrap();
    }
    let holding = c.nodes().iter().filter(|n| n.command("DBSIZE").is_ok_and(|r| r.trim() != ":0")).count();
    assert!(holding >= 2, "64 keys landed on {holding} master(s)");
    assert_eq!(store.snapshot(3).len(), 64);
    conformance::run_all(&|| open(&c.url(), RedisOptions::default()));
}

#[test]
fn namespaces_are_isolated() {
    let s = server();
    let a = open(&s.url(), RedisOptions::default());
    let b = open(&s.url(), RedisOptions::default());
    let k = key(1);
    let tag = UpdateTag::new(1, 0);
    assert_eq!(a.execute(&Update::new(k, Op::Incr(5), tag, 1)), Ok(Some(Value::Int(5))));
    // Same key and tag in another namespace: a fresh update, not an emulated repeat.
    assert_eq!(b.execute(&Update::new(k, Op::Incr(7), tag, 1)), Ok(Some(Value::Int(7))));
    assert_eq!(a.get(&k), Ok(Some(Value::Int(5))));
    assert_eq!(b.get(&k), Ok(Some(Value::Int(7))));
    let ta = a.schedule_timer(10, 3, 1, None, b"a".to_vec());
    b.schedule_timer(10, 3, 1, None, b"b".to_vec());
    let due: Vec<Vec<u8>> = a.due_timers(100).into_iter().map(|t| t.payload).collect();
    assert_eq!(due, vec![b"a".to_vec()]);
    assert!(ta > 0);
    b.gc_below(u64::MAX);
    assert_eq!(b.clock_log_len(), 0);
    assert_eq!(a.clock_log_len(), 1, "GC of one namespace leaves the other alone");
    a.clear_namespace().unwrap();
    assert_eq!(a.snapshot(3).len(), 0);
    assert_eq!(b.snapshot(3).len(), 1);
    // Two handles on one namespace share state (another process of the same chain).
    let ns = fresh_ns();
    let c1 = RedisStore::open(&s.url(), &ns, RedisOptions::default()).unwrap();
    let c2 = RedisStore::open(&s.url(), &ns, RedisOptions::default()).unwrap();
    c1.execute(&Update::new(k, Op::Incr(1), tag, 1)).unwrap();
    assert_eq!(c2.execute(&Update::new(k, Op::Incr(1), tag, 2)), Ok(Some(Value::Int(1))), "emulated");
    assert_eq!(c2.get(&k), Ok(Some(Value::Int(1))));
    for bad in ["", "a b", "x{y}", "a*", &"n".repeat(65)] {
        assert!(RedisStore::open(&s.url(), bad, RedisOptions::default()).is_err(), "{bad:?}");
    }
}

#[test]
fn other_instances_changes_arrive_by_pubsub() {
    let s = server();
    let ns = fresh_ns();
    let a = RedisStore::open(&s.url(), &ns, RedisOptions::default()).unwrap();
    let b = RedisStore::open(&s.url(), &ns, RedisOptions::default()).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    a.subscribe(KeyFilter::object(3, 1, 1), tx);
    let k = key(9);
    b.execute(&Update::new(k, Op::Incr(4), UpdateTag::new(3, 1), 1)).unwrap();
    b.execute(&Update::new(StateKey { object: 2, ..k }, Op::Incr(1), UpdateTag::new(4, 0), 1)).unwrap();
    let failed = b.execute(&Update::new(k, Op::Push { back: true, item: vec![] }, UpdateTag::new(5, 0), 1));
    assert!(matches!(failed, Err(StoreError::TypeMismatch { .. })), "{failed:?}");
    b.execute(&Update::new(k, Op::Delete, UpdateTag::new(6, 0), 1)).unwrap();
    let n = rx.recv_timeout(Duration::from_secs(5)).expect("notification from the other instance");
    assert_eq!((n.key, n.value, n.tag), (k, Some(Value::Int(4)), UpdateTag::new(3, 1)));
    let n = rx.recv_timeout(Duration::from_secs(5)).expect("delete notification");
    assert_eq!((n.key, n.value), (k, None));
    // A's own change is delivered once (synchronously), not again by pub/sub.
    a.execute(&Update::new(k, Op::Incr(1), UpdateTag::new(7, 0), 1)).unwrap();
    assert_eq!(rx.try_recv().map(|n| n.tag), Ok(UpdateTag::new(7, 0)));
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "no duplicate, no other object");
}

/// Kills the server while pipelined non-blocking updates are in flight, restarts it on the
/// same port with its append-only file, and checks every counter against the reference.
#[test]
fn survives_a_server_restart() {
    let mut s = RedisServer::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", "no"])
        .unwrap_or_else(|e| panic!("the Redis tests need redis-server: {e}"));
    let url = s.url();
    let store = RedisStore::open(
        &url,
        &fresh_ns(),
        RedisOptions { batch: 64, reconnect_timeout: Duration::from_secs(15), ..Default::default() },
    )
    .unwrap();
    let reference = EmbeddedStore::new();
    let keys = 37u64;
    let mut clock = 0u64;
    let mut apply = |n: u64, store: &RedisStore| {
        for _ in 0..n {
            clock += 1;
            let u =
                Update::new(key(clock % keys), Op::Incr((clock % 5) as i64 + 1), UpdateTag::new(clock, 0), 1);
            reference.execute(&u).unwrap();
            store.execute_nonblocking(u.clone()).unwrap();
            // Repeats (a replay after a failover) must be emulated, before and after the crash.
            if clock % 7 == 0 {
                store.execute_nonblocking(u).unwrap();
            }
        }
    };
    apply(3000, &store);
    let restarter = std::thread::spawn(move || {
        // Lands in the middle of the pipelined batches below.
        std::thread::sleep(Duration::from_millis(5));
        s.stop();
        std::thread::sleep(Duration::from_millis(400));
        s.restart().expect("restart on the same port");
        s
    });
    // Keeps pipelining while the server is down: these batches are re-sent once it returns.
    apply(6000, &store);
    store.flush().expect("flush after the restart");
    let s = restarter.join().expect("restarter");
    assert_eq!(store.snapshot(3), reference.snapshot(3), "no lost, no doubled increments");
    assert_eq!(store.dropped_errors(), 0);
    assert!(store.retried_calls() > 0, "the restart happened while updates were pending");
    drop(s);
}

/// The server never comes back: one clear error naming the URL within the timeout, then
/// every call fails at once.
#[test]
fn server_gone_for_good_stops_cleanly() {
    let mut s = server();
    let url = s.url();
    let timeout = Duration::from_millis(800);
    let store = open(&url, RedisOptions { reconnect_timeout: timeout, batch: 1000, ..Default::default() });
    for c in 1..=50 {
        store.execute_nonblocking(Update::new(key(c), Op::Incr(1), UpdateTag::new(c, 0), 1)).unwrap();
    }
    s.stop();
    let t = Instant::now();
    let err = store.flush().expect_err("flush must fail");
    let took = t.elapsed();
    match &err {
        StoreError::Backend(m) => {
            assert!(m.contains(&url) && m.contains("did not come back") && m.contains("50 buffered"), "{m}")
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(took >= timeout && took < timeout + Duration::from_secs(3), "gave up after {took:?}");
    let t = Instant::now();
    let stopped = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Backend(m)) if m.contains("did not come back"));
    assert!(stopped(store.get(&key(1)).map(|_| ())));
    assert!(stopped(store.execute_nonblocking(Update::new(key(1), Op::Incr(1), UpdateTag::new(99, 0), 1))));
    assert!(stopped(store.flush()));
    assert!(t.elapsed() < Duration::from_millis(100), "later calls fail at once");
}

#[test]
fn connecting_to_nothing_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    match RedisStore::open(&url, "x", RedisOptions::default()) {
        Err(StoreError::Backend(m)) => assert!(m.contains(&url) && m.contains("cannot connect"), "{m}"),
        other => panic!("{other:?}"),
    }
    match RedisStore::open("rediss://127.0.0.1:1", "x", RedisOptions::default()) {
        Err(StoreError::Backend(m)) => assert!(m.contains("TLS is not in this build"), "{m}"),
        other => panic!("{other:?}"),
    }
}

fn arb_op() -> impl Strategy<Value = Op> {
    let small = || -20i64..20;
    let item = || prop::collection::vec(any::<u8>(), 0..3);
    let value = prop_oneof![
        (-3i64..3).prop_map(Value::Int),
        item().prop_map(Value::Bytes),
        prop::collection::vec(item(), 0..3).prop_map(|v| Value::List(v.into())),
    ];
    prop_oneof![
        small().prop_map(Op::Incr),
        Just(Op::Incr(i64::MAX)),
        (small(), -10i64..0, 0i64..10).prop_map(|(delta, min, max)| Op::IncrIf { delta, min, max }),
        value.clone().prop_map(Op::Set),
        Just(Op::Delete),
        (any::<bool>(), item()).prop_map(|(back, item)| Op::Push { back, item }),
        any::<bool>().prop_map(|back| Op::Pop { back }),
        (prop::option::of(value.clone()), prop::option::of(value))
            .prop_map(|(expected, new)| Op::CompareAndSet { expected, new }),
        Just(Op::Get),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random tagged updates (with repeats of earlier tags, some non-blocking) give the same
    /// results, final state and clock-log size on Redis as on the embedded store.
    #[test]
    fn same_results_as_embedded(
        script in prop::collection::vec((0u64..4, arb_op(), any::<bool>(), 0usize..3), 1..60),
    ) {
        let srv = SERVER.with(|s| s.url());
        let redis = open(&srv, RedisOptions { batch: 4, ..Default::default() });
        let emb = EmbeddedStore::new();
        let mut done: Vec<Update> = Vec::new();
        for (i, (k, op, nonblocking, repeat)) in script.into_iter().enumerate() {
            // Sometimes repeat an earlier update (same key, op and tag) instead.
            let u = match done.get(done.len().wrapping_sub(1 + repeat)) {
                Some(prev) if repeat > 0 && i % 3 == 0 => prev.clone(),
                _ => Update::new(key(k), op, UpdateTag::new(i as u64 + 1, 0), 1),
            };
            if nonblocking && !u.op.is_read() {
                redis.execute_nonblocking(u.clone()).unwrap();
                let _ = emb.execute(&u);
            } else {
                prop_assert_eq!(redis.execute(&u), emb.execute(&u), "{:?}", u);
            }
            done.push(u);
        }
        prop_assert_eq!(redis.snapshot(3), emb.snapshot(3));
        prop_assert_eq!(redis.clock_log_len(), emb.clock_log_len());
        redis.gc_below(30);
        emb.gc_below(30);
        prop_assert_eq!(redis.clock_log_len(), emb.clock_log_len());
    }
}

thread_local! {
    static SERVER: RedisServer = server();
}

/// `cargo test --release -p streamnf-store --test redis -- --ignored --nocapture bench`
#[test]
#[ignore]
fn bench_redis() {
    let s = server();
    let r =
        streamnf_store::redis::bench::bench_redis_ops(&s.url(), 200_000, RedisOptions::default()).unwrap();
    println!("{r}");
    let out = std::process::Command::new("redis-benchmark")
        .args(["-p", &s.port().to_string(), "-P", "16", "-t", "incr,get", "-q", "-n", "200000"])
        .output()
        .expect("redis-benchmark");
    println!("redis-benchmark -P 16 -t incr,get -q:\n{}", String::from_utf8_lossy(&out.stdout));
}
