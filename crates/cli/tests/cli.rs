//! End-to-end tests of the `streamnf` binary: trace generation, `run` on the example
//! chains (outputs checked with tshark), pcapng in and out, error reporting, `graph`,
//! `nfs`, `--help`, and hand-made malformed captures.
//!
//! Self-contained: every trace is generated with `streamnf gen-trace` or written by hand
//! here, so nothing under /work/shared is needed. tshark (/usr/bin/tshark) is required.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use streamnf_packet::trace::read_all;
use streamnf_packet::{LinkType, Packet, TcpFlags};

const BIN: &str = env!("CARGO_BIN_EXE_streamnf");
const FIGURE1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/figure1.toml");
const NAT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/nat.toml");

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// What one invocation of the binary did.
struct Ran {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn describe(&self) -> String {
        format!(
            "streamnf {}\n  exit: {:?}\n  stdout:\n{}\n  stderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

fn streamnf<I, S>(args: I) -> Ran
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_os_string()).collect();
    let out = Command::new(BIN)
        .args(&args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("cannot start the streamnf binary");
    Ran {
        args: args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and requires exit 0.
fn ok<I, S>(args: I) -> Ran
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let r = streamnf(args);
    assert_eq!(r.code, Some(0), "expected success\n{}", r.describe());
    assert!(!r.stderr.contains("panicked"), "panic on stderr\n{}", r.describe());
    r
}

/// Runs and requires the error contract: exit 2, no panic, exactly one
/// `streamnf: error:` message. Returns the message (everything after the prefix).
fn fails<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let r = streamnf(args);
    assert_ne!(r.code, Some(101), "the binary panicked\n{}", r.describe());
    assert!(!r.stderr.contains("panicked"), "panic on stderr\n{}", r.describe());
    assert_eq!(r.code, Some(2), "expected exit code 2\n{}", r.describe());
    assert_eq!(
        r.stderr.matches("streamnf: error:").count(),
        1,
        "expected exactly one `streamnf: error:` message\n{}",
        r.describe()
    );
    let at = r.stderr.find("streamnf: error: ").expect("error prefix");
    r.stderr[at + "streamnf: error: ".len()..].trim_end().to_string()
}

fn p(path: &Path) -> &OsStr {
    path.as_os_str()
}

/// `streamnf gen-trace -o DIR/NAME --packets N --seed S EXTRA...`.
fn gen_trace(dir: &Path, name: &str, packets: u64, seed: u64, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args: Vec<String> = vec![
        "gen-trace".into(),
        "-o".into(),
        out.display().to_string(),
        "--packets".into(),
        packets.to_string(),
        "--seed".into(),
        seed.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ok(&args);
    out
}

/// Records in a capture, read with streamnf's own reader; the capture must be undamaged.
fn count_records(path: &Path) -> u64 {
    let (recs, err) = read_all(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(err.is_none(), "{}: damaged: {err:?}", path.display());
    recs.len() as u64
}

/// Packets in a capture as counted by tshark. Fails with an install hint without tshark.
fn tshark_count(path: &Path) -> u64 {
    let out = match Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "frame.number"])
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run tshark ({e}): these tests check output captures with Wireshark's reader; \
             install it with `apt-get install -y tshark` (Debian/Ubuntu) or `dnf install wireshark-cli`"
        ),
    };
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count() as u64
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}\n{text}", path.display()))
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("`{key}` missing or not a count in {v}"))
}

fn counts(v: &Value, key: &str) -> BTreeMap<String, u64> {
    let obj =
        v.get(key).and_then(Value::as_object).unwrap_or_else(|| panic!("`{key}` missing or not an object"));
    obj.iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or_else(|| panic!("`{key}.{k}` is not a count: {n}"))))
        .collect()
}

/// Offsets of each record header in a classic little-endian pcap, micro- or nanosecond (24-byte global header,
/// 16-byte record headers).
fn pcap_record_offsets(bytes: &[u8]) -> Vec<usize> {
    assert!(
        [0xa1b2_c3d4u32, 0xa1b2_3c4d].iter().any(|m| bytes[..4] == m.to_le_bytes()),
        "expected a little-endian pcap"
    );
    let mut offsets = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        offsets.push(off);
        let caplen = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + caplen;
    }
    assert_eq!(off, bytes.len(), "generated pcap ends mid-record");
    offsets
}

/// The sink ports and edges of a chain file, read with a tiny line scanner (the files are
/// ours, with `from = "..."` / `to = "..."` on their own lines).
fn chain_edges(chain: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(chain).unwrap();
    let value = |line: &str, key: &str| -> Option<String> {
        let rest = line.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
        Some(rest.trim().trim_matches('"').to_string())
    };
    let mut edges = Vec::new();
    let mut from = None;
    for line in text.lines() {
        if let Some(f) = value(line, "from") {
            from = Some(f);
        } else if let Some(t) = value(line, "to") {
            edges.push((from.take().expect("`to` without `from`"), t));
        }
    }
    edges
}

fn chain_vertices(chain: &str) -> Vec<String> {
    let text = std::fs::read_to_string(chain).unwrap();
    let mut names = Vec::new();
    let mut in_vertex = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_vertex = l == "[[vertex]]";
        } else if in_vertex {
            if let Some(rest) = l.strip_prefix("name") {
                names.push(rest.trim_start().trim_start_matches('=').trim().trim_matches('"').to_string());
                in_vertex = false;
            }
        }
    }
    names
}

/// Runs `chain` on `trace` with every output, checks the `--summary-json` contract, the
/// output captures (with tshark) and the alerts file. Returns (summary, alerts).
fn run_and_check(chain: &str, trace: &Path, dir: &Path, packets: u64, pcapng: bool) -> (Value, Vec<Value>) {
    let out = dir.join("out");
    let alerts = dir.join("alerts.jsonl");
    let summary_path = dir.join("summary.json");
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("run"),
        OsStr::new(chain),
        OsStr::new("--trace"),
        p(trace),
        OsStr::new("--out"),
        p(&out),
        OsStr::new("--alerts"),
        p(&alerts),
        OsStr::new("--summary-json"),
        p(&summary_path),
        OsStr::new("--no-progress"),
    ];
    if pcapng {
        args.push(OsStr::new("--pcapng"));
    }
    let ran = ok(&args);
    assert!(ran.stderr.contains("packets in"), "human summary on stderr\n{}", ran.describe());
    let s = read_json(&summary_path);

    // The --summary-json contract (DESIGN.md "CLI contract").
    assert_eq!(u64_at(&s, "packets_in"), packets, "packets_in == packets generated");
    let packets_out = counts(&s, "packets_out");
    assert!(!packets_out.is_empty(), "packets_out names every sink port");
    let malformed = counts(&s, "malformed");
    let dropped = u64_at(&s, "dropped");
    let alert_counts = counts(&s, "alerts");
    let tp = s.get("throughput_pps").and_then(Value::as_f64).expect("throughput_pps");
    assert!(tp > 0.0, "throughput_pps > 0: {tp}");
    let latency = s.get("latency").and_then(Value::as_object).expect("latency object");
    for k in ["p50_ns", "p99_ns", "max_ns"] {
        assert!(latency.get(k).and_then(Value::as_u64).is_some(), "latency.{k}");
    }
    assert!(s.get("events").and_then(Value::as_array).is_some(), "events array");
    assert!(malformed.values().all(|&n| n == 0), "generated traces are well formed: {malformed:?}");

    // Each input packet of these chains reaches at most one sink once.
    let total_out: u64 = packets_out.values().sum();
    assert_eq!(total_out + dropped, packets, "packets_out + dropped == packets_in");

    // Per-vertex and per-task counters, for every vertex of the chain.
    let vertices = s.get("vertices").and_then(Value::as_object).expect("vertices object");
    let names = chain_vertices(chain);
    assert!(!names.is_empty());
    for name in &names {
        let v = vertices.get(name).unwrap_or_else(|| panic!("vertex `{name}` missing from summary"));
        assert!(v.get("nf").and_then(Value::as_str).is_some(), "vertices.{name}.nf");
        let pin = u64_at(v, "packets_in");
        u64_at(v, "packets_out");
        let tasks =
            v.get("tasks").and_then(Value::as_array).unwrap_or_else(|| panic!("vertices.{name}.tasks"));
        assert!(!tasks.is_empty(), "vertices.{name}.tasks is empty");
        let task_sum: u64 = tasks.iter().map(|t| u64_at(t, "packets_in")).sum();
        assert_eq!(task_sum, pin, "vertex {name}: task packets_in sum to the vertex's");
    }
    assert_eq!(vertices.len(), names.len(), "one summary entry per vertex: {:?}", vertices.keys());
    // The vertex reading the chain input saw every packet.
    let (_, first) = chain_edges(chain).into_iter().find(|(f, _)| f == "input").expect("an input edge");
    let first = first.split('.').next().unwrap();
    assert_eq!(u64_at(&vertices[first], "packets_in"), packets, "vertex {first} sees all input");

    // One capture per sink port; tshark agrees with the summary.
    let ext = if pcapng { "pcapng" } else { "pcap" };
    for (port, &n) in &packets_out {
        let file = out.join(format!("{port}.{ext}"));
        assert!(file.is_file(), "output capture {} missing", file.display());
        let magic = std::fs::read(&file).unwrap();
        if pcapng {
            assert_eq!(&magic[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "{} is pcapng", file.display());
        } else {
            assert!(
                [0xa1b2_c3d4u32, 0xa1b2_3c4d]
                    .iter()
                    .any(|m| magic[..4] == m.to_le_bytes() || magic[..4] == m.to_be_bytes()),
                "{} is pcap",
                file.display()
            );
        }
        assert_eq!(
            tshark_count(&file),
            n,
            "tshark count of {} == summary packets_out[{port}]",
            file.display()
        );
        assert_eq!(count_records(&file), n, "streamnf's reader agrees on {}", file.display());
    }

    // Alerts: JSON lines, one per alert counted in the summary.
    let text = std::fs::read_to_string(&alerts).expect("alerts file exists");
    let mut lines = Vec::new();
    let mut per_kind: BTreeMap<String, u64> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let a: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("alerts line {}: {e}: {line}", i + 1));
        let kind =
            a.get("kind").and_then(Value::as_str).unwrap_or_else(|| panic!("alert without kind: {line}"));
        let vertex =
            a.get("vertex").and_then(Value::as_str).unwrap_or_else(|| panic!("alert without vertex: {line}"));
        assert!(names.iter().any(|n| n == vertex), "alert from unknown vertex: {line}");
        assert!(a.get("clock").and_then(Value::as_u64).is_some(), "alert without clock: {line}");
        assert!(a.get("ts").and_then(Value::as_f64).is_some(), "alert without ts: {line}");
        if kind == "suspicious_source" {
            let ip = a.get("src_ip").and_then(Value::as_str).unwrap_or_else(|| panic!("no src_ip: {line}"));
            ip.parse::<IpAddr>().unwrap_or_else(|e| panic!("src_ip {ip}: {e}"));
        }
        *per_kind.entry(kind.to_string()).or_default() += 1;
        lines.push(a);
    }
    assert_eq!(
        per_kind,
        alert_counts.into_iter().filter(|(_, n)| *n > 0).collect(),
        "alerts file matches summary.alerts"
    );
    (s, lines)
}

/// SYN-only packets per source address in a trace.
fn syn_only_per_source(trace: &Path) -> HashMap<IpAddr, u64> {
    let (recs, err) = read_all(trace).unwrap();
    assert!(err.is_none());
    let mut m = HashMap::new();
    for r in recs {
        let pkt = r.into_packet();
        let (Some(ip), Some(flags)) = (pkt.hdr.ip, pkt.hdr.tcp_flags()) else {
            continue;
        };
        if flags.has(TcpFlags::SYN) && !flags.has(TcpFlags::ACK) {
            *m.entry(ip.src).or_insert(0) += 1;
        }
    }
    m
}

// ---------------------------------------------------------------------------------------
// 1. gen-trace
// ---------------------------------------------------------------------------------------

#[test]
fn gen_trace_is_deterministic_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_trace(dir.path(), "a.pcap", 1234, 7, &["--scan"]);
    let b = gen_trace(dir.path(), "b.pcap", 1234, 7, &["--scan"]);
    let c = gen_trace(dir.path(), "c.pcap", 1234, 8, &["--scan"]);
    let (a, b, c) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), std::fs::read(c).unwrap());
    assert!(a == b, "same seed and options give identical bytes");
    assert!(a != c, "a different seed gives a different trace");

    for (name, packets, extra) in [
        ("one.pcap", 1u64, &[][..]),
        ("plain.pcap", 1234, &[][..]),
        ("scan.pcap", 3001, &["--scan"][..]),
        ("trojan.pcap", 2500, &["--trojan", "--scan", "--xss", "0.1"][..]),
        ("ng.pcapng", 777, &["--scan"][..]),
    ] {
        let t = gen_trace(dir.path(), name, packets, 3, extra);
        assert_eq!(count_records(&t), packets, "{name}: exactly --packets packets");
        assert_eq!(tshark_count(&t), packets, "{name}: tshark agrees");
    }
}

#[test]
fn gen_trace_pcapng_by_extension_same_packets() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = gen_trace(dir.path(), "x.pcap", 500, 5, &["--scan"]);
    let ng = gen_trace(dir.path(), "x.pcapng", 500, 5, &["--scan"]);
    assert_eq!(&std::fs::read(&ng).unwrap()[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "pcapng section header block");
    let (a, _) = read_all(&pcap).unwrap();
    let (b, _) = read_all(&ng).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.data, y.data, "same frames in both formats");
        assert_eq!(x.ts_ns / 1000, y.ts_ns / 1000, "same timestamps (to the microsecond)");
    }
}

// ---------------------------------------------------------------------------------------
// 2. run on the example chains
// ---------------------------------------------------------------------------------------

#[test]
fn run_figure1_on_generated_trace() {
    let dir = tempfile::tempdir().unwrap();
    let packets = 6000;
    let trace = gen_trace(dir.path(), "t.pcap", packets, 11, &["--scan", "--xss", "0.05"]);
    let (s, alerts) = run_and_check(FIGURE1, &trace, dir.path(), packets, false);

    let alert_counts = counts(&s, "alerts");
    assert!(
        alert_counts.get("suspicious_source").copied().unwrap_or(0) >= 1,
        "the SYN scanner is flagged: {alert_counts:?}"
    );
    let packets_out = counts(&s, "packets_out");
    assert_eq!(packets_out.keys().collect::<Vec<_>>(), ["out"], "figure1 has one sink port, out");
    let v = &s["vertices"];
    assert_eq!(u64_at(&v["limiter"], "packets_out"), packets_out["out"], "the limiter feeds output.out");
    assert!(u64_at(&v["dpi"], "packets_in") > 0, "flagged traffic is copied to the DPI");

    // The flagged sources are the ones that sent a burst of SYN-only packets, and the
    // heaviest SYN-only sender (the scanner) is among them.
    let syn = syn_only_per_source(&trace);
    let flagged: BTreeSet<IpAddr> = alerts
        .iter()
        .filter(|a| a["kind"] == "suspicious_source")
        .map(|a| a["src_ip"].as_str().unwrap().parse().unwrap())
        .collect();
    for ip in &flagged {
        assert!(
            syn.get(ip).copied().unwrap_or(0) > 20,
            "{ip} flagged with only {:?} SYN-only packets",
            syn.get(ip)
        );
    }
    let (top, _) = syn.iter().max_by_key(|(_, n)| **n).expect("the trace has SYNs");
    assert!(flagged.contains(top), "top SYN-only sender {top} flagged (flagged: {flagged:?})");
    // And the limiter throttled something of theirs.
    assert!(u64_at(&s, "dropped") > 0, "the rate limiter drops flagged traffic");
}

#[test]
fn run_nat_on_generated_trace() {
    let dir = tempfile::tempdir().unwrap();
    let packets = 4000;
    let trace = gen_trace(dir.path(), "t.pcap", packets, 12, &["--scan", "--xss", "0.05"]);
    let (s, _) = run_and_check(NAT, &trace, dir.path(), packets, false);
    let packets_out = counts(&s, "packets_out");
    assert_eq!(packets_out.keys().collect::<Vec<_>>(), ["out"]);
    assert!(packets_out["out"] > 0, "NAT forwards traffic");

    // Outbound packets from private sources leave with the external address.
    let (outs, _) = read_all(dir.path().join("out/out.pcap")).unwrap();
    let private = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(_) => false,
    };
    let mut translated = 0;
    for r in outs {
        let pkt = Packet::new(LinkType::Ethernet, r.data, r.ts_ns);
        if let (Some(ip), Some(_)) = (pkt.hdr.ip, pkt.hdr.transport.ports()) {
            assert!(
                !private(&ip.src) || private(&ip.dst),
                "untranslated private source {} -> {}",
                ip.src,
                ip.dst
            );
            translated += usize::from(ip.src == "100.64.0.1".parse::<IpAddr>().unwrap());
        }
    }
    assert!(translated > 0, "some packets carry the external address");
}

#[test]
fn runs_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 3000, 21, &["--scan"]);
    let mut outputs = Vec::new();
    for i in 0..2 {
        let d = dir.path().join(format!("r{i}"));
        ok([
            OsStr::new("run"),
            OsStr::new(FIGURE1),
            OsStr::new("--trace"),
            p(&trace),
            OsStr::new("--out"),
            p(&d),
            OsStr::new("--alerts"),
            p(&d.join("alerts.jsonl")),
            OsStr::new("-q"),
        ]);
        outputs.push((
            std::fs::read(d.join("out.pcap")).unwrap(),
            std::fs::read(d.join("alerts.jsonl")).unwrap(),
        ));
    }
    assert!(outputs[0] == outputs[1], "same trace and chain give identical output capture and alerts");
}

// ---------------------------------------------------------------------------------------
// 3. pcapng in and out
// ---------------------------------------------------------------------------------------

#[test]
fn pcapng_input_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let packets = 3000;
    let ng = gen_trace(dir.path(), "t.pcapng", packets, 13, &["--scan"]);
    let classic = gen_trace(dir.path(), "t.pcap", packets, 13, &["--scan"]);

    let ng_dir = dir.path().join("ng");
    std::fs::create_dir(&ng_dir).unwrap();
    let (s_ng, _) = run_and_check(FIGURE1, &ng, &ng_dir, packets, true);
    assert!(ng_dir.join("out/out.pcapng").is_file());
    assert!(!ng_dir.join("out/out.pcap").exists(), "--pcapng writes only pcapng");

    let pc_dir = dir.path().join("pcap");
    std::fs::create_dir(&pc_dir).unwrap();
    let (s_pc, _) = run_and_check(FIGURE1, &classic, &pc_dir, packets, false);

    // The same packets in either container give the same run.
    for k in ["packets_out", "alerts", "malformed"] {
        assert_eq!(s_ng[k], s_pc[k], "{k} equal for pcap and pcapng input");
    }
    assert_eq!(s_ng["dropped"], s_pc["dropped"]);
    let (a, _) = read_all(ng_dir.join("out/out.pcapng")).unwrap();
    let (b, _) = read_all(pc_dir.join("out/out.pcap")).unwrap();
    assert!(a.iter().map(|r| &r.data).eq(b.iter().map(|r| &r.data)), "same output frames in pcapng and pcap");
}

// ---------------------------------------------------------------------------------------
// 4. errors: exit 2, one message naming the place, never a panic
// ---------------------------------------------------------------------------------------

fn figure1_with(dir: &Path, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let text = std::fs::read_to_string(FIGURE1).unwrap();
    let changed = edit(&text);
    assert_ne!(changed, text, "the edit changed the chain");
    let path = dir.join(name);
    std::fs::write(&path, changed).unwrap();
    path
}

fn run_chain_err(chain: &Path, trace: &Path) -> String {
    fails([OsStr::new("run"), p(chain), OsStr::new("--trace"), p(trace)])
}

#[test]
fn error_chain_syntax_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 10, 1, &[]);
    let chain = dir.path().join("broken.toml");
    std::fs::write(&chain, "name = \"broken\"\n\n[[vertex]\nname = \"a\"\nnf = \"forward\"\n").unwrap();
    let msg = run_chain_err(&chain, &trace);
    assert!(msg.contains(&format!("{}:3", chain.display())), "names file:line: {msg}");

    // graph reports the same way.
    let msg = fails([OsStr::new("graph"), p(&chain)]);
    assert!(msg.contains(&format!("{}:3", chain.display())), "graph names file:line: {msg}");
}

#[test]
fn error_missing_chain_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 10, 1, &[]);
    let chain = dir.path().join("nowhere.toml");
    let msg = run_chain_err(&chain, &trace);
    assert!(msg.contains(&chain.display().to_string()), "names the chain file: {msg}");
}

#[test]
fn error_unknown_nf_names_vertex() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 10, 1, &[]);
    let chain =
        figure1_with(dir.path(), "unknown.toml", |t| t.replace("nf = \"dpi\"", "nf = \"deep_inspector\""));
    let msg = run_chain_err(&chain, &trace);
    assert!(msg.contains("\"dpi\""), "names the vertex: {msg}");
    assert!(msg.contains("deep_inspector"), "names the NF: {msg}");
    assert!(msg.contains(&chain.display().to_string()), "names the file: {msg}");
    assert!(msg.contains("light_ids"), "lists the built-in NFs: {msg}");
}

#[test]
fn error_bad_filter_names_edge_expression_column() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 10, 1, &[]);
    let chain = figure1_with(dir.path(), "badfilter.toml", |t| {
        t.replace(
            "from = \"ids.out\"\nto = \"limiter.in\"\n",
            "from = \"ids.out\"\nto = \"limiter.in\"\nfilter = \"tcp and port foo\"\n",
        )
    });
    let msg = run_chain_err(&chain, &trace);
    assert!(msg.contains("ids.out -> limiter.in"), "names the edge: {msg}");
    assert!(msg.contains("tcp and port foo"), "quotes the expression: {msg}");
    // `foo` starts at column 14 of the expression (1-based).
    assert!(msg.contains("column 14"), "names the column: {msg}");
    assert!(msg.contains(&chain.display().to_string()), "names the file: {msg}");
}

#[test]
fn error_missing_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("no-such-trace.pcap");
    let msg = run_chain_err(Path::new(FIGURE1), &trace);
    assert!(msg.contains(&trace.display().to_string()), "names the trace: {msg}");
    assert!(msg.contains("cannot open"), "says why: {msg}");
}

#[test]
fn error_not_a_capture_and_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pcap");
    std::fs::write(&text, "this is not a capture, just some words\n").unwrap();
    let msg = run_chain_err(Path::new(FIGURE1), &text);
    assert!(msg.contains(&text.display().to_string()), "names the file: {msg}");
    assert!(msg.contains("not a pcap or pcapng"), "says what is wrong: {msg}");

    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let msg = run_chain_err(Path::new(FIGURE1), &empty);
    assert!(msg.contains(&empty.display().to_string()) && msg.contains("empty"), "{msg}");

    // A global header cut short.
    let g = gen_trace(dir.path(), "g.pcap", 5, 1, &[]);
    let half = dir.path().join("half-header.pcap");
    std::fs::write(&half, &std::fs::read(g).unwrap()[..13]).unwrap();
    let msg = run_chain_err(Path::new(FIGURE1), &half);
    assert!(msg.contains(&half.display().to_string()) && msg.contains("byte 0"), "{msg}");
}

/// Runs figure1 on a damaged trace with --summary-json and checks: exit 2, the message
/// names the file and the byte offset, and the `good` records before the damage were
/// processed (summary written, packets_in == good, outputs agree with tshark).
fn check_damaged(dir: &Path, trace: &Path, offset: usize, good: u64) {
    let summary = dir.join(format!("{}.json", trace.file_name().unwrap().to_string_lossy()));
    let out = dir.join(format!("{}.out", trace.file_name().unwrap().to_string_lossy()));
    let msg = fails([
        OsStr::new("run"),
        OsStr::new(FIGURE1),
        OsStr::new("--trace"),
        p(trace),
        OsStr::new("--summary-json"),
        p(&summary),
        OsStr::new("--out"),
        p(&out),
    ]);
    assert!(msg.contains(&trace.display().to_string()), "names the file: {msg}");
    assert!(msg.contains(&format!("byte {offset}")), "names byte {offset}: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    let s = read_json(&summary);
    assert_eq!(u64_at(&s, "packets_in"), good, "the complete records before the damage were processed");
    assert!(
        s["trace_error"].as_str().is_some_and(|e| e.contains(&format!("byte {offset}"))),
        "summary.trace_error: {}",
        s["trace_error"]
    );
    let n = counts(&s, "packets_out")["out"];
    assert_eq!(tshark_count(&out.join("out.pcap")), n, "partial run's output is a valid capture");
}

#[test]
fn error_truncated_trace_processes_packets_before_damage() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 2000, 4, &["--scan"]);
    let bytes = std::fs::read(&trace).unwrap();
    let offsets = pcap_record_offsets(&bytes);
    assert_eq!(offsets.len(), 2000);

    // Cut in the middle of a record's data.
    let k = 1234;
    let caplen = u32::from_le_bytes(bytes[offsets[k] + 8..offsets[k] + 12].try_into().unwrap()) as usize;
    assert!(caplen > 2);
    let cut = dir.path().join("cut-data.pcap");
    std::fs::write(&cut, &bytes[..offsets[k] + 16 + caplen / 2]).unwrap();
    check_damaged(dir.path(), &cut, offsets[k], k as u64);

    // Cut in the middle of a record header.
    let k = 777;
    let cut = dir.path().join("cut-header.pcap");
    std::fs::write(&cut, &bytes[..offsets[k] + 7]).unwrap();
    check_damaged(dir.path(), &cut, offsets[k], k as u64);

    // An absurd captured length.
    let k = 1500;
    let mut absurd = bytes.clone();
    absurd[offsets[k] + 8..offsets[k] + 12].copy_from_slice(&0x7fff_ff00u32.to_le_bytes());
    let bad = dir.path().join("absurd-caplen.pcap");
    std::fs::write(&bad, &absurd).unwrap();
    check_damaged(dir.path(), &bad, offsets[k], k as u64);
}

#[test]
fn error_truncated_pcapng() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcapng", 300, 4, &[]);
    let bytes = std::fs::read(&trace).unwrap();
    // Cut through the last packet block; every earlier packet must be processed.
    let cut = dir.path().join("cut.pcapng");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let summary = dir.path().join("s.json");
    let msg = fails([
        OsStr::new("run"),
        OsStr::new(FIGURE1),
        OsStr::new("--trace"),
        p(&cut),
        OsStr::new("--summary-json"),
        p(&summary),
        OsStr::new("-q"),
    ]);
    assert!(msg.contains(&cut.display().to_string()) && msg.contains("byte "), "{msg}");
    assert_eq!(u64_at(&read_json(&summary), "packets_in"), 299);
}

#[test]
fn error_bad_store_url_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 10, 1, &[]);
    // Unparsable URLs, and a well-formed one nothing listens on (port 1).
    for url in ["redis://host", "redis://h:99999", "mysql://db:3306", "localhost:6379", "redis://127.0.0.1:1"]
    {
        let msg = fails([
            OsStr::new("run"),
            OsStr::new(FIGURE1),
            OsStr::new("--trace"),
            p(&trace),
            OsStr::new("--store"),
            OsStr::new(url),
        ]);
        assert!(msg.contains(url), "names the URL {url}: {msg}");
    }
}

#[test]
fn error_bad_pace_workers_instances() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 10, 1, &[]);
    let run = |extra: &[&str]| {
        let mut args = vec![OsStr::new("run"), OsStr::new(FIGURE1), OsStr::new("--trace"), p(&trace)];
        args.extend(extra.iter().map(OsStr::new));
        fails(args)
    };
    let msg = run(&["--pace", "bogus"]);
    assert!(msg.contains("--pace") && msg.contains("bogus"), "{msg}");
    let msg = run(&["--instances", "nosuch=2"]);
    assert!(msg.contains("--instances") && msg.contains("nosuch"), "{msg}");
    assert!(msg.contains("ids"), "lists the vertices: {msg}");
    let msg = run(&["--instances", "ids"]);
    assert!(msg.contains("--instances") && msg.contains("VERTEX=N"), "{msg}");
    let msg = run(&["--instances", "ids=zero"]);
    assert!(msg.contains("ids=zero"), "{msg}");
    let msg = run(&["--workers", "0"]);
    assert!(msg.contains("--workers"), "{msg}");
    let msg = run(&["--instances", "ids=5000"]);
    assert!(msg.contains("1 to 4096"), "{msg}");
}

#[test]
fn parallel_run_matches_the_single_instance_run() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 3000, 5, &["--scan"]);
    let summary = |name: &str, extra: &[&str]| -> serde_json::Value {
        let json = dir.path().join(format!("{name}.json"));
        let out = dir.path().join(name);
        let mut args = vec![
            OsStr::new("run"),
            OsStr::new(FIGURE1),
            OsStr::new("--trace"),
            p(&trace),
            OsStr::new("--summary-json"),
            p(&json),
            OsStr::new("--out"),
            p(&out),
            OsStr::new("-q"),
        ];
        args.extend(extra.iter().map(OsStr::new));
        ok(args);
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let single = summary("single", &["--workers", "1"]);
    let par = summary("par", &["--workers", "2", "--instances", "ids=3", "--instances", "limiter=2"]);
    assert_eq!(single["workers"], 1);
    assert_eq!(par["workers"], 2);
    assert_eq!(par["vertices"]["ids"]["tasks"].as_array().map(Vec::len), Some(3));
    for k in ["packets_in", "packets_out", "alerts", "dropped"] {
        assert_eq!(single[k], par[k], "{k}");
    }
    assert!(par["manager"]["vertices"]["ids"].is_object(), "{}", par["manager"]);
    assert!(single["manager"].is_null());
    // Every task that processed messages has processing latencies (one message in 64 timed).
    let tasks = par["manager"]["vertices"]["ids"]["tasks"].as_array().expect("ids tasks");
    let busy: Vec<&serde_json::Value> = tasks.iter().filter(|t| t["packets"].as_u64() > Some(640)).collect();
    assert!(!busy.is_empty(), "{tasks:?}");
    for t in busy {
        let lat = &t["latency"];
        assert!(lat["samples"].as_u64() > Some(0), "task {}: no latency samples: {lat}", t["task"]);
        assert!(
            lat["p50_ns"].as_u64() > Some(0) && lat["p99_ns"].as_u64() >= lat["p50_ns"].as_u64(),
            "{lat}"
        );
    }
    // Same packets per sink port, as multisets of frames.
    let frames = |name: &str| {
        let (recs, err) = streamnf_packet::trace::read_all(dir.path().join(name).join("out.pcap")).unwrap();
        assert!(err.is_none());
        let mut v: Vec<Vec<u8>> = recs.into_iter().map(|r| r.data).collect();
        v.sort();
        v
    };
    let (a, b) = (frames("single"), frames("par"));
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn gen_trace_unwritable_output_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("no/such/dir/t.pcap");
    let msg = fails([
        OsStr::new("gen-trace"),
        OsStr::new("-o"),
        p(&target),
        OsStr::new("--packets"),
        OsStr::new("5"),
    ]);
    assert!(msg.contains(&target.display().to_string()), "names the file: {msg}");
}

// ---------------------------------------------------------------------------------------
// 5. graph, nfs, help
// ---------------------------------------------------------------------------------------

/// Checks that `dot` (from `streamnf graph`) has a node for every vertex and sink, and a
/// `->` line for every edge of `chain`, labelled with the ports.
fn check_logical_dot(chain: &str, dot: &str) {
    assert!(dot.trim_start().starts_with("digraph"), "a digraph:\n{dot}");
    assert!(dot.trim_end().ends_with('}'), "closed:\n{dot}");
    for v in chain_vertices(chain) {
        assert!(dot.contains(&format!("\"{v}\" [")), "node for vertex {v}:\n{dot}");
    }
    let edges = chain_edges(chain);
    let node = |e: &str| -> String {
        if e == "input" || e.starts_with("output.") {
            e.to_string()
        } else {
            e.split('.').next().unwrap().to_string()
        }
    };
    let port = |e: &str| -> String {
        if e == "input" || e.starts_with("output.") {
            String::new()
        } else {
            e.split_once('.').map(|x| x.1.to_string()).unwrap_or_default()
        }
    };
    let arrows: Vec<&str> = dot.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(arrows.len(), edges.len(), "one arrow per edge:\n{dot}");
    for (from, to) in &edges {
        if to.starts_with("output.") {
            assert!(dot.contains(&format!("\"{to}\" [")), "node for sink {to}:\n{dot}");
        }
        let head = format!("\"{}\" -> \"{}\"", node(from), node(to));
        let label = format!("{} → {}", port(from), port(to));
        assert!(
            arrows.iter().any(|l| l.contains(&head) && l.contains(label.trim())),
            "edge {from} -> {to} ({head}, label {label:?}) in:\n{dot}"
        );
    }
}

#[test]
fn graph_prints_every_vertex_and_edge() {
    for chain in [FIGURE1, NAT] {
        let r = ok(["graph", chain]);
        check_logical_dot(chain, &r.stdout);
    }
}

#[test]
fn graph_physical() {
    let r = ok(["graph", "--physical", FIGURE1]);
    let dot = &r.stdout;
    assert!(dot.trim_start().starts_with("digraph") && dot.trim_end().ends_with('}'), "{dot}");
    for v in chain_vertices(FIGURE1) {
        assert!(dot.contains(&format!("\"{v}/0\"")), "task {v}/0:\n{dot}");
    }
    assert!(dot.contains("\"root\" -> \"ids/0\""), "{dot}");
    assert!(dot.contains("\"limiter/0\" -> \"output.out\""), "{dot}");
    assert!(dot.contains("\"ids/0\" -> \"dpi/0\""), "{dot}");
    assert_eq!(dot.lines().filter(|l| l.contains(" -> ")).count(), chain_edges(FIGURE1).len(), "{dot}");
    // With instances: every task, every task pair an edge can join, and the split key.
    let r = ok(["graph", "--physical", FIGURE1, "--instances", "ids=3", "--instances", "limiter=2"]);
    let dot = &r.stdout;
    assert!(dot.contains("\"ids/2\"") && dot.contains("\"limiter/1\""), "{dot}");
    assert!(dot.contains("ids (light_ids), split by [src_ip]"), "{dot}");
    assert!(dot.contains("\"ids/2\" -> \"limiter/1\""), "{dot}");
    let msg = fails(["graph", "--physical", FIGURE1, "--instances", "nosuch=2"]);
    assert!(msg.contains("nosuch"), "{msg}");
}

#[test]
fn nfs_lists_builtins() {
    let r = ok(["nfs"]);
    let names: BTreeSet<&str> = r.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    for nf in ["nat", "light_ids", "rate_limiter", "dpi", "forward"] {
        assert!(names.contains(nf), "`streamnf nfs` lists {nf}:\n{}", r.stdout);
    }
    for line in r.stdout.lines() {
        assert!(line.split_whitespace().count() > 1, "every NF has a description: {line}");
    }
}

#[test]
fn help_texts() {
    let r = ok(["run", "--help"]);
    for flag in
        ["--trace", "--out", "--alerts", "--summary-json", "--store", "--pcapng", "--pace", "--instances"]
    {
        assert!(r.stdout.contains(flag), "run --help mentions {flag}:\n{}", r.stdout);
    }
    let r = ok(["--help"]);
    for cmd in ["run", "gen-trace", "graph", "bench", "nfs"] {
        assert!(r.stdout.contains(cmd), "--help mentions {cmd}:\n{}", r.stdout);
    }
    let r = ok(["gen-trace", "--help"]);
    for flag in ["--packets", "--seed", "--scan", "--trojan", "--flows"] {
        assert!(r.stdout.contains(flag), "gen-trace --help mentions {flag}:\n{}", r.stdout);
    }
    let r = ok(["--version"]);
    assert!(r.stdout.starts_with("streamnf "), "{}", r.stdout);
    // Usage errors are clap's (exit 2), not panics.
    let r = streamnf(["run"]);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(!r.stderr.contains("panicked"));
}

// ---------------------------------------------------------------------------------------
// 6. malformed packets
// ---------------------------------------------------------------------------------------

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 =
        h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let ck = ipv4_checksum(&h);
    h[10..12].copy_from_slice(&ck.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        b.extend_from_slice(&(i as u32 * 10).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn malformed_packets_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = ([10, 0, 0, 1], [192, 0, 2, 80]);
    let good = vec![
        ethernet(0x0800, &ipv4(a, b, 6, &tcp(40000, 80, TcpFlags::SYN, b""))),
        ethernet(0x0800, &ipv4(b, a, 6, &tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK, b""))),
        ethernet(0x0800, &ipv4(a, b, 6, &tcp(40000, 80, TcpFlags::ACK, b""))),
        ethernet(
            0x0800,
            &ipv4(a, b, 6, &tcp(40000, 80, TcpFlags::ACK | TcpFlags::PSH, b"GET / HTTP/1.1\r\n\r\n")),
        ),
    ];
    let good_tcp = ipv4(a, b, 6, &tcp(40000, 80, TcpFlags::ACK, b""));
    let mut bad_version = good_tcp.clone();
    bad_version[0] = 0x55;
    let mut ihl_too_big = good_tcp.clone();
    ihl_too_big[0] = 0x4f; // 60-byte header in a 40-byte packet
    let mut garbage = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..90 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("truncated_link", vec![0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5]),
        ("truncated_link", Vec::new()),
        ("truncated_ipv4", ethernet(0x0800, &good_tcp[..12])),
        ("truncated_ipv4", ethernet(0x0800, &ihl_too_big)),
        ("bad_ipv4_header", ethernet(0x0800, &bad_version)),
        ("bad_ipv4_header", ethernet(0x0800, &[0x65; 40])),
        ("truncated_tcp", ethernet(0x0800, &ipv4(a, b, 6, &[0x9c, 0x40, 0, 80, 0, 0, 0, 1]))),
        ("truncated_udp", ethernet(0x0800, &ipv4(a, b, 17, &[0x9c, 0x40]))),
        ("bad_vlan", ethernet(0x8100, &[0, 5, 0x81, 0, 0, 6, 0x81, 0, 0, 7, 0x08, 0x00])),
        ("truncated_ipv6", ethernet(0x86dd, &[0x60; 20])),
        ("bad_ipv6_header", ethernet(0x86dd, &[0x40; 40])),
    ];
    // Good and bad frames interleaved, plus garbage that may or may not parse.
    let mut frames = Vec::new();
    let mut bad_iter = bad.iter();
    for g in &good {
        frames.push(g.clone());
        for _ in 0..3 {
            if let Some((_, f)) = bad_iter.next() {
                frames.push(f.clone());
            }
        }
    }
    frames.extend(bad_iter.map(|(_, f)| f.clone()));
    frames.push(garbage.clone());
    frames.push(ethernet(0x0800, &garbage));
    frames.push(ethernet(0x86dd, &garbage));
    let total = frames.len() as u64;
    let trace = dir.path().join("malformed.pcap");
    write_pcap(&trace, &frames);
    assert_eq!(count_records(&trace), total);
    assert_eq!(tshark_count(&trace), total, "the hand-made capture is a valid pcap");

    let summary = dir.path().join("s.json");
    let out = dir.path().join("out");
    ok([
        OsStr::new("run"),
        OsStr::new(FIGURE1),
        OsStr::new("--trace"),
        p(&trace),
        OsStr::new("--out"),
        p(&out),
        OsStr::new("--summary-json"),
        p(&summary),
    ]);
    let s = read_json(&summary);
    assert_eq!(u64_at(&s, "packets_in"), total, "every record is counted in");
    let malformed = counts(&s, "malformed");
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (reason, _) in &bad {
        *expected.entry(reason).or_default() += 1;
    }
    for (reason, n) in &expected {
        let got = malformed.get(*reason).copied().unwrap_or(0);
        assert!(got >= *n, "malformed.{reason}: {got} < {n} ({malformed:?})");
    }
    let sum: u64 = malformed.values().sum();
    assert!(sum >= bad.len() as u64 && sum <= bad.len() as u64 + 3, "malformed total {sum} ({malformed:?})");
    // Policy drop: the good frames (and at most the unparsed-but-not-malformed garbage) pass.
    let n_out = counts(&s, "packets_out")["out"];
    assert!(n_out >= good.len() as u64 && n_out <= total - sum, "packets_out {n_out}");
    assert!(u64_at(&s, "dropped") >= sum, "malformed packets are dropped (policy drop)");
    assert_eq!(tshark_count(&out.join("out.pcap")), n_out);
    // The good frames come out unchanged and in order.
    let (outs, _) = read_all(out.join("out.pcap")).unwrap();
    let good_out: Vec<&Vec<u8>> = outs.iter().map(|r| &r.data).filter(|d| good.contains(d)).collect();
    assert_eq!(good_out, good.iter().collect::<Vec<_>>());
}

#[test]
fn check_reports_equivalence_and_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 2000, 9, &["--scan"]);
    let r = ok(["check", FIGURE1, "--trace"]
        .map(OsStr::new)
        .into_iter()
        .chain([p(&trace)])
        .chain(["--workers", "2", "--instances", "ids=3", "--instances", "dpi=2"].map(OsStr::new)));
    assert!(r.stdout.starts_with("EQUIVALENT: 2000 packets"), "{}", r.describe());
    // Broadcasting packets to two stateless instances duplicates them: not equivalent.
    let chain = dir.path().join("dup.toml");
    std::fs::write(
        &chain,
        "name = \"dup\"\n[[vertex]]\nname = \"f\"\nnf = \"forward\"\ninstances = 2\n\
         [[edge]]\nfrom = \"input\"\nto = \"f.in\"\npartition = \"broadcast\"\n\
         [[edge]]\nfrom = \"f.out\"\nto = \"output.out\"\n",
    )
    .unwrap();
    let json = dir.path().join("check.json");
    let r = streamnf([
        OsStr::new("check"),
        p(&chain),
        OsStr::new("--trace"),
        p(&trace),
        OsStr::new("--summary-json"),
        p(&json),
    ]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(
        r.stdout.contains("NOT EQUIVALENT") && r.stdout.contains("sink `out`: 2000 packets vs 4000"),
        "{}",
        r.describe()
    );
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["equivalent"], false);
    // Churn: random events and a failover with guarantees, the checked run's summary
    // lists them; the same failover without guarantees is caught.
    let json = dir.path().join("churn.json");
    let r = ok(["check", FIGURE1, "--trace"]
        .map(OsStr::new)
        .into_iter()
        .chain([p(&trace)])
        .chain(
            [
                "--workers",
                "2",
                "--random-events",
                "4",
                "--seed",
                "3",
                "--event",
                "at=50% fail ids/0",
                "--summary-json",
            ]
            .map(OsStr::new),
        )
        .chain([p(&json)]));
    assert!(r.stdout.contains("EQUIVALENT") && r.stdout.contains("5 events"), "{}", r.describe());
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["events"].as_array().map(Vec::len), Some(5), "{j}");
    assert_eq!(j["equivalent"], true);
    let r =
        streamnf(["check", FIGURE1, "--trace"].map(OsStr::new).into_iter().chain([p(&trace)]).chain(
            ["--workers", "2", "--event", "at=40% fail ids/0", "--guarantees", "off"].map(OsStr::new),
        ));
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stdout.contains("messages lost (no replay)"), "{}", r.describe());
    // A paced checked run (the root runs the chain between packets) under churn.
    let r = ok(["check", FIGURE1, "--trace"].map(OsStr::new).into_iter().chain([p(&trace)]).chain(
        [
            "--workers",
            "2",
            "--pace",
            "50000",
            "--event",
            "at=30% scale ids to 2",
            "--event",
            "at=60% fail ids/0",
        ]
        .map(OsStr::new),
    ));
    assert!(r.stdout.contains("EQUIVALENT") && r.stdout.contains("2 events"), "{}", r.describe());
    let msg = fails(
        ["check", FIGURE1, "--trace"]
            .map(OsStr::new)
            .into_iter()
            .chain([p(&trace)])
            .chain(["--pace", "fast"].map(OsStr::new)),
    );
    assert!(msg.contains("--pace") && msg.contains("fast"), "{msg}");
    // A bad spec is one clear error naming the column; a bad instance names the event.
    let event_error = |spec: &str| {
        fails(
            ["check", FIGURE1, "--trace"]
                .map(OsStr::new)
                .into_iter()
                .chain([p(&trace)])
                .chain([OsStr::new("--event"), OsStr::new(spec)]),
        )
    };
    let msg = event_error("at=40% explode ids/0");
    assert!(msg.contains("column 8") && msg.contains("unknown action `explode`"), "{msg}");
    let msg = event_error("at=40% fail ids/5");
    assert!(msg.contains("event `at=40% fail ids/5`") && msg.contains("no instance 5"), "{msg}");
    let msg = event_error("at=40% fail nope/0");
    assert!(msg.contains("no vertex `nope`"), "{msg}");
}

/// A task slowed by an injected delay is reported as a straggler by its processing latency
/// (the vertex manager times one message in 64 per task, delay included), its sibling not.
#[test]
fn a_slow_task_is_a_straggler_by_latency() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "t.pcap", 30_000, 9, &[]);
    let json = dir.path().join("s.json");
    ok([
        OsStr::new("run"),
        OsStr::new(NAT),
        OsStr::new("--trace"),
        p(&trace),
        OsStr::new("--summary-json"),
        p(&json),
    ]
    .into_iter()
    .chain(
        ["--workers", "2", "--instances", "nat=2", "--event", "at=0% straggle nat/0 delay=20us", "-q"]
            .map(OsStr::new),
    ));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let m = &s["manager"];
    let tasks = m["vertices"]["nat"]["tasks"].as_array().expect("nat tasks");
    let p50 = |t: usize| tasks[t]["latency"]["p50_ns"].as_u64().unwrap_or(0);
    assert!(p50(0) >= 20_000, "the delay counts as processing time: {}", m);
    assert!(p50(1) < 20_000, "{m}");
    let by_latency: Vec<&serde_json::Value> = m["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| {
            h["kind"] == "straggler_suspected" && h["reason"].as_str().is_some_and(|r| r.contains("p50"))
        })
        .collect();
    assert!(!by_latency.is_empty(), "no straggler hint by latency: {m}");
    assert!(by_latency.iter().all(|h| h["task"] == 0), "{by_latency:?}");
}

// ---------------------------------------------------------------------------------------
// bench paper
// ---------------------------------------------------------------------------------------

/// `bench paper --quick --only ... --trace`: the report has the chosen experiments, each
/// plot it links exists and is an SVG, nothing failed, and the input is the given capture.
/// (The whole quick run is left to `bash .ci/run`'s callers: it takes a minute in release.)
#[test]
fn bench_paper_writes_a_report_with_its_plots() {
    let dir = tempfile::tempdir().unwrap();
    let trace = gen_trace(dir.path(), "paper.pcap", 3_000, 7, &["--scan"]);
    let out = dir.path().join("report");
    let r = ok([
        OsStr::new("bench"),
        OsStr::new("paper"),
        OsStr::new("--quick"),
        OsStr::new("--only"),
        OsStr::new("fig10,fig12"),
        OsStr::new("--trace"),
        trace.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
    ]);
    assert!(r.stdout.contains("wrote"), "{}", r.describe());
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for want in
        ["## Headlines", "## Figure 10", "## Figure 12", "paper.pcap", "| NAT | redis | EO (externalized) |"]
    {
        assert!(md.contains(want), "report lacks {want:?}:\n{md}");
    }
    assert!(!md.contains("## Table 2"), "--only left Table 2 out");
    assert!(!md.contains("Failed"), "{md}");
    let plots: Vec<&str> = md
        .lines()
        .filter_map(|l| l.strip_prefix("!["))
        .filter_map(|l| l.split("](").nth(1)?.strip_suffix(')'))
        .collect();
    assert_eq!(plots.len(), 9, "8 panels of Figure 10 and Figure 12: {plots:?}");
    for p in plots {
        let svg = std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(svg.starts_with("<svg") && svg.contains("CDF of packets"), "{p} is not a CDF plot");
    }
    let e = fails(["bench", "paper", "--only", "fig99"]);
    assert!(e.contains("fig99") && e.contains("fig10"), "{e}");
}
