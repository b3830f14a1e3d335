//! `streamnf bench NAME`: named benchmarks printing their figures on stdout.
//!
//! Every comparison runs its variants side by side in one process, alternating rounds,
//! and reports ratios, because this machine is shared and noisy. The figures recorded in
//! docs/BENCHMARKS.md come from here (or from the crates' criterion benches).

use clap::{Args, ValueEnum};
use std::sync::Arc;
use std::time::Instant;
use streamnf_dag::{ChainBuilder, LogicalDag, NetworkFunction};
use streamnf_packet::trace::RawRecord;
use streamnf_packet::{LinkType, Packet};
use streamnf_runtime::{Engine, EngineConfig};
use streamnf_store::{EmbeddedStore, LocalStore, StateStore};
use streamnf_tracegen::{GenConfig, Generator, ScanConfig};

/// The example chains the benchmarks run, as shipped in `examples/`.
pub(crate) const NAT_CHAIN: &str = include_str!("../../../examples/nat.toml");
/// `examples/port_scan.toml`.
pub(crate) const PORT_SCAN_CHAIN: &str = include_str!("../../../examples/port_scan.toml");
/// `examples/trojan.toml`.
pub(crate) const TROJAN_CHAIN: &str = include_str!("../../../examples/trojan.toml");
/// `examples/http_proxy.toml`.
pub(crate) const HTTP_PROXY_CHAIN: &str = include_str!("../../../examples/http_proxy.toml");

/// A store on the Redis at `url` under namespace `ns`, emptied first and deleted when
/// dropped (benchmarks run on a private `redis-server`).
pub(crate) fn fresh_redis(
    url: &str,
    ns: &str,
    opts: streamnf_store::RedisOptions,
) -> Result<Arc<dyn StateStore>, String> {
    let s = streamnf_store::redis::bench::open_fresh(url, ns, opts).map_err(|e| e.to_string())?;
    Ok(Arc::new(s))
}

/// Parses chain-file `text` (named `name` in errors) with the built-in NFs.
pub(crate) fn chain(text: &str, name: &str) -> Result<Arc<LogicalDag>, String> {
    let registry = streamnf_nfs::builtin_registry();
    streamnf_dag::chain_file::parse_chain(text, name, &registry)
        .map(Arc::new)
        .map_err(|e| format!("bench chain {name}: {e}"))
}

/// Benchmarks by name.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BenchName {
    /// List the benchmarks.
    List,
    /// Embedded store ops/s (increment, get, set, compare-and-set) with 1 and 2 threads.
    Store,
    /// NAT chain packets/s and per-packet latency, externalized vs local state.
    Nat,
    /// Every built-in NF alone, packets/s on one core (externalized state).
    Nfs,
    /// The Figure 1 chain (IDS → rate limiter, DPI off-path), externalized vs local.
    Figure1,
    /// The Figure 1 chain on the parallel engine: 1 worker vs 2 workers, side by side.
    Workers,
    /// The root's per-packet bookkeeping: logical clock plus packet log (local and in-store).
    Root,
    /// Resident memory over a long parallel run of the Figure 1 chain, packets generated on
    /// the fly (log and clock-log GC keep it flat); use --packets 10000000.
    Memory,
    /// Redis backend ops/s from one process against a private `redis-server`, next to
    /// `redis-benchmark -P 16` on the same server in the same run (--ops per phase).
    Redis,
    /// NAT per-packet latency in the paper's four models (local state, externalized,
    /// + caching, + non-blocking) on the embedded store and on a private `redis-server`.
    NatModels,
    /// Churn (§5, §7.2): scale handover of the port-scan firewall, NAT failover by replay,
    /// NAT latency with fault tolerance on and off (--rounds, at least 5; fixed traces).
    Churn,
    /// Table 2: a straggling NAT cloned at 25/50/75 % load, duplicate packets and state
    /// updates with guarantees off and on (--rounds; fixed trace).
    Duplicates,
    /// §7.3: trojans found behind 3 straggling detector instances, guarantees on and off
    /// (--rounds; fixed trace).
    Ordering,
    /// The paper's evaluation (§7) in one run: every experiment, a report with tables and
    /// SVG plots beside the paper's figures (--quick, --out DIR, --trace FILE).
    Paper,
    /// Synchronous vs asynchronous NAT (reads prefetched per batch) on the parallel engine,
    /// on a private `redis-server` and on the embedded store, side by side (use --packets
    /// 20000).
    Async,
}

/// Arguments of `streamnf bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[arg(value_enum)]
    name: BenchName,
    /// Packets in the generated trace (chain benchmarks).
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Rounds per variant (the best round is reported, alternating variants).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Operations per thread (store benchmark).
    #[arg(long, default_value_t = 5_000_000)]
    ops: u64,
    /// Distinct keys the store benchmark spreads its operations over.
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// `paper`: the quick run (under 3 minutes on 2 cores) instead of the full one.
    #[arg(long)]
    quick: bool,
    /// `paper`: directory for report.md and its plots.
    #[arg(long, default_value = "paper-report")]
    out: std::path::PathBuf,
    /// `paper`: a capture to use instead of the generated traces (NF experiments).
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// `paper`: run only these experiments (comma-separated: fig10, clock, datastore, move,
    /// fig11, fig12, table2, ordering).
    #[arg(long, value_name = "LIST")]
    only: Option<String>,
}

/// Runs one benchmark.
pub fn bench(a: BenchArgs) -> Result<(), String> {
    match a.name {
        BenchName::List => {
            for v in BenchName::value_variants() {
                if let Some(p) = v.to_possible_value() {
                    println!(
                        "{:<10} {}",
                        p.get_name(),
                        p.get_help().map(|h| h.to_string()).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        BenchName::Store => bench_store(a.ops, a.keys, a.rounds),
        BenchName::Nat => {
            let pkts = trace(a.packets, false)?;
            let nat = streamnf_nfs::nat::Nat::default();
            bench_chain("nat", &pkts, a.rounds, &|| single(Arc::new(nat.clone())))
        }
        BenchName::Figure1 => {
            let pkts = trace(a.packets, true)?;
            bench_chain("figure1", &pkts, a.rounds, &figure1)
        }
        BenchName::Nfs => bench_nfs(a.packets, a.rounds),
        BenchName::Root => bench_root(a.packets, a.rounds),
        BenchName::Memory => bench_memory(a.packets),
        BenchName::Redis => bench_redis(a.ops, a.rounds),
        BenchName::NatModels => bench_nat_models(a.packets, a.rounds),
        BenchName::Churn => crate::bench_churn::churn(a.rounds),
        BenchName::Duplicates => crate::bench_churn::duplicates(a.rounds),
        BenchName::Ordering => crate::bench_churn::ordering(a.rounds),
        BenchName::Paper => crate::paper::paper(crate::paper::PaperOptions {
            quick: a.quick,
            out: a.out,
            trace: a.trace,
            command: std::iter::once("streamnf".to_string())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" "),
            only: a.only,
        }),
        BenchName::Async => crate::bench_async::sync_vs_async(&trace(a.packets, false)?, a.rounds),
        BenchName::Workers => {
            let pkts = trace(a.packets, true)?;
            bench_workers(&pkts, a.rounds)
        }
    }
}

/// One round of the parallel engine: packets per second over the whole run (the root's
/// input until the last packet left the chain), and chain latency.
fn parallel_round(dag: &Arc<LogicalDag>, pkts: &[RawRecord], workers: usize) -> Result<RoundResult, String> {
    let instances = vec![workers as u32; dag.vertices.len()];
    parallel_round_on(dag, Arc::new(EmbeddedStore::new()), pkts, workers, instances, false)
}

/// Like [`parallel_round`] on `store` with `instances` tasks per vertex, and fault tolerance
/// (lineages, logged reads) on or off.
pub(crate) fn parallel_round_on(
    dag: &Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    pkts: &[RawRecord],
    workers: usize,
    instances: Vec<u32>,
    fault_tolerance: bool,
) -> Result<RoundResult, String> {
    use streamnf_runtime::{ParallelConfig, ParallelEngine};
    let par = ParallelConfig { workers, instances, fault_tolerance, ..ParallelConfig::default() };
    let mut engine = ParallelEngine::new(Arc::clone(dag), store, EngineConfig::default(), par)?;
    for p in pkts {
        engine.process_frame(p.link, &p.data, p.ts_ns, p.orig_len).map_err(|e| e.to_string())?;
    }
    Ok(RoundResult::of(&engine.finish().map_err(|e| e.to_string())?))
}

fn bench_workers(pkts: &[RawRecord], rounds: u32) -> Result<(), String> {
    let dag = Arc::new(figure1()?);
    let (mut one, mut two, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        one.push(parallel_round(&dag, pkts, 1)?);
        two.push(parallel_round(&dag, pkts, 2)?);
        reference.push(one_round(&dag, Arc::new(EmbeddedStore::new()), pkts)?);
    }
    let (o, t, r) = (best(&one), best(&two), best(&reference));
    println!(
        "bench workers: figure1, {} packets, {} rounds each, best round; N workers run N instances of each vertex",
        pkts.len(),
        rounds.max(1)
    );
    for (name, x) in
        [("reference engine (1 thread)", r), ("parallel, 1 worker", o), ("parallel, 2 workers", t)]
    {
        println!("  {name:<28} {:>6.2} Mpps   latency p50 {} ns  p99 {} ns", x.pps / 1e6, x.p50, x.p99);
    }
    println!("  2 workers / 1 worker throughput ratio: {:.2}", t.pps / o.pps);
    println!("  2 workers / reference throughput ratio: {:.2}", t.pps / r.pps);
    Ok(())
}

/// A generated trace held in memory as captured frames (parsing is part of each run).
pub(crate) fn trace(packets: u64, scan: bool) -> Result<Vec<RawRecord>, String> {
    trace_with(packets, scan, false)
}

/// Like [`trace`], optionally with trojan hosts and decoys.
fn trace_with(packets: u64, scan: bool, trojan: bool) -> Result<Vec<RawRecord>, String> {
    let t = Instant::now();
    let cfg = GenConfig {
        packets,
        flows: (packets / 50).max(1) as u32,
        xss_fraction: 0.01,
        scan: scan.then(ScanConfig::default),
        trojan: trojan.then(streamnf_tracegen::TrojanConfig::default),
        ..GenConfig::default()
    };
    let pkts = generate(cfg)?;
    eprintln!("generated {} packets in {:.2} s", pkts.len(), t.elapsed().as_secs_f64());
    Ok(pkts)
}

pub(crate) fn single(nf: Arc<dyn NetworkFunction>) -> Result<LogicalDag, String> {
    ChainBuilder::new("bench")
        .vertex("nf", nf)
        .edge("input", "nf.in")
        .edge("nf.out", "output.out")
        .build()
        .map_err(|e| e.to_string())
}

fn figure1() -> Result<LogicalDag, String> {
    use streamnf_nfs::{dpi::Dpi, ids::LightIds, rate_limiter::RateLimiter};
    let dpi = Dpi::new(streamnf_nfs::dpi::DEFAULT_SIGNATURES.iter().map(|s| s.to_string()).collect(), true)?;
    streamnf_nfs::chains::figure1("figure1", LightIds::default(), RateLimiter::default(), dpi)
        .map_err(|e| e.to_string())
}

#[derive(Clone)]
pub(crate) struct RoundResult {
    /// Packets per second over the run's busy time.
    pub(crate) pps: f64,
    /// Median chain latency, ns.
    pub(crate) p50: u64,
    /// 99th percentile chain latency, ns.
    pub(crate) p99: u64,
}

impl RoundResult {
    /// Throughput over the run's busy time and its latency percentiles.
    fn of(r: &streamnf_runtime::engine::EngineReport) -> RoundResult {
        let l = r.latency.percentiles();
        RoundResult {
            pps: r.chain.packets_in as f64 / r.busy.as_secs_f64().max(1e-9),
            p50: l.p50_ns,
            p99: l.p99_ns,
        }
    }
}

fn one_round(
    dag: &Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    pkts: &[RawRecord],
) -> Result<RoundResult, String> {
    Ok(RoundResult::of(&reference_run(dag, store, pkts)?))
}

/// `pkts` through `dag` on the single-instance engine on `store`, replayed from memory as
/// `streamnf run` does (the root copies each frame into a pooled buffer and parses it, inside
/// the measured time); the engine's report.
pub(crate) fn reference_run(
    dag: &Arc<LogicalDag>,
    store: Arc<dyn StateStore>,
    pkts: &[RawRecord],
) -> Result<streamnf_runtime::engine::EngineReport, String> {
    let mut engine = Engine::new(Arc::clone(dag), store, EngineConfig::default())?;
    for p in pkts {
        engine.process_frame(p.link, &p.data, p.ts_ns, p.orig_len).map_err(|e| e.to_string())?;
    }
    engine.finish().map_err(|e| e.to_string())
}

/// The packets `cfg` generates, as Ethernet records.
pub(crate) fn generate(cfg: GenConfig) -> Result<Vec<RawRecord>, String> {
    Ok(Generator::new(cfg)
        .map_err(|e| e.to_string())?
        .map(|g| RawRecord {
            link: LinkType::Ethernet,
            ts_ns: g.ts_ns,
            orig_len: u32::try_from(g.data.len()).unwrap_or(u32::MAX),
            data: g.data,
        })
        .collect())
}

pub(crate) fn best(rs: &[RoundResult]) -> &RoundResult {
    rs.iter().max_by(|a, b| a.pps.total_cmp(&b.pps)).unwrap_or(&rs[0])
}

/// Runs a chain externalized (embedded store) and local-state, alternating rounds.
fn bench_chain(
    name: &str,
    pkts: &[RawRecord],
    rounds: u32,
    make: &dyn Fn() -> Result<LogicalDag, String>,
) -> Result<(), String> {
    let dag = Arc::new(make()?);
    let (mut ext, mut local) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        ext.push(one_round(&dag, Arc::new(EmbeddedStore::new()), pkts)?);
        local.push(one_round(&dag, Arc::new(LocalStore::new()), pkts)?);
    }
    let (e, l) = (best(&ext), best(&local));
    println!("bench {name}: {} packets, {} rounds each, best round, one core", pkts.len(), rounds.max(1));
    println!(
        "  externalized (embedded store): {:>6.2} Mpps   latency p50 {} ns  p99 {} ns",
        e.pps / 1e6,
        e.p50,
        e.p99
    );
    println!(
        "  local state (baseline):        {:>6.2} Mpps   latency p50 {} ns  p99 {} ns",
        l.pps / 1e6,
        l.p50,
        l.p99
    );
    println!("  externalized / local throughput ratio: {:.2}", e.pps / l.pps);
    Ok(())
}

/// A one-vertex chain of built-in NF `nf` with parameters `params` (TOML lines), input →
/// `nf.in`, `nf.out` → sink.
fn single_toml(nf: &str, params: &str) -> String {
    format!(
        "name = \"bench\"\n[[vertex]]\nname = \"nf\"\nnf = \"{nf}\"\n[vertex.params]\n{params}\n\
         [[edge]]\nfrom = \"input\"\nto = \"nf.in\"\n[[edge]]\nfrom = \"nf.out\"\nto = \"output.out\"\n"
    )
}

/// The chains `bench nfs` measures: every built-in NF on its own, and the two-vertex
/// detectors as a whole.
fn nf_bench_chains() -> Vec<(&'static str, String)> {
    vec![
        ("forward", single_toml("forward", "")),
        ("nat", single_toml("nat", "")),
        ("light_ids", single_toml("light_ids", "")),
        ("rate_limiter(all)", single_toml("rate_limiter", "scope = \"all\"\nrate_pps = 1000000\nburst = 1000")),
        ("dpi", single_toml("dpi", "")),
        ("http_proxy", single_toml("http_proxy", "")),
        (
            "acl",
            single_toml(
                "acl",
                "default = \"allow\"\nrules = [\n  { action = \"deny\", filter = \"tcp port 23 or udp port 69\" },\n  \
                 { action = \"allow\", filter = \"tcp port 80 or tcp port 443\" },\n  \
                 { action = \"deny\", filter = \"src net 203.0.113.0/24\" },\n]",
            ),
        ),
        (
            "port_scan(fw+analyzer)",
            "name = \"bench\"\n[[vertex]]\nname = \"fw\"\nnf = \"scan_firewall\"\n[vertex.params]\n\
             analyzer = \"analyzer\"\n[[vertex]]\nname = \"analyzer\"\nnf = \"scan_analyzer\"\n\
             [vertex.params]\nfirewall = \"fw\"\n[[edge]]\nfrom = \"input\"\nto = \"fw.in\"\n\
             [[edge]]\nfrom = \"fw.out\"\nto = \"output.out\"\n"
                .to_string(),
        ),
        (
            "trojan(det+analyzer)",
            "name = \"bench\"\n[[vertex]]\nname = \"detector\"\nnf = \"trojan_detector\"\n\
             [[vertex]]\nname = \"analyzer\"\nnf = \"trojan_analyzer\"\n\
             [[edge]]\nfrom = \"input\"\nto = \"detector.in\"\n\
             [[edge]]\nfrom = \"detector.steps\"\nto = \"analyzer.steps\"\n\
             [[edge]]\nfrom = \"detector.out\"\nto = \"output.out\"\n"
                .to_string(),
        ),
    ]
}

fn bench_nfs(packets: u64, rounds: u32) -> Result<(), String> {
    let pkts = trace_with(packets, true, true)?;
    let registry = streamnf_nfs::builtin_registry();
    println!(
        "bench nfs: {} packets (generated, with scanners and trojan hosts), best of {} rounds, one core, embedded store",
        pkts.len(),
        rounds.max(1)
    );
    for (name, text) in nf_bench_chains() {
        let dag = streamnf_dag::chain_file::parse_chain(&text, name, &registry)
            .map_err(|e| format!("bench chain {name}: {e}"))?;
        let dag = Arc::new(dag);
        let rs: Vec<RoundResult> = (0..rounds.max(1))
            .map(|_| one_round(&dag, Arc::new(EmbeddedStore::new()), &pkts))
            .collect::<Result<_, _>>()?;
        let b = best(&rs);
        println!("  {name:<24} {:>6.2} Mpps   latency p50 {} ns  p99 {} ns", b.pps / 1e6, b.p50, b.p99);
    }
    Ok(())
}

/// `redis-benchmark -P 16 -q` for `tests` (e.g. `incr`) on `port`: requests per second.
pub(crate) fn redis_benchmark(port: u16, test: &str, n: u64) -> Result<f64, String> {
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-P",
            "16",
            "-q",
            "-t",
            test,
            "-n",
            &n.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run redis-benchmark (Debian package redis-tools): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Lines look like `INCR: 543478.25 requests per second, p50=0.999 msec`; with -q the
    // progress is written with carriage returns before it.
    text.rsplit(['\r', '\n'])
        .find_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .ok_or_else(|| format!("unexpected redis-benchmark output: {text}"))
}

fn bench_redis(ops: u64, rounds: u32) -> Result<(), String> {
    use streamnf_store::redis::bench::bench_redis_ops;
    use streamnf_store::redis_server::RedisServer;
    let srv = RedisServer::start()?;
    let n = usize::try_from(ops.min(1_000_000)).unwrap_or(200_000);
    println!(
        "bench redis: private redis-server on port {}, {n} ops per phase, {} rounds",
        srv.port(),
        rounds.max(1)
    );
    for round in 1..=rounds.max(1) {
        let ours = bench_redis_ops(&srv.url(), n, streamnf_store::RedisOptions::default())
            .map_err(|e| e.to_string())?;
        let incr = redis_benchmark(srv.port(), "incr", n as u64)?;
        let get = redis_benchmark(srv.port(), "get", n as u64)?;
        println!("  round {round}:");
        println!("    streamnf non-blocking incr (pipelined): {:>10.0} ops/s", ours.nonblocking_incr_per_s);
        println!("    streamnf blocking incr:                 {:>10.0} ops/s", ours.blocking_incr_per_s);
        println!("    streamnf blocking get:                  {:>10.0} ops/s", ours.blocking_get_per_s);
        println!("    redis-benchmark -P 16 INCR:             {incr:>10.0} ops/s");
        println!("    redis-benchmark -P 16 GET:              {get:>10.0} ops/s");
        println!(
            "    ratio pipelined incr / redis-benchmark INCR: {:.3}",
            ours.nonblocking_incr_per_s / incr
        );
    }
    let cluster = streamnf_store::redis_server::RedisCluster::start(3)?;
    println!("  3-node Redis Cluster (private, one process per node, same machine) vs the single server:");
    for round in 1..=rounds.max(1) {
        let opts = streamnf_store::RedisOptions::default;
        let one = bench_redis_ops(&srv.url(), n, opts()).map_err(|e| e.to_string())?;
        let three = bench_redis_ops(&cluster.url(), n, opts()).map_err(|e| e.to_string())?;
        println!(
            "    round {round}: pipelined incr {:>8.0} (3 nodes) vs {:>8.0} (1 node) ops/s, ratio {:.2}; \
             blocking get {:>8.0} vs {:>8.0} ops/s",
            three.nonblocking_incr_per_s,
            one.nonblocking_incr_per_s,
            three.nonblocking_incr_per_s / one.nonblocking_incr_per_s,
            three.blocking_get_per_s,
            one.blocking_get_per_s
        );
    }
    Ok(())
}

/// The paper's four NAT models (§7) on one store: local state, externalized (every update
/// waits for the store), + caching (per-flow state cached at its owner), + non-blocking
/// (updates pipelined). `sync` and `pipelined` open the backend without and with pipelining.
fn nat_models(
    backend: &str,
    pkts: &[RawRecord],
    rounds: u32,
    sync: &dyn Fn() -> Result<Arc<dyn StateStore>, String>,
    pipelined: &dyn Fn() -> Result<Arc<dyn StateStore>, String>,
) -> Result<(), String> {
    use streamnf_store::CachedStore;
    let dag = Arc::new(single(Arc::new(streamnf_nfs::nat::Nat::default()))?);
    let read_heavy = dag.read_heavy_objects();
    let cached = |inner: Arc<dyn StateStore>| -> Result<Arc<dyn StateStore>, String> {
        Ok(Arc::new(CachedStore::with_read_heavy(inner, read_heavy.clone())))
    };
    type Make<'a> = Box<dyn Fn() -> Result<Arc<dyn StateStore>, String> + 'a>;
    let models: Vec<(&str, Make)> = vec![
        ("local state", Box::new(|| Ok(Arc::new(LocalStore::new()) as Arc<dyn StateStore>))),
        ("externalized", Box::new(sync)),
        ("+ caching", Box::new(|| cached(sync()?))),
        ("+ non-blocking", Box::new(|| cached(pipelined()?))),
    ];
    println!("  {backend}:");
    for (name, make) in &models {
        let rs: Vec<RoundResult> =
            (0..rounds.max(1)).map(|_| one_round(&dag, make()?, pkts)).collect::<Result<_, _>>()?;
        let b = best(&rs);
        println!(
            "    {name:<16} latency p50 {:>7} ns  p99 {:>8} ns   {:>8.3} Mpps",
            b.p50,
            b.p99,
            b.pps / 1e6
        );
    }
    Ok(())
}

fn bench_nat_models(packets: u64, rounds: u32) -> Result<(), String> {
    use streamnf_store::redis_server::RedisServer;
    use streamnf_store::RedisOptions;
    let pkts = trace(packets, false)?;
    println!("bench nat-models: {} packets, best of {} rounds, one core", pkts.len(), rounds.max(1));
    let embedded = || Ok(Arc::new(EmbeddedStore::new()) as Arc<dyn StateStore>);
    nat_models(
        "embedded store (updates are applied in place: non-blocking = blocking)",
        &pkts,
        rounds,
        &embedded,
        &embedded,
    )?;
    let srv = RedisServer::start()?;
    let url = srv.url();
    let redis =
        |batch: usize| fresh_redis(&url, "natmodels", RedisOptions { batch, ..RedisOptions::default() });
    nat_models(
        &format!("redis {url} (private redis-server; externalized = one round trip per update)"),
        &pkts,
        rounds,
        &|| redis(1),
        &|| redis(512),
    )
}

fn bench_store(ops: u64, keys: u32, rounds: u32) -> Result<(), String> {
    use streamnf_store::bench::{cas_throughput, get_throughput, incr_throughput, set_throughput};
    type OpBench = fn(&dyn StateStore, usize, u64, u32) -> f64;
    let benches: [(&str, OpBench); 4] = [
        ("increment", incr_throughput),
        ("get", get_throughput),
        ("set", set_throughput),
        ("compare-and-set", cas_throughput),
    ];
    println!("bench store: {ops} ops per thread on {keys} keys, best of {} rounds", rounds.max(1));
    for (name, f) in benches {
        let mut res = [0f64; 3];
        for _ in 0..rounds.max(1) {
            let emb1 = f(&EmbeddedStore::new(), 1, ops, keys);
            let emb2 = f(&EmbeddedStore::new(), 2, ops, keys);
            let loc1 = f(&LocalStore::new(), 1, ops, keys);
            for (r, v) in res.iter_mut().zip([emb1, emb2, loc1]) {
                *r = r.max(v);
            }
        }
        println!(
            "  {name:<16} embedded 1 thread {:>6.1} M ops/s   2 threads {:>6.1} M ops/s ({:.2}x)   local 1 thread {:>6.1} M ops/s",
            res[0] / 1e6,
            res[1] / 1e6,
            res[1] / res[0],
            res[2] / 1e6
        );
    }
    Ok(())
}

/// Clock + log per packet as the root does it, in ns: a clock from the `ClockSource` on
/// `store` (persisted every `persist_every`), each packet logged in batches of 32 — its
/// input index in the local log, the whole frame in the in-store log (`in_store`) — and
/// released in batches of 32 as the tasks settle them, with the log holding up to 4096.
pub(crate) fn root_cost(
    store: Arc<dyn StateStore>,
    frames: &[RawRecord],
    packets: u64,
    persist_every: u64,
    in_store: bool,
) -> Result<f64, String> {
    use streamnf_runtime::packet_log::{ClockSource, PacketLog};
    if frames.is_empty() {
        return Err("no frames to log".into());
    }
    let mut clocks = ClockSource::resume(Arc::clone(&store), 1, persist_every).map_err(|e| e.to_string())?;
    let log = if in_store {
        PacketLog::in_store(4096, Arc::clone(&store), 1).map_err(|e| e.to_string())?
    } else {
        PacketLog::referencing(4096)
    };
    let mut batch: Vec<(u64, Packet)> = Vec::with_capacity(32);
    let mut indexes: Vec<(u64, u64)> = Vec::with_capacity(32);
    let mut done: Vec<(u64, u32, bool)> = Vec::with_capacity(32);
    let mut inflight = std::collections::VecDeque::new();
    let t = Instant::now();
    for i in 0..packets {
        let c = clocks.next().map_err(|e| e.to_string())?;
        if in_store {
            let frame = &frames[(i % frames.len() as u64) as usize];
            let mut p = Packet::with_orig_len(frame.link, frame.data.clone(), frame.ts_ns, frame.orig_len);
            p.meta.clock = c;
            batch.push((c, p));
        } else {
            // The local log keeps the input index; the frame stays in the input.
            indexes.push((c, i));
        }
        if batch.len() + indexes.len() == 32 {
            if in_store {
                log.admit_batch(&mut batch).map_err(|e| e.error.to_string())?;
            } else if log.try_admit_indexes(&mut indexes).map_err(|e| e.to_string())? < 32 {
                return Err("log full".into());
            }
            inflight.extend((c - 31)..=c);
            while inflight.len() > 2048 {
                for _ in 0..32 {
                    if let Some(d) = inflight.pop_front() {
                        done.push((d, 1, true));
                    }
                }
                log.settle(&done).map_err(|e| format!("{:?}", e.failures.first()))?;
                done.clear();
            }
        }
    }
    Ok(t.elapsed().as_nanos() as f64 / packets.max(1) as f64)
}

/// [`root_cost`] on the embedded store, clock persisted every 1024, local and in-store log.
fn bench_root(packets: u64, rounds: u32) -> Result<(), String> {
    let frames = trace(packets.min(200_000), false)?;
    let embedded = || Arc::new(EmbeddedStore::new()) as Arc<dyn StateStore>;
    let (mut local, mut stored) = (f64::MAX, f64::MAX);
    for _ in 0..rounds.max(1) {
        local = local.min(root_cost(embedded(), &frames, packets, 1024, false)?);
        stored = stored.min(root_cost(embedded(), &frames, packets, 1024, true)?);
    }
    println!("bench root: {packets} packets, best of {} rounds", rounds.max(1));
    println!("  clock + local log (input index; frames stay in the input): {local:>7.1} ns/packet");
    println!("  clock + in-store log (whole frame written to the store):  {stored:>7.1} ns/packet");
    Ok(())
}

/// Resident set size now and at its peak, in MiB (Linux `/proc/self/status`).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn bench_memory(packets: u64) -> Result<(), String> {
    use streamnf_runtime::{ParallelConfig, ParallelEngine};
    let dag = Arc::new(figure1()?);
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let par =
        ParallelConfig { workers: 2, instances: vec![2; dag.vertices.len()], ..ParallelConfig::default() };
    let mut engine = ParallelEngine::new(Arc::clone(&dag), Arc::clone(&store), EngineConfig::default(), par)?;
    let cfg = GenConfig {
        packets,
        flows: 20_000,
        xss_fraction: 0.01,
        scan: Some(ScanConfig::default()),
        ..GenConfig::default()
    };
    let step = (packets / 10).max(1);
    println!("bench memory: figure1, {packets} generated packets, 2 workers, 2 instances per vertex");
    println!("  {:>12} {:>10} {:>10} {:>16}", "packets", "RSS MiB", "peak MiB", "clock-log entries");
    let t = Instant::now();
    for (i, g) in Generator::new(cfg).map_err(|e| e.to_string())?.enumerate() {
        engine
            .process_frame(LinkType::Ethernet, &g.data, g.ts_ns, g.data.len() as u32)
            .map_err(|e| e.to_string())?;
        let n = i as u64 + 1;
        if n % step == 0 {
            let (rss, peak) = rss_mib();
            println!("  {n:>12} {rss:>10.1} {peak:>10.1} {:>16}", store.clock_log_len());
        }
    }
    let r = engine.finish().map_err(|e| e.to_string())?;
    let (rss, peak) = rss_mib();
    println!(
        "  finished: {} packets in {:.1} s, RSS {rss:.1} MiB, peak {peak:.1} MiB, clock-log entries {}",
        r.chain.packets_in,
        t.elapsed().as_secs_f64(),
        store.clock_log_len()
    );
    Ok(())
}
