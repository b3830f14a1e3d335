//! `streamnf bench paper`: the paper's evaluation (§7) in one command. Every experiment runs
//! here, on this machine, and writes its part of `DIR/report.md`: tables, SVG plots (CDFs
//! where the paper has CDFs) and the paper's own figures beside ours, marked as the
//! paper's.
//!
//! What this module owns: the order of the experiments, their shared set-up (the input
//! traces, one private `redis-server`), a progress bar per experiment, and the report. Each
//! experiment lives in its own module and only measures; [`report`] formats and [`plot`]
//! draws. Nothing here writes a number it did not measure, except the paper's values.

mod churn;
mod datastore;
mod fig10;
mod ft;
pub mod plot;
pub mod report;
mod root;
mod shared;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use streamnf_packet::trace::RawRecord;
use streamnf_packet::LinkType;
use streamnf_store::redis_server::RedisServer;
use streamnf_store::{RedisOptions, StateStore};
use streamnf_tracegen::{GenConfig, ScanConfig, TrojanConfig};

use crate::bench_churn::TempDir;
use report::{RunInfo, Section};

/// How `bench paper` was asked to run.
pub struct PaperOptions {
    /// The quick run (under 3 minutes on 2 cores) instead of the full one (under 15).
    pub quick: bool,
    /// Where the report and the plots go.
    pub out: PathBuf,
    /// A capture to use instead of the generated traces (NF experiments).
    pub trace: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
    /// Comma-separated experiment keys to run (`None`: all).
    pub only: Option<String>,
}

/// The kind of generated traffic an experiment needs (ignored with `--trace`).
#[derive(Clone, Copy, Debug)]
pub enum Traffic {
    /// TCP (half of it HTTP) and UDP flows, some IPv6.
    Mixed,
    /// Mixed flows plus two SYN scanners of 200 ports each.
    Scan,
    /// Mixed flows plus the multi-step trojan's hosts and decoys.
    Trojan,
    /// HTTP only, four servers, URLs drawn from a pool of 200 so popular ones repeat.
    Http,
}

/// What every experiment shares.
pub struct Ctx {
    /// Quick run.
    pub quick: bool,
    /// Report directory (plots are written here).
    pub out: PathBuf,
    /// The private Redis server.
    pub redis: RedisServer,
    /// The capture given with `--trace`, read once.
    capture: Option<(String, Vec<RawRecord>)>,
    /// Scratch space for traces written for `run_trace` (removed at the end).
    scratch: TempDir,
}

impl Ctx {
    /// Packets for an experiment: the `--trace` capture (cut to `packets`), else a generated
    /// trace of `packets` packets of kind `traffic`.
    pub fn input(&self, traffic: Traffic, packets: u64, seed: u64) -> Result<Vec<RawRecord>, String> {
        if let Some((_, records)) = &self.capture {
            return Ok(records.iter().take(packets as usize).cloned().collect());
        }
        let base = GenConfig {
            packets,
            flows: (packets / 40).clamp(20, 5_000) as u32,
            seed,
            ..GenConfig::default()
        };
        let cfg = match traffic {
            Traffic::Mixed => base,
            Traffic::Scan => GenConfig {
                scan: Some(ScanConfig { scanners: 2, ports_per_scanner: 200, ..ScanConfig::default() }),
                ..base
            },
            Traffic::Trojan => GenConfig { trojan: Some(TrojanConfig::default()), ..base },
            Traffic::Http => GenConfig {
                http_fraction: 1.0,
                udp_fraction: 0.0,
                ipv6_fraction: 0.0,
                http_servers: 4,
                ..base
            },
        };
        crate::bench::generate(cfg)
    }

    /// A capture file of [`Ctx::input`]'s packets (pcap in the scratch directory; from the
    /// `--trace` capture, its first `packets`), for runs through `run_trace`.
    pub fn trace_file(
        &self,
        name: &str,
        traffic: Traffic,
        packets: u64,
        seed: u64,
    ) -> Result<PathBuf, String> {
        let records = self.input(traffic, packets, seed)?;
        let link = records.first().map_or(LinkType::Ethernet, |r| r.link);
        let path = self.scratch.file(&format!("{name}.pcap"));
        let mut w = streamnf_packet::trace::create_writer(&path, link)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for r in records.iter().filter(|r| r.link == link) {
            w.write(r.ts_ns, r.orig_len, &r.data).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        w.finish().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// A fresh store on the private Redis under namespace `ns` (emptied first, dropped
    /// after).
    pub fn redis_store(&self, ns: &str, opts: RedisOptions) -> Result<Arc<dyn StateStore>, String> {
        crate::bench::fresh_redis(&self.redis.url(), ns, opts)
    }

    /// Path of a plot file in the report directory.
    pub fn plot_path(&self, file: &str) -> PathBuf {
        self.out.join(file)
    }
}

/// One experiment: fills its section, advancing `bar` (whose length it sets).
type Experiment = fn(&Ctx, &ProgressBar) -> Result<Section, String>;

/// The experiments in report order: key (for `--only`), name, function.
pub const EXPERIMENTS: &[(&str, &str, Experiment)] = &[
    ("fig10", "Figure 10: per-packet processing time in the four state models", fig10::run),
    ("clock", "Clock and log: logical clock persistence and packet logging", root::run),
    ("datastore", "Datastore: operations per second", datastore::run),
    ("move", "State move: 1,700 flows re-allocated mid-run", churn::state_move_section),
    ("fig11", "Figure 11: shared-state updates with strong consistency", shared::run),
    ("fig12", "Figure 12: fault tolerance vs an FTMB-style baseline", ft::run),
    ("table2", "Table 2: duplicates with and without suppression", churn::duplicates_section),
    ("ordering", "Ordering: trojans detected under W1-W3", churn::ordering_section),
];

/// The experiments `only` names (comma-separated keys of [`EXPERIMENTS`]; `None` = all).
fn selected(only: Option<&str>) -> Result<Vec<&'static (&'static str, &'static str, Experiment)>, String> {
    let Some(list) = only else { return Ok(EXPERIMENTS.iter().collect()) };
    let keys: Vec<&str> = list.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
    for k in &keys {
        if !EXPERIMENTS.iter().any(|e| e.0 == *k) {
            let known: Vec<&str> = EXPERIMENTS.iter().map(|e| e.0).collect();
            return Err(format!("--only: no experiment `{k}` (known: {})", known.join(", ")));
        }
    }
    if keys.is_empty() {
        return Err("--only: name at least one experiment".into());
    }
    Ok(EXPERIMENTS.iter().filter(|e| keys.contains(&e.0)).collect())
}

/// Runs every experiment and writes the report; fails (after writing it) when one failed.
pub fn paper(opts: PaperOptions) -> Result<(), String> {
    let started = Instant::now();
    let experiments = selected(opts.only.as_deref())?;
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("--out {}: {e}", opts.out.display()))?;
    let capture = match &opts.trace {
        None => None,
        Some(p) => Some((p.display().to_string(), read_capture(p)?)),
    };
    let ctx = Ctx {
        quick: opts.quick,
        out: opts.out.clone(),
        redis: RedisServer::start()?,
        capture,
        scratch: TempDir::new("paper")?,
    };
    let style = ProgressStyle::with_template("{prefix:<28} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
        .map_err(|e| e.to_string())?
        .progress_chars("=> ");
    let mut sections = Vec::new();
    let mut failed = Vec::new();
    for (_, name, run) in experiments {
        let bar = ProgressBar::new(1).with_style(style.clone()).with_prefix(short(name));
        let t = Instant::now();
        match run(&ctx, &bar) {
            Ok(mut sec) => {
                sec.text(&format!("*This experiment took {:.1} s.*", t.elapsed().as_secs_f64()));
                sections.push(sec);
            }
            Err(e) => {
                let mut sec = Section::new(name);
                sec.text(&format!("**Failed:** {e}"));
                sections.push(sec);
                failed.push(format!("{name}: {e}"));
            }
        }
        bar.finish_with_message("done");
        eprintln!("bench paper: {name}: {:.1} s", t.elapsed().as_secs_f64());
    }
    let info = RunInfo {
        command: opts.command,
        quick: opts.quick,
        input: match &ctx.capture {
            Some((p, r)) => format!("the capture `{p}` ({} packets)", r.len()),
            None => "generated traces (`streamnf gen-trace` generator, fixed seeds)".into(),
        },
        seconds: started.elapsed().as_secs_f64(),
        machine: format!(
            "{} cores, a private `redis-server` ({}) started for the run",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            redis_version()
        ),
    };
    let path = report::write_report(&opts.out, &info, &sections)?;
    println!("bench paper: wrote {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} experiment(s) failed: {}", failed.len(), failed.join("; ")))
    }
}

/// The part of an experiment's name before the colon, for its progress bar.
fn short(name: &str) -> String {
    name.split(':').next().unwrap_or(name).to_string()
}

fn read_capture(path: &Path) -> Result<Vec<RawRecord>, String> {
    let (records, damage) = streamnf_packet::trace::read_all(path).map_err(|e| e.to_string())?;
    if let Some(e) = damage {
        eprintln!("bench paper: {e} (using the {} packets before it)", records.len());
    }
    if records.is_empty() {
        return Err(format!("--trace {}: no packets", path.display()));
    }
    Ok(records)
}

/// `redis-server --version`'s version field, or "version unknown".
fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().find_map(|w| w.strip_prefix("v=").map(|v| format!("Redis {v}"))))
        .unwrap_or_else(|| "version unknown".into())
}
