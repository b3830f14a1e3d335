//! The multi-step trojan detector (§5.4): `trojan_detector` on crafted packets (each step
//! kind, lines split across segments, bounded buffers, cleanup), `trojan_analyzer` on step
//! messages delivered in any arrival order (against a brute-force oracle), and the chain of
//! both on generated traces, on the reference engine and on the parallel engine.

use etherparse::PacketBuilder;
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use streamnf_dag::chain_file::load_chain;
use streamnf_dag::{
    Alert, ChainBuilder, ContextMsg, LogicalDag, NetworkFunction, NfContext, NfError, NfSpec, Params,
    PortSpec,
};
use streamnf_nfs::builtin_registry;
use streamnf_nfs::net::Cidr;
use streamnf_nfs::trojan::{DetectorConfig, HostRecord, Step, TrojanAnalyzer, TrojanDetector, STEP_MSG_TYPE};
use streamnf_packet::{LinkType, Packet};
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::engine::EngineReport;
use streamnf_runtime::{Engine, EngineConfig, ParallelConfig, ParallelEngine};
use streamnf_store::{EmbeddedStore, StateStore, Value};
use streamnf_tracegen::{GenConfig, Generator, TrojanConfig};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const SYN: u8 = 1;
const ACK: u8 = 2;
const FIN: u8 = 4;
const RST: u8 = 8;

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, payload: &[u8]) -> Packet {
    let mut b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(src, dst, 64).tcp(sport, dport, 1000, 65535);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(1);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build");
    Packet::new(LinkType::Ethernet, v, 0)
}

/// Data from client to server (ACK set).
fn data(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Packet {
    tcp(src, sport, dst, dport, ACK, payload)
}

/// Turns every step message into a `step` alert carrying the message's fields, so tests
/// see exactly what the detector sent.
struct Recorder;
impl NetworkFunction for Recorder {
    fn spec(&self) -> NfSpec {
        NfSpec { inputs: vec![PortSpec::context("steps", STEP_MSG_TYPE)], ..NfSpec::default() }
    }
    fn on_packet(&self, _: usize, _: &mut Packet, _: &mut dyn NfContext) -> Result<(), NfError> {
        Ok(())
    }
    fn on_context(&self, _: usize, msg: &ContextMsg, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let mut a = Alert::new("step");
        if let Some(o) = msg.as_object() {
            a.fields = o.clone();
        }
        ctx.alert(a);
        Ok(())
    }
}

/// Turns each packet's payload (a JSON object) into one step message: lets a test choose
/// the arrival order of messages and their clocks independently.
struct Feeder;
impl NetworkFunction for Feeder {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::context("steps", STEP_MSG_TYPE)],
            ..NfSpec::default()
        }
    }
    fn on_packet(&self, _: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let msg: ContextMsg =
            serde_json::from_slice(pkt.payload()).map_err(|e| NfError::BadInput(e.to_string()))?;
        ctx.emit_context(0, msg);
        Ok(())
    }
}

fn keep() -> EngineConfig {
    EngineConfig { keep: true, ..EngineConfig::default() }
}

struct Run {
    engine: Engine,
    store: Arc<dyn StateStore>,
    dag: Arc<LogicalDag>,
}

impl Run {
    fn new(dag: LogicalDag) -> Run {
        let dag = Arc::new(dag);
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
        let engine = Engine::new(Arc::clone(&dag), Arc::clone(&store), keep()).expect("engine");
        Run { engine, store, dag }
    }
    fn send(&mut self, p: Packet) {
        self.engine.process(p).expect("process");
    }
    /// Stored values of the detector's `conn` object (vertex 0, object 0).
    fn conn_records(&self) -> Vec<Vec<u8>> {
        self.store
            .snapshot(self.dag.id)
            .into_iter()
            .filter(|(k, _)| {
                let parts: Vec<&str> = k.split('/').collect();
                parts.get(1) == Some(&"0") && parts.get(3) == Some(&"0")
            })
            .filter_map(|(_, v)| match v {
                Value::Bytes(b) => Some(b),
                _ => None,
            })
            .collect()
    }
    fn finish(self) -> EngineReport {
        self.engine.finish().expect("finish")
    }
}

fn detector_chain(det: TrojanDetector) -> LogicalDag {
    ChainBuilder::new("det")
        .vertex("det", Arc::new(det))
        .vertex("rec", Arc::new(Recorder))
        .edge("input", "det.in")
        .edge("det.steps", "rec.steps")
        .edge("det.out", "output.out")
        .build()
        .expect("chain")
}

/// (host, step, clock) of every step message.
fn steps(r: &EngineReport) -> Vec<(String, String, u64)> {
    r.alert_records
        .iter()
        .filter(|a| a.kind == "step")
        .map(|a| {
            let s = |k: &str| a.fields.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            assert_eq!(s("host"), s("src_ip"), "the routing field names the host");
            (s("host"), s("step"), a.fields.get("clock").and_then(|v| v.as_u64()).unwrap_or(0))
        })
        .collect()
}

const IN: [u8; 4] = [10, 1, 2, 3];
const IN2: [u8; 4] = [192, 168, 7, 7];
const EXT: [u8; 4] = [203, 0, 113, 9];

// ---------------------------------------------------------------------------------------
// Detector on crafted packets
// ---------------------------------------------------------------------------------------

#[test]
fn inbound_ssh_counts_once_per_connection_outbound_and_internal_do_not() {
    let mut r = Run::new(detector_chain(TrojanDetector::default()));
    // Inbound: SYN (1), SYN/ACK (2), ACK (3), server banner (4), client banner (5).
    r.send(tcp(EXT, 40000, IN, 22, SYN, b""));
    r.send(tcp(IN, 22, EXT, 40000, SYN | ACK, b""));
    r.send(tcp(EXT, 40000, IN, 22, ACK, b""));
    r.send(data(IN, 22, EXT, 40000, b"SSH-2.0-OpenSSH_7.4\r\n"));
    r.send(data(EXT, 40000, IN, 22, b"SSH-2.0-libssh\r\n"));
    // A refused inbound connection (SYN, then RST): no step.
    r.send(tcp(EXT, 40001, IN2, 22, SYN, b""));
    r.send(tcp(IN2, 22, EXT, 40001, RST | ACK, b""));
    // Outbound (internal client to an external server) and internal-to-internal.
    r.send(tcp(EXT, 22, IN, 50000, SYN | ACK, b""));
    r.send(data(EXT, 22, IN, 50000, b"SSH-2.0-x\r\n"));
    r.send(tcp(IN2, 22, IN, 50001, SYN | ACK, b""));
    // A capture that starts mid-connection: only the client's banner is seen.
    r.send(data(EXT, 40002, IN2, 22, b"SSH-2.0-PuTTY\r\n"));
    let got = steps(&r.finish());
    assert_eq!(
        got,
        vec![("10.1.2.3".into(), "ssh".into(), 2), ("192.168.7.7".into(), "ssh".into(), 11)],
        "the SYN/ACK of the inbound connection, and the banner of the mid-capture one"
    );
}

#[test]
fn the_internal_server_of_an_outbound_ssh_is_not_a_step() {
    // (the client is outside the `internal` prefixes only when we say so)
    let cfg =
        DetectorConfig { internal: vec![Cidr::parse("10.0.0.0/8").expect("cidr")], ..Default::default() };
    let mut r = Run::new(detector_chain(TrojanDetector::new(cfg)));
    r.send(tcp(IN, 22, IN2, 40000, SYN | ACK, b"")); // 192.168/16 is external now
    r.send(tcp(IN2, 22, IN, 40000, SYN | ACK, b"")); // server outside
    assert_eq!(steps(&r.finish()), vec![("10.1.2.3".into(), "ssh".into(), 1)]);
}

#[test]
fn http_get_of_an_html_file_counts_and_other_requests_do_not() {
    let mut r = Run::new(detector_chain(TrojanDetector::default()));
    let cases: &[(&[u8], bool)] = &[
        (b"GET /a.css HTTP/1.1\r\nHost: x\r\n\r\n", false),
        (b"POST /form.html HTTP/1.1\r\nHost: x\r\n\r\n", false),
        (b"GET /robots.txt HTTP/1.1\r\nReferer: http://x/a.html\r\n\r\n", false),
        (b"GET /index.HTML?session=1.js HTTP/1.1\r\nHost: x\r\n\r\n", true),
    ];
    for (i, (req, _)) in cases.iter().enumerate() {
        r.send(data(IN, 50000 + i as u16, [192, 0, 2, 1], 80, req));
    }
    // The server sending a request-like line, and an external client: no step.
    r.send(data([192, 0, 2, 1], 80, IN, 50009, b"GET /x.html HTTP/1.1\r\n"));
    r.send(data(EXT, 50010, IN, 80, b"GET /x.html HTTP/1.1\r\n"));
    // Port 8080 is HTTP too; port 81 is not.
    r.send(data(IN, 50011, [192, 0, 2, 1], 8080, b"GET /y.html HTTP/1.0\r\n\r\n"));
    r.send(data(IN, 50012, [192, 0, 2, 1], 81, b"GET /y.html HTTP/1.0\r\n\r\n"));
    let got = steps(&r.finish());
    assert_eq!(got, vec![("10.1.2.3".into(), "html".into(), 4), ("10.1.2.3".into(), "html".into(), 7)]);
}

#[test]
fn a_request_split_across_two_segments_counts_at_the_second() {
    let mut r = Run::new(detector_chain(TrojanDetector::default()));
    r.send(data(IN, 50000, [192, 0, 2, 1], 80, b"GET /dl/upd"));
    // A segment of another connection in between must not mix in.
    r.send(data(IN, 50001, [192, 0, 2, 1], 80, b"ate.html HTTP/1.1\r\n"));
    r.send(data(IN, 50000, [192, 0, 2, 1], 80, b"ate.html HTTP/1.1\r\nHost: x\r\n\r\n"));
    // Split right before the `\n`, and a request split into three.
    r.send(data(IN2, 50002, [192, 0, 2, 1], 80, b"GET /b.html HTTP/1.1\r"));
    r.send(data(IN2, 50002, [192, 0, 2, 1], 80, b"\nHost: y\r\n\r\n"));
    r.send(data(IN, 50003, [192, 0, 2, 1], 80, b"GE"));
    r.send(data(IN, 50003, [192, 0, 2, 1], 80, b"T /c.ht"));
    r.send(data(IN, 50003, [192, 0, 2, 1], 80, b"ml HTTP/1.1\r\n\r\n"));
    let got = steps(&r.finish());
    assert_eq!(
        got,
        vec![
            ("10.1.2.3".into(), "html".into(), 3),
            ("192.168.7.7".into(), "html".into(), 5),
            ("10.1.2.3".into(), "html".into(), 8)
        ]
    );
}

#[test]
fn ftp_retr_of_exe_and_zip_counts_other_commands_do_not() {
    let mut r = Run::new(detector_chain(TrojanDetector::default()));
    let srv = [198, 51, 100, 7];
    r.send(data(srv, 21, IN, 50000, b"220 (vsFTPd 3.0.3)\r\n"));
    r.send(data(IN, 50000, srv, 21, b"USER anonymous\r\nPASS x\r\n"));
    r.send(data(IN, 50000, srv, 21, b"SIZE setup.exe\r\nSTOR up.zip\r\nRETR notes.txt\r\n"));
    r.send(data(IN, 50000, srv, 21, b"retr Setup Tool.EXE\r\n")); // 4: case-insensitive, spaces
    r.send(data(IN, 50000, srv, 21, b"RETR again.exe\r\n")); // once per connection
    r.send(data(IN, 50000, srv, 21, b"RETR payload"));
    r.send(data(IN, 50000, srv, 21, b".zip\r\n")); // 7: split
                                                   // The server's replies never count.
    r.send(data(srv, 21, IN, 50000, b"150 Opening BINARY mode data connection for x.exe\r\n"));
    let got = steps(&r.finish());
    assert_eq!(got, vec![("10.1.2.3".into(), "exe".into(), 4), ("10.1.2.3".into(), "zip".into(), 7)]);
}

#[test]
fn irc_nick_or_join_on_irc_ports_counts() {
    let mut r = Run::new(detector_chain(TrojanDetector::default()));
    let irc = [198, 51, 100, 66];
    r.send(data(IN, 50000, irc, 6667, b"PASS x\r\nNICK bot\r\nUSER bot 0 * :b\r\n"));
    r.send(data(IN2, 50001, irc, 6697, b"JOIN #c2\r\n"));
    r.send(data(IN, 50002, irc, 8000, b"NICK bot\r\n")); // not an IRC port by default
    r.send(data(IN, 50003, irc, 6667, b"PRIVMSG #c :NICK x\r\n"));
    let got = steps(&r.finish());
    assert_eq!(got, vec![("10.1.2.3".into(), "irc".into(), 1), ("192.168.7.7".into(), "irc".into(), 2)]);

    let cfg = DetectorConfig { irc_ports: vec![8000], ..Default::default() };
    let mut r = Run::new(detector_chain(TrojanDetector::new(cfg)));
    r.send(data(IN, 50002, irc, 8000, b"NICK bot\r\n"));
    r.send(data(IN, 50004, irc, 6667, b"NICK bot\r\n"));
    assert_eq!(steps(&r.finish()), vec![("10.1.2.3".into(), "irc".into(), 1)]);
}

#[test]
fn steps_are_reported_once_per_connection_and_state_is_freed_at_the_end() {
    let mut r = Run::new(detector_chain(TrojanDetector::default()));
    let web = [192, 0, 2, 1];
    for i in 0..3u16 {
        r.send(data(IN, 50000, web, 80, format!("GET /p{i}.html HTTP/1.1\r\n\r\n").as_bytes()));
    }
    r.send(data(IN, 50001, web, 80, b"GET /q.html HTTP/1.1\r\n\r\n"));
    r.send(data(IN, 50002, web, 80, b"GET /partial"));
    r.send(tcp(EXT, 40000, IN, 22, SYN, b""));
    r.send(tcp(IN, 22, EXT, 40000, SYN | ACK, b""));
    assert_eq!(r.conn_records().len(), 4, "three HTTP connections with state, one SSH");
    // Client FIN, server RST, FIN with data: everything is forgotten.
    r.send(tcp(IN, 50000, web, 80, FIN | ACK, b""));
    r.send(tcp(web, 80, IN, 50001, RST, b""));
    r.send(tcp(IN, 50002, web, 80, FIN | ACK, b".html HTTP/1.1\r\n\r\n"));
    r.send(tcp(EXT, 40000, IN, 22, FIN | ACK, b""));
    assert_eq!(r.conn_records(), Vec::<Vec<u8>>::new());
    let got: Vec<(String, u64)> = steps(&r.finish()).into_iter().map(|(_, s, c)| (s, c)).collect();
    assert_eq!(got, vec![("html".into(), 1), ("html".into(), 4), ("ssh".into(), 7), ("html".into(), 10)]);
}

#[test]
fn overlong_lines_are_skipped_and_the_buffer_stays_bounded() {
    let cfg = DetectorConfig { max_line: 64, ..Default::default() };
    let mut r = Run::new(detector_chain(TrojanDetector::new(cfg)));
    let web = [192, 0, 2, 1];
    // A 10 kB upload without a newline, in 1000-byte segments.
    for _ in 0..10 {
        r.send(data(IN, 50000, web, 80, &[b'a'; 1000]));
        let sizes: Vec<usize> = r.conn_records().iter().map(Vec::len).collect();
        assert!(sizes.iter().all(|&n| n <= 2 + 64 + 1), "record sizes {sizes:?}");
    }
    // The end of the overlong line, then a normal request.
    r.send(data(IN, 50000, web, 80, b"x.html\r\nGET /ok.html HTTP/1.1\r\n\r\n"));
    // A request line of 80 bytes (> 64) is skipped however it is split.
    let long = format!("GET /{}.html HTTP/1.1\r\n", "b".repeat(60));
    r.send(data(IN, 50001, web, 80, long.as_bytes()));
    r.send(data(IN, 50002, web, 80, &long.as_bytes()[..30]));
    r.send(data(IN, 50002, web, 80, &long.as_bytes()[30..]));
    assert_eq!(steps(&r.finish()), vec![("10.1.2.3".into(), "html".into(), 11)]);
}

#[test]
fn non_tcp_and_malformed_packets_pass_untouched() {
    let mut r = Run::new(detector_chain(TrojanDetector::default()));
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(IN, EXT, 64)
        .udp(5000, 6667)
        .write(&mut v, b"NICK x\n")
        .expect("b");
    r.send(Packet::new(LinkType::Ethernet, v, 0));
    r.send(Packet::new(LinkType::Ethernet, vec![0xff; 20], 0));
    let rep = r.finish();
    assert!(steps(&rep).is_empty());
    assert_eq!(rep.tasks["det"][0].nf_errors, 0);
}

/// Client lines of each protocol with the step each one shows (`None`: no step).
fn line_pool() -> Vec<(u16, &'static str, Option<&'static str>)> {
    vec![
        (80, "GET /a/b.html HTTP/1.1", Some("html")),
        (80, "GET /a/b.png HTTP/1.1", None),
        (80, "Host: www.example.com", None),
        (80, "", None),
        (21, "RETR tool.exe", Some("exe")),
        (21, "RETR data.zip", Some("zip")),
        (21, "LIST", None),
        (6667, "NICK bot42", Some("irc")),
        (6667, "JOIN #chan", Some("irc")),
        (6667, "PRIVMSG #chan :hello", None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// However a connection's client bytes are cut into segments, the detector reports
    /// exactly the steps of the lines in them, once each.
    #[test]
    fn segmentation_never_changes_the_steps(
        proto in 0usize..3,
        picks in proptest::collection::vec(0usize..4, 1..12),
        crlf in any::<bool>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let pool: Vec<_> = line_pool();
        let ports = [80u16, 21, 6667];
        let mine: Vec<_> = pool.iter().filter(|(p, _, _)| *p == ports[proto]).collect();
        let mut stream = Vec::new();
        let mut want = BTreeSet::new();
        for &i in &picks {
            let (_, line, step) = mine[i % mine.len()];
            stream.extend_from_slice(line.as_bytes());
            stream.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            if let Some(s) = step {
                want.insert(s.to_string());
            }
        }
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        at.dedup();
        let mut r = Run::new(detector_chain(TrojanDetector::default()));
        for w in at.windows(2) {
            if w[1] > w[0] {
                r.send(data(IN, 50000, [198, 51, 100, 1], ports[proto], &stream[w[0]..w[1]]));
            }
        }
        let got = steps(&r.finish());
        let names: Vec<String> = got.iter().map(|(_, s, _)| s.clone()).collect();
        let unique: BTreeSet<String> = names.iter().cloned().collect();
        prop_assert_eq!(names.len(), unique.len(), "each step once per connection: {:?}", names);
        prop_assert_eq!(unique, want);
    }

    /// Arbitrary payloads on every watched port never make the detector fail or panic.
    #[test]
    fn arbitrary_payloads_are_harmless(
        segs in proptest::collection::vec((0usize..5, proptest::collection::vec(any::<u8>(), 0..200)), 1..12)
    ) {
        let mut r = Run::new(detector_chain(TrojanDetector::default()));
        let ports = [22u16, 80, 21, 6667, 8080];
        for (p, payload) in &segs {
            r.send(data(IN, 50000, EXT, ports[*p], payload));
            r.send(data(EXT, ports[*p], IN, 50000, payload));
        }
        let rep = r.finish();
        prop_assert_eq!(rep.tasks["det"][0].nf_errors + rep.tasks["det"][0].nf_panics, 0);
    }
}

// ---------------------------------------------------------------------------------------
// Analyzer on step messages in any arrival order
// ---------------------------------------------------------------------------------------

fn analyzer_chain(an: TrojanAnalyzer) -> LogicalDag {
    ChainBuilder::new("an")
        .vertex("feed", Arc::new(Feeder))
        .vertex("analyzer", Arc::new(an))
        .edge("input", "feed.in")
        .edge("feed.steps", "analyzer.steps")
        .build()
        .expect("chain")
}

fn msg_packet(msg: &serde_json::Value) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([127, 0, 0, 1], [127, 0, 0, 2], 64)
        .udp(1, 2)
        .write(&mut v, msg.to_string().as_bytes())
        .expect("b");
    Packet::new(LinkType::Ethernet, v, 0)
}

/// Delivers `(host, step, clock)` messages in the given order; returns the trojan alerts.
fn analyze(
    an: TrojanAnalyzer,
    msgs: &[(&str, Step, u64)],
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut r = Run::new(analyzer_chain(an));
    for (host, step, clock) in msgs {
        r.send(msg_packet(&json!({"host": host, "src_ip": host, "step": step.name(), "clock": clock})));
    }
    let rep = r.finish();
    assert_eq!(rep.tasks["analyzer"][0].nf_errors, 0);
    rep.alert_records.into_iter().filter(|a| a.kind == "trojan").map(|a| a.fields).collect()
}

/// Oracle: some choice of one clock per kind with ssh < html < exe, zip < irc.
fn sequence_exists(msgs: &[(Step, u64)]) -> bool {
    let of = |s: Step| msgs.iter().filter(move |m| m.0 == s).map(|m| m.1);
    of(Step::Ssh).any(|s| {
        of(Step::Html).filter(|&h| h > s).any(|h| {
            of(Step::Exe)
                .filter(|&e| e > h)
                .any(|e| of(Step::Zip).filter(|&z| z > h).any(|z| of(Step::Irc).any(|i| i > e && i > z)))
        })
    })
}

fn clock_of(a: &serde_json::Map<String, serde_json::Value>, s: Step) -> u64 {
    a.get(&format!("{}_clock", s.name())).and_then(|v| v.as_u64()).unwrap_or(u64::MAX)
}

#[test]
fn in_order_steps_alert_once_and_wrong_orders_do_not() {
    use Step::*;
    let host = "10.0.0.5";
    let good = [(Ssh, 10), (Html, 20), (Zip, 30), (Exe, 31), (Irc, 40)];
    let msgs: Vec<_> = good.iter().map(|&(s, c)| (host, s, c)).collect();
    let alerts = analyze(TrojanAnalyzer::default(), &msgs);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["host"], "10.0.0.5");
    for (s, c) in good {
        assert_eq!(clock_of(&alerts[0], s), c);
    }
    // Repeating the steps afterwards raises nothing more.
    let twice: Vec<_> = msgs.iter().chain(msgs.iter()).map(|&(h, s, c)| (h, s, c + 100)).collect();
    assert_eq!(analyze(TrojanAnalyzer::default(), &twice).len(), 1);
    // Each wrong order: irc before a download; html after a download; html before ssh.
    for bad in [
        [(Ssh, 10), (Html, 20), (Exe, 30), (Irc, 35), (Zip, 40)],
        [(Ssh, 10), (Exe, 15), (Html, 20), (Zip, 30), (Irc, 40)],
        [(Html, 5), (Ssh, 10), (Exe, 30), (Zip, 31), (Irc, 40)],
    ] {
        let msgs: Vec<_> = bad.iter().map(|&(s, c)| (host, s, c)).collect();
        assert!(analyze(TrojanAnalyzer::default(), &msgs).is_empty(), "{bad:?}");
    }
    // A step missing: nothing.
    assert!(analyze(TrojanAnalyzer::default(), &msgs[..4]).is_empty());
}

#[test]
fn a_later_repetition_completes_what_the_earliest_clocks_cannot() {
    use Step::*;
    // The first html (5) is before the ssh (10); the second (20) completes the sequence.
    // Earliest-clock-per-kind bookkeeping would see html 5 < ssh 10 and never alert.
    let h = "172.16.0.9";
    let msgs =
        [(h, Html, 5), (h, Ssh, 10), (h, Exe, 12), (h, Html, 20), (h, Exe, 30), (h, Zip, 25), (h, Irc, 40)];
    let a = analyze(TrojanAnalyzer::default(), &msgs);
    assert_eq!(a.len(), 1);
    assert_eq!([Ssh, Html, Exe, Zip, Irc].map(|s| clock_of(&a[0], s)), [10, 20, 30, 25, 40]);
}

#[test]
fn hosts_are_judged_separately_and_steps_can_be_left_out() {
    use Step::*;
    let msgs = [
        ("10.0.0.1", Ssh, 1),
        ("10.0.0.2", Html, 2),
        ("10.0.0.1", Html, 3),
        ("10.0.0.2", Zip, 4),
        ("10.0.0.1", Zip, 5),
        ("10.0.0.2", Irc, 6),
        ("10.0.0.1", Irc, 7),
    ];
    // Nobody fetched an exe: no alert with all five steps required...
    assert!(analyze(TrojanAnalyzer::default(), &msgs).is_empty());
    // ...and with `exe` left out, only 10.0.0.1 had an ssh before its html.
    let a = analyze(TrojanAnalyzer::new(&[Ssh, Html, Zip, Irc], 16), &msgs);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["host"], "10.0.0.1");
    assert!(a[0].get("exe_clock").is_none());
}

#[test]
fn bad_messages_are_errors_not_panics() {
    let mut r = Run::new(analyzer_chain(TrojanAnalyzer::default()));
    for m in [
        json!({"step": "ssh", "clock": 1}),
        json!({"host": "not-an-ip", "step": "ssh", "clock": 1}),
        json!({"host": "10.0.0.1", "step": "ftp", "clock": 1}),
        json!({"host": "10.0.0.1", "step": "ssh", "clock": -4}),
        json!({"host": "10.0.0.1", "step": "ssh", "clock": "soon"}),
        json!([1, 2, 3]),
    ] {
        r.send(msg_packet(&m));
    }
    let rep = r.finish();
    assert_eq!(rep.tasks["analyzer"][0].nf_errors, 6);
    assert_eq!(rep.tasks["analyzer"][0].nf_panics, 0);
}

#[test]
fn host_records_stay_bounded() {
    use Step::*;
    // 200 html downloads before any ssh (in clock order): at most `max_pending` are kept.
    let mut msgs: Vec<(&str, Step, u64)> = (0..200).map(|i| ("10.0.0.3", Html, 1000 + i)).collect();
    msgs.extend((0..50).map(|i| ("10.0.0.3", Exe, 2000 + i)));
    let mut r = Run::new(analyzer_chain(TrojanAnalyzer::new(&Step::ALL, 8)));
    for (host, step, clock) in &msgs {
        r.send(msg_packet(&json!({"host": host, "src_ip": host, "step": step.name(), "clock": clock})));
    }
    let recs: Vec<HostRecord> = r
        .store
        .snapshot(r.dag.id)
        .into_values()
        .filter_map(|v| match v {
            Value::Bytes(b) => HostRecord::decode(&b),
            _ => None,
        })
        .collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].clocks[Html.index()], (1192..1200).collect::<Vec<u64>>(), "the 8 latest");
    assert!(recs[0].clocks[Exe.index()].len() <= 8);
    // The sequence still completes in clock order.
    for (s, c) in [(Ssh, 3000), (Html, 3001), (Exe, 3002), (Zip, 3003), (Irc, 3004)] {
        r.send(msg_packet(&json!({"host": "10.0.0.3", "step": s.name(), "clock": c})));
    }
    let alerts = r.finish().alerts;
    assert_eq!(alerts.get("trojan"), Some(&1));
}

/// One host's step messages: 0–3 clocks per kind, each kind's clocks drawn from a range
/// that overlaps its neighbours' (ssh early, irc late), so both right and wrong orders and
/// "only a later repetition fits" cases are common; all clocks distinct; shuffled.
fn host_msgs() -> impl Strategy<Value = Vec<(Step, u64)>> {
    let kind = |lo: u64| proptest::collection::btree_set(lo..lo + 40, 0..=3);
    (kind(0), kind(20), kind(40), kind(40), kind(60))
        .prop_map(|(s, h, e, z, i)| {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for (step, set) in Step::ALL.into_iter().zip([s, h, e, z, i]) {
                for c in set {
                    if seen.insert(c) {
                        out.push((step, c));
                    }
                }
            }
            out
        })
        .prop_flat_map(|v| Just(v).prop_shuffle())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever order the messages arrive in, the analyzer alerts (once) exactly when some
    /// choice of clocks is in the right order, and the clocks it reports are such a choice.
    #[test]
    fn alert_iff_the_clock_order_is_right_in_any_arrival_order(msgs in host_msgs()) {
        let host = "10.9.8.7";
        let delivered: Vec<_> = msgs.iter().map(|&(s, c)| (host, s, c)).collect();
        let alerts = analyze(TrojanAnalyzer::default(), &delivered);
        prop_assert_eq!(alerts.len(), usize::from(sequence_exists(&msgs)), "{:?}", msgs);
        if let Some(a) = alerts.first() {
            let c = |s| clock_of(a, s);
            for s in Step::ALL {
                prop_assert!(msgs.contains(&(s, c(s))), "reported {} clock {} was never sent", s.name(), c(s));
            }
            prop_assert!(c(Step::Ssh) < c(Step::Html));
            prop_assert!(c(Step::Html) < c(Step::Exe) && c(Step::Html) < c(Step::Zip));
            prop_assert!(c(Step::Exe) < c(Step::Irc) && c(Step::Zip) < c(Step::Irc));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The chain on generated traces, both engines
// ---------------------------------------------------------------------------------------

fn example() -> LogicalDag {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/trojan.toml");
    load_chain(&path, &builtin_registry()).expect("examples/trojan.toml")
}

fn generated(packets: u64, seed: u64) -> Vec<Packet> {
    let cfg = GenConfig {
        packets,
        flows: 300,
        seed,
        trojan: Some(TrojanConfig { hosts: 2, decoys: 2 }),
        ..GenConfig::default()
    };
    Generator::new(cfg)
        .expect("generator")
        .map(|g| Packet::new(LinkType::Ethernet, g.data, g.ts_ns))
        .collect()
}

fn reference(dag: &Arc<LogicalDag>, input: &[Packet]) -> RunOutputs {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let mut e = Engine::new(Arc::clone(dag), Arc::clone(&store), keep()).expect("engine");
    for p in input {
        e.process(p.clone()).expect("process");
    }
    RunOutputs::from_report(e.finish().expect("finish"), store.snapshot(dag.id))
}

fn parallel(
    dag: &Arc<LogicalDag>,
    input: &[Packet],
    workers: usize,
    detector: u32,
    analyzer: u32,
) -> RunOutputs {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let instances =
        dag.vertices.iter().map(|v| if v.name == "detector" { detector } else { analyzer }).collect();
    let par =
        ParallelConfig { workers, instances, queue_capacity: 64, batch: 8, ..ParallelConfig::default() };
    let mut e = ParallelEngine::new(Arc::clone(dag), Arc::clone(&store), keep(), par).expect("engine");
    for p in input {
        e.process_frame(LinkType::Ethernet, &p.data, p.ts_ns, p.data.len() as u32).expect("process");
    }
    let rep = e.finish().expect("finish");
    assert_eq!(rep.tasks["detector"].len(), detector as usize);
    RunOutputs::from_report(rep, store.snapshot(dag.id))
}

fn trojan_hosts(o: &RunOutputs) -> Vec<String> {
    let mut v: Vec<String> = o
        .alerts
        .iter()
        .filter(|a| a.kind == "trojan")
        .filter_map(|a| a.fields.get("host").and_then(|h| h.as_str()).map(String::from))
        .collect();
    v.sort();
    v
}

#[test]
fn generated_trojans_are_found_on_both_engines_and_decoys_are_not() {
    let dag = Arc::new(example());
    for seed in [1, 2] {
        let input = generated(12_000, seed);
        let want = reference(&dag, &input);
        assert_eq!(trojan_hosts(&want), vec!["10.0.0.10", "10.0.0.11"], "seed {seed}");
        // Every reported step happened: the decoys (10.0.0.128+) did all four kinds too.
        for a in want.alerts.iter().filter(|a| a.kind == "trojan") {
            let c = |s: &str| a.fields.get(&format!("{s}_clock")).and_then(|v| v.as_u64()).unwrap_or(0);
            assert!(c("ssh") < c("html") && c("html") < c("exe").min(c("zip")));
            assert!(c("exe").max(c("zip")) < c("irc") && c("irc") <= a.clock);
        }
        for (workers, det, an) in [(1, 3, 1), (2, 2, 2), (2, 4, 3)] {
            let got = parallel(&dag, &input, workers, det, an);
            let d = differences(&want, &got, 12);
            assert!(d.is_empty(), "seed {seed}, {workers} workers, {det}+{an} instances:\n{}", d.join("\n"));
        }
    }
}

#[test]
fn the_decoys_do_every_step_in_a_wrong_order() {
    // Guards the test above: the decoys' steps reach the analyzer, so "no alert" for them
    // is the order check's doing.
    let dag = Arc::new(
        ChainBuilder::new("steps")
            .vertex("det", Arc::new(TrojanDetector::default()))
            .vertex("rec", Arc::new(Recorder))
            .edge("input", "det.in")
            .edge("det.steps", "rec.steps")
            .build()
            .expect("chain"),
    );
    let out = reference(&dag, &generated(12_000, 1));
    for host in ["10.0.0.128", "10.0.0.129"] {
        let kinds: BTreeSet<&str> = out
            .alerts
            .iter()
            .filter(|a| a.fields.get("host").and_then(|h| h.as_str()) == Some(host))
            .filter_map(|a| a.fields.get("step").and_then(|s| s.as_str()))
            .collect();
        assert_eq!(kinds, ["exe", "html", "irc", "ssh", "zip"].into_iter().collect(), "{host}");
    }
}

#[test]
fn chain_file_parameters_are_checked() {
    let reg = builtin_registry();
    let build = |nf: &str, toml_text: &str| -> Result<(), String> {
        let t: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        reg.build(nf, &Params(t)).unwrap_or_else(|| Err(format!("{nf} not registered"))).map(|_| ())
    };
    assert_eq!(build("trojan_detector", ""), Ok(()));
    assert_eq!(build("trojan_analyzer", ""), Ok(()));
    assert!(build("trojan_detector", "irc_ports = [6667, 70000]").unwrap_err().contains("70000"));
    assert!(build("trojan_detector", "internal = [\"10.0.0.0/40\"]").unwrap_err().contains("internal"));
    assert!(build("trojan_detector", "html_extensions = [\"\"]").unwrap_err().contains("html_extensions"));
    assert!(build("trojan_detector", "max_line = 4").unwrap_err().contains("max_line"));
    assert!(build("trojan_detector", "bogus = 1").unwrap_err().contains("bogus"));
    assert!(build("trojan_analyzer", "steps = [\"ssh\", \"ftp\"]").unwrap_err().contains("ftp"));
    assert!(build("trojan_analyzer", "steps = [\"ssh\", \"ssh\"]").unwrap_err().contains("twice"));
    assert!(build("trojan_analyzer", "steps = [\"irc\"]").unwrap_err().contains("two"));
    assert!(build("trojan_analyzer", "max_pending = 1").unwrap_err().contains("max_pending"));
    assert!(build("trojan_analyzer", "max_pending = 256").unwrap_err().contains("2..=255"));
    let dag = example();
    assert_eq!(dag.vertices.iter().find(|v| v.name == "detector").map(|v| v.instances), Some(2));
}
