//! `trojan_detector` and `trojan_analyzer`: the multi-step trojan detector of §5.4, built as
//! detector instances plus one aggregating analyzer vertex.
//!
//! A trojan-infected internal host does, in this order of logical clock: (1) accepts an
//! inbound SSH connection; (2) downloads an `.html` file over HTTP; (3) downloads an `.exe`
//! and a `.zip` over FTP (either order); (4) shows IRC activity (`NICK` / `JOIN`).
//!
//! * [`TrojanDetector`] sees packets, partitioned by connection. It recognises the four kinds
//!   of step per connection (lines split across TCP segments are reassembled in a bounded
//!   per-connection buffer in the store) and sends one `trojan_step` context message per
//!   (connection, step): `{"host", "src_ip", "step", "clock"}`, where `clock` is the logical
//!   clock of the packet that completed the step.
//! * [`TrojanAnalyzer`] gets those messages, partitioned by host (`src_ip` names the host, so
//!   the splitter sends all of one host's messages to one task). Per host it keeps a small,
//!   bounded set of step clocks in the store and raises one `trojan` alert the first time the
//!   clocks contain ssh < html < {exe, zip} < irc, whatever order the messages arrived in.
//!
//! This module owns the step recognition and the order decision. It must never keep state
//! outside the store (the NF structs hold only configuration), never use arrival order or
//! wall-clock time to decide an order (only logical clocks), and never panic on input.

use crate::net::{ip_key, Cidr, KeyBuf};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use streamnf_dag::{
    Alert, ContextMsg, NetworkFunction, NfContext, NfError, NfSpec, Params, PortClass, PortSpec, StateExt,
    StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, Packet, TcpFlags, Transport};
use streamnf_store::{Op, Value};

/// Context message type carried from the detector to the analyzer.
pub const STEP_MSG_TYPE: &str = "trojan_step";

/// One kind of trojan step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Inbound SSH connection accepted by the internal host.
    Ssh,
    /// HTTP GET of an `.html` file by the internal host.
    Html,
    /// FTP download (RETR) of an `.exe` file.
    Exe,
    /// FTP download (RETR) of a `.zip` file.
    Zip,
    /// IRC activity (`NICK` or `JOIN`).
    Irc,
}

impl Step {
    /// All steps, in the order of their index.
    pub const ALL: [Step; 5] = [Step::Ssh, Step::Html, Step::Exe, Step::Zip, Step::Irc];

    /// The name used in messages, parameters and alert fields (`ssh`, `html`, `exe`, `zip`, `irc`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Ssh => "ssh",
            Step::Html => "html",
            Step::Exe => "exe",
            Step::Zip => "zip",
            Step::Irc => "irc",
        }
    }

    /// Parses a step name.
    pub fn from_name(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Position in [`Step::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The step's level in the pattern: ssh 0, html 1, exe and zip 2, irc 3. A step must
    /// come after every step of a lower level.
    pub fn level(self) -> usize {
        match self {
            Step::Ssh => 0,
            Step::Html => 1,
            Step::Exe | Step::Zip => 2,
            Step::Irc => 3,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

// ---------------------------------------------------------------------------------------
// Detector
// ---------------------------------------------------------------------------------------

/// Detector state objects.
const CONN: usize = 0;
const STEP_COUNTS: usize = 1;
/// Detector ports.
const OUT: usize = 0;
const STEPS_OUT: usize = 1;

/// Port classes in the port table.
const P_SSH: u8 = 1;
const P_HTTP: u8 = 2;
const P_FTP: u8 = 4;
const P_IRC: u8 = 8;

/// Line-assembly modes stored per connection.
const MODE_START: u8 = 0;
const MODE_PENDING: u8 = 1;
const MODE_DISCARD: u8 = 2;

/// Text protocols whose client lines the detector reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextProto {
    Http,
    Ftp,
    Irc,
}

/// Configuration of a [`TrojanDetector`] (the chain-file parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Internal prefixes: the hosts the detector watches.
    pub internal: Vec<Cidr>,
    /// Server ports of SSH.
    pub ssh_ports: Vec<u16>,
    /// Server ports of HTTP.
    pub http_ports: Vec<u16>,
    /// Server ports of the FTP control connection.
    pub ftp_ports: Vec<u16>,
    /// Server ports of IRC.
    pub irc_ports: Vec<u16>,
    /// Path endings of an HTML download (ASCII case-insensitive).
    pub html_extensions: Vec<String>,
    /// File-name endings of an `exe` download.
    pub exe_extensions: Vec<String>,
    /// File-name endings of a `zip` download.
    pub zip_extensions: Vec<String>,
    /// Longest line (without its `\n`) the detector reads; longer lines are skipped and the
    /// per-connection buffer never holds more than this many bytes.
    pub max_line: usize,
}

/// Default internal prefixes (RFC 1918).
pub const DEFAULT_INTERNAL: &[&str] = &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
/// Default IRC ports: 6660–6669, 6697 and 7000.
pub const DEFAULT_IRC_PORTS: &[u16] =
    &[6660, 6661, 6662, 6663, 6664, 6665, 6666, 6667, 6668, 6669, 6697, 7000];

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            internal: DEFAULT_INTERNAL.iter().filter_map(|s| Cidr::parse(s).ok()).collect(),
            ssh_ports: vec![22],
            http_ports: vec![80, 8080],
            ftp_ports: vec![21],
            irc_ports: DEFAULT_IRC_PORTS.to_vec(),
            html_extensions: vec![".html".into()],
            exe_extensions: vec![".exe".into()],
            zip_extensions: vec![".zip".into()],
            max_line: 1024,
        }
    }
}

/// The per-connection step recogniser (vertex kind `trojan_detector`).
pub struct TrojanDetector {
    cfg: DetectorConfig,
    /// Port number → `P_*` bits, so the common case (no watched port) is one lookup.
    ports: Box<[u8]>,
    html_ext: Vec<Vec<u8>>,
    exe_ext: Vec<Vec<u8>>,
    zip_ext: Vec<Vec<u8>>,
}

impl std::fmt::Debug for TrojanDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrojanDetector").field("cfg", &self.cfg).finish()
    }
}

impl Default for TrojanDetector {
    fn default() -> Self {
        TrojanDetector::new(DetectorConfig::default())
    }
}

fn lower(v: &[String]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_bytes().to_ascii_lowercase()).collect()
}

/// A list of non-empty suffixes.
fn suffixes_param(p: &Params, key: &str, default: &[&str]) -> Result<Vec<String>, String> {
    let v = p.strings(key, default)?;
    if v.iter().any(String::is_empty) {
        return Err(format!("parameter `{key}`: suffixes must not be empty"));
    }
    Ok(v)
}

impl TrojanDetector {
    /// A detector with configuration `cfg` (`max_line` is raised to at least 16).
    pub fn new(mut cfg: DetectorConfig) -> TrojanDetector {
        cfg.max_line = cfg.max_line.max(16);
        let mut ports = vec![0u8; 65536].into_boxed_slice();
        for (list, bit) in [
            (&cfg.ssh_ports, P_SSH),
            (&cfg.http_ports, P_HTTP),
            (&cfg.ftp_ports, P_FTP),
            (&cfg.irc_ports, P_IRC),
        ] {
            for &p in list {
                ports[usize::from(p)] |= bit;
            }
        }
        TrojanDetector {
            html_ext: lower(&cfg.html_extensions),
            exe_ext: lower(&cfg.exe_extensions),
            zip_ext: lower(&cfg.zip_extensions),
            ports,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Chain-file constructor. Parameters (all optional): `internal` (CIDR list), `ssh_ports`,
    /// `http_ports`, `ftp_ports`, `irc_ports` (port lists), `html_extensions`,
    /// `exe_extensions`, `zip_extensions` (suffix lists), `max_line` (16..=65536).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&[
            "internal",
            "ssh_ports",
            "http_ports",
            "ftp_ports",
            "irc_ports",
            "html_extensions",
            "exe_extensions",
            "zip_extensions",
            "max_line",
        ])?;
        let d = DetectorConfig::default();
        let internal = p
            .strings("internal", DEFAULT_INTERNAL)?
            .iter()
            .map(|s| Cidr::parse(s).map_err(|e| format!("parameter `internal`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let max_line = p.u64("max_line", d.max_line as u64)?;
        if !(16..=65536).contains(&max_line) {
            return Err(format!("parameter `max_line` must be in 16..=65536, found {max_line}"));
        }
        let cfg = DetectorConfig {
            internal,
            ssh_ports: p.ports("ssh_ports", &d.ssh_ports)?,
            http_ports: p.ports("http_ports", &d.http_ports)?,
            ftp_ports: p.ports("ftp_ports", &d.ftp_ports)?,
            irc_ports: p.ports("irc_ports", &d.irc_ports)?,
            html_extensions: suffixes_param(p, "html_extensions", &[".html"])?,
            exe_extensions: suffixes_param(p, "exe_extensions", &[".exe"])?,
            zip_extensions: suffixes_param(p, "zip_extensions", &[".zip"])?,
            max_line: max_line as usize,
        };
        Ok(Arc::new(TrojanDetector::new(cfg)))
    }

    fn internal(&self, ip: IpAddr) -> bool {
        self.cfg.internal.iter().any(|c| c.contains(ip))
    }

    fn port_bits(&self, port: u16) -> u8 {
        self.ports.get(usize::from(port)).copied().unwrap_or(0)
    }

    /// The steps one complete client line (without `\n`) shows.
    fn classify_line(&self, proto: TextProto, line: &[u8]) -> u8 {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.cfg.max_line {
            return 0;
        }
        match proto {
            TextProto::Http => {
                // Request line: `GET <target> HTTP/x.y` (methods are case-sensitive).
                let Some(rest) = line.strip_prefix(b"GET ") else { return 0 };
                let target = rest.split(|&b| b == b' ').next().unwrap_or(&[]);
                let path = target.split(|&b| b == b'?' || b == b'#').next().unwrap_or(&[]);
                if ends_with_any(path, &self.html_ext) {
                    Step::Html.bit()
                } else {
                    0
                }
            }
            TextProto::Ftp => {
                // `RETR <pathname>` (commands are case-insensitive; the name may hold spaces).
                let (cmd, arg) = split_command(line);
                if !cmd.eq_ignore_ascii_case(b"RETR") {
                    return 0;
                }
                let name = trim_end(arg);
                let mut bits = 0;
                if ends_with_any(name, &self.exe_ext) {
                    bits |= Step::Exe.bit();
                }
                if ends_with_any(name, &self.zip_ext) {
                    bits |= Step::Zip.bit();
                }
                bits
            }
            TextProto::Irc => {
                // `[:prefix ]NICK <nick>` or `JOIN <channels>`.
                let mut l = line;
                if l.first() == Some(&b':') {
                    l = match l.iter().position(|&b| b == b' ') {
                        Some(i) => &l[i + 1..],
                        None => return 0,
                    };
                }
                let (cmd, arg) = split_command(l);
                let is_irc = cmd.eq_ignore_ascii_case(b"NICK") || cmd.eq_ignore_ascii_case(b"JOIN");
                if is_irc && !trim_end(arg).is_empty() {
                    Step::Irc.bit()
                } else {
                    0
                }
            }
        }
    }

    /// Feeds client bytes into the connection's line assembler; returns the steps of the
    /// lines it completed. Lines longer than `max_line` are skipped whole, so the result
    /// does not depend on how the bytes were segmented.
    fn feed(&self, proto: TextProto, rec: &mut ConnRec, payload: &[u8]) -> u8 {
        let max = self.cfg.max_line;
        let mut steps = 0u8;
        let mut rest = payload;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let seg = &rest[..i];
            rest = &rest[i + 1..];
            match rec.mode {
                MODE_DISCARD => {}
                MODE_PENDING => {
                    if rec.pending.len() + seg.len() <= max + 1 {
                        rec.pending.extend_from_slice(seg);
                        steps |= self.classify_line(proto, &rec.pending);
                    }
                }
                _ => steps |= self.classify_line(proto, seg),
            }
            rec.pending.clear();
            rec.mode = MODE_START;
        }
        if !rest.is_empty() {
            // `+ 1`: a buffered line may still end in the `\r` that `classify_line` strips.
            match rec.mode {
                MODE_DISCARD => {}
                MODE_PENDING if rec.pending.len() + rest.len() <= max + 1 => {
                    rec.pending.extend_from_slice(rest)
                }
                MODE_START if rest.len() <= max + 1 => {
                    rec.pending.clear();
                    rec.pending.extend_from_slice(rest);
                    rec.mode = MODE_PENDING;
                }
                _ => {
                    rec.pending.clear();
                    rec.mode = MODE_DISCARD;
                }
            }
        }
        steps
    }

    /// Sends one message per step in `bits` not yet in `rec.done`; returns true if any.
    fn emit_new(
        &self,
        bits: u8,
        rec: &mut ConnRec,
        host: IpAddr,
        ctx: &mut dyn NfContext,
    ) -> Result<bool, NfError> {
        let new = bits & !rec.done;
        if new == 0 {
            return Ok(false);
        }
        rec.done |= new;
        let h = host.to_string();
        for s in Step::ALL {
            if new & s.bit() != 0 {
                ctx.emit_context(
                    STEPS_OUT,
                    json!({"host": h, "src_ip": h, "step": s.name(), "clock": ctx.clock()}),
                );
                ctx.incr_nb(STEP_COUNTS, s.name().as_bytes(), 1)?;
            }
        }
        Ok(true)
    }

    /// Everything but forwarding.
    fn inspect(&self, pkt: &Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let Some(ip) = pkt.hdr.ip else { return Ok(()) };
        let Transport::Tcp { src_port, dst_port, flags, .. } = pkt.hdr.transport else { return Ok(()) };
        let (sbits, dbits) = (self.port_bits(src_port), self.port_bits(dst_port));
        if sbits | dbits == 0 {
            return Ok(());
        }
        let closing = flags.has(TcpFlags::FIN) || flags.has(TcpFlags::RST);
        let payload = pkt.payload();
        let key = conn_key(ip.src, src_port, ip.dst, dst_port, ip.proto);
        let key = key.as_bytes();

        // SSH: an inbound connection to an internal server.
        let ssh_server = sbits & P_SSH != 0 && self.internal(ip.src) && !self.internal(ip.dst);
        let ssh_client = dbits & P_SSH != 0 && self.internal(ip.dst) && !self.internal(ip.src);
        if ssh_server || ssh_client {
            let accepted = ssh_server && flags.has(TcpFlags::SYN | TcpFlags::ACK);
            let banner = payload.starts_with(b"SSH-");
            if accepted || banner {
                let host = if ssh_server { ip.src } else { ip.dst };
                let old = ConnRec::decode(ctx.get(CONN, key)?)?;
                let mut rec = old.clone().unwrap_or_default();
                if self.emit_new(Step::Ssh.bit(), &mut rec, host, ctx)? && !closing {
                    ctx.set(CONN, key, rec.encode())?;
                }
            }
            if closing {
                forget(ctx, key)?;
            }
            return Ok(());
        }

        // Text protocols: lines the internal client sends to a watched server port.
        let proto = if dbits & P_HTTP != 0 {
            Some(TextProto::Http)
        } else if dbits & P_FTP != 0 {
            Some(TextProto::Ftp)
        } else if dbits & P_IRC != 0 {
            Some(TextProto::Irc)
        } else {
            None
        };
        match proto {
            Some(proto) if self.internal(ip.src) => {
                if payload.is_empty() {
                    if closing {
                        forget(ctx, key)?;
                    }
                    return Ok(());
                }
                let old = ConnRec::decode(ctx.get(CONN, key)?)?;
                let mut rec = old.clone().unwrap_or_default();
                let bits = self.feed(proto, &mut rec, payload);
                self.emit_new(bits, &mut rec, ip.src, ctx)?;
                if closing {
                    if old.is_some() {
                        ctx.state(CONN, key, Op::Delete)?;
                    }
                } else if old.as_ref() != Some(&rec) && !(old.is_none() && rec.is_empty()) {
                    ctx.set(CONN, key, rec.encode())?;
                }
            }
            _ => {
                // The server side: a reset ends the connection.
                if flags.has(TcpFlags::RST) && sbits & (P_HTTP | P_FTP | P_IRC) != 0 {
                    forget(ctx, key)?;
                }
            }
        }
        Ok(())
    }
}

/// Deletes a connection's record, if it has one.
fn forget(ctx: &mut dyn NfContext, key: &[u8]) -> Result<(), NfError> {
    if ctx.get(CONN, key)?.is_some() {
        ctx.state(CONN, key, Op::Delete)?;
    }
    Ok(())
}

/// The key of a connection, the same for both directions: protocol, then the lower
/// endpoint, then the higher one (address ‖ port each).
fn conn_key(a: IpAddr, ap: u16, b: IpAddr, bp: u16, proto: u8) -> KeyBuf {
    let (lo, hi) = if (a, ap) <= (b, bp) { ((a, ap), (b, bp)) } else { ((b, bp), (a, ap)) };
    let mut k = KeyBuf::new();
    k.push(&[proto]).ip(lo.0).u16(lo.1).ip(hi.0).u16(hi.1);
    k
}

fn ends_with_any(s: &[u8], suffixes: &[Vec<u8>]) -> bool {
    suffixes.iter().any(|x| s.len() >= x.len() && s[s.len() - x.len()..].eq_ignore_ascii_case(x))
}

fn split_command(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |i| i + 1);
    &s[..n]
}

/// A connection's record: steps already reported, and the line being assembled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ConnRec {
    done: u8,
    mode: u8,
    pending: Vec<u8>,
}

impl ConnRec {
    fn is_empty(&self) -> bool {
        self.done == 0 && self.mode == MODE_START && self.pending.is_empty()
    }

    /// `done ‖ mode ‖ pending bytes`.
    fn encode(&self) -> Value {
        let mut b = Vec::with_capacity(2 + self.pending.len());
        b.push(self.done);
        b.push(self.mode);
        b.extend_from_slice(&self.pending);
        Value::Bytes(b)
    }

    fn decode(v: Option<Value>) -> Result<Option<ConnRec>, NfError> {
        match v {
            None => Ok(None),
            Some(Value::Bytes(b)) if b.len() >= 2 && b[1] <= MODE_DISCARD => {
                Ok(Some(ConnRec { done: b[0], mode: b[1], pending: b[2..].to_vec() }))
            }
            Some(other) => {
                Err(NfError::State(format!("trojan_detector: corrupt connection record {other:?}")))
            }
        }
    }
}

impl NetworkFunction for TrojanDetector {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::optional_packets("out"), PortSpec::context("steps", STEP_MSG_TYPE)],
            state: vec![
                StateObjectSpec::per_flow("conn", Flowspace(vec![Field::Connection])),
                StateObjectSpec::shared("steps"),
            ],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        self.inspect(pkt, ctx)?;
        ctx.forward(OUT);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Analyzer
// ---------------------------------------------------------------------------------------

/// Analyzer state object.
const HOSTS: usize = 0;
/// Analyzer output port.
const VERDICT: usize = 0;
/// Record format version.
const REC_VERSION: u8 = 1;

/// The per-host order check (vertex kind `trojan_analyzer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrojanAnalyzer {
    /// Required steps grouped by level, lowest first; empty levels removed.
    levels: Vec<Vec<Step>>,
    required: u8,
    max_pending: usize,
}

impl Default for TrojanAnalyzer {
    fn default() -> Self {
        TrojanAnalyzer::new(&Step::ALL, 16)
    }
}

impl TrojanAnalyzer {
    /// An analyzer requiring `steps` (in the fixed order ssh < html < {exe, zip} < irc; the
    /// others are ignored) and keeping at most `max_pending` clocks per step kind and host
    /// (clamped to 2..=255).
    pub fn new(steps: &[Step], max_pending: usize) -> TrojanAnalyzer {
        let required = steps.iter().fold(0u8, |m, s| m | s.bit());
        let levels: Vec<Vec<Step>> = (0..4)
            .map(|l| Step::ALL.into_iter().filter(|s| s.level() == l && required & s.bit() != 0).collect())
            .filter(|v: &Vec<Step>| !v.is_empty())
            .collect();
        TrojanAnalyzer { levels, required, max_pending: max_pending.clamp(2, 255) }
    }

    /// Chain-file constructor: `steps` (list of step names, default all five),
    /// `max_pending` (2..=255, default 16).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["steps", "max_pending"])?;
        let names = p.strings("steps", &["ssh", "html", "exe", "zip", "irc"])?;
        let mut steps = Vec::new();
        for n in &names {
            let s = Step::from_name(n).ok_or_else(|| {
                format!("parameter `steps`: unknown step `{n}` (known: ssh, html, exe, zip, irc)")
            })?;
            if steps.contains(&s) {
                return Err(format!("parameter `steps`: `{n}` is listed twice"));
            }
            steps.push(s);
        }
        if steps.len() < 2 {
            return Err("parameter `steps` must name at least two steps".into());
        }
        let k = p.u64("max_pending", 16)?;
        if !(2..=255).contains(&k) {
            return Err(format!("parameter `max_pending` must be in 2..=255, found {k}"));
        }
        Ok(Arc::new(TrojanAnalyzer::new(&steps, k as usize)))
    }

    /// The steps this analyzer requires.
    pub fn steps(&self) -> Vec<Step> {
        self.levels.iter().flatten().copied().collect()
    }
}

/// Chosen clocks of a complete sequence, by step index.
pub type Chain = [Option<u64>; 5];

/// Per-host clocks of each step kind (sorted, bounded) and whether the host was reported.
///
/// Public so tests and tools can decode the analyzer's store records; the analyzer is the
/// only writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRecord {
    /// True once the `trojan` alert was raised (the clocks are then dropped).
    pub alerted: bool,
    /// Clocks per step (by [`Step::index`]), ascending.
    pub clocks: [Vec<u64>; 5],
}

impl HostRecord {
    /// `version ‖ flags ‖ for each step: count (u8) ‖ clocks (u64 big-endian)`.
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self.clocks.iter().map(Vec::len).sum();
        let mut b = Vec::with_capacity(2 + 5 + 8 * n);
        b.push(REC_VERSION);
        b.push(u8::from(self.alerted));
        for c in &self.clocks {
            b.push(u8::try_from(c.len()).unwrap_or(u8::MAX));
            for x in c.iter().take(usize::from(u8::MAX)) {
                b.extend_from_slice(&x.to_be_bytes());
            }
        }
        b
    }

    /// Inverse of [`HostRecord::encode`]; `None` for anything it did not write.
    pub fn decode(b: &[u8]) -> Option<HostRecord> {
        let (&ver, rest) = b.split_first()?;
        let (&flags, mut rest) = rest.split_first()?;
        if ver != REC_VERSION || flags > 1 {
            return None;
        }
        let mut r = HostRecord { alerted: flags == 1, ..HostRecord::default() };
        for c in r.clocks.iter_mut() {
            let (&n, tail) = rest.split_first()?;
            let bytes = tail.get(..usize::from(n) * 8)?;
            *c = bytes
                .chunks_exact(8)
                .filter_map(|x| <[u8; 8]>::try_from(x).ok())
                .map(u64::from_be_bytes)
                .collect();
            rest = &tail[usize::from(n) * 8..];
        }
        rest.is_empty().then_some(r)
    }

    /// Adds `clock` for `step` (no change if present), then prunes every kind (see
    /// [`HostRecord::solve`]). Returns true when the record changed.
    pub fn insert(&mut self, step: Step, clock: u64, levels: &[Vec<Step>], max_pending: usize) -> bool {
        let before = self.clone();
        let v = &mut self.clocks[step.index()];
        if let Err(at) = v.binary_search(&clock) {
            v.insert(at, clock);
        }
        self.solve(levels, max_pending);
        *self != before
    }

    /// Finds the earliest sequence and prunes clocks that can never matter.
    ///
    /// Level by level, with `t` the threshold (the latest chosen clock of the level below;
    /// none below the first level; "infinite" when a lower level is incomplete), each kind's
    /// candidate is its smallest clock above `t`. Taking the smallest at each level is
    /// optimal: it leaves the most room above. Thresholds only ever decrease as clocks
    /// arrive (a set that grows has a smaller or equal minimum above a smaller or equal
    /// threshold), so a clock above its kind's candidate can never be chosen later and is
    /// dropped. Clocks at or below `t` could become useful if an earlier message of a lower
    /// level still arrives (out of clock order); the `max_pending - 1` largest of them are
    /// kept. With messages arriving in clock order, those never matter: the decision is exact.
    pub fn solve(&mut self, levels: &[Vec<Step>], max_pending: usize) -> Option<Chain> {
        let mut t: Option<u64> = None; // below the first level: no threshold
        let mut blocked = false; // a lower level is incomplete: threshold is infinite
        let mut chain: Chain = [None; 5];
        for level in levels {
            let mut next: Option<u64> = None;
            let mut complete = !blocked;
            for &s in level {
                let v = &mut self.clocks[s.index()];
                let above = |x: u64| !blocked && t.is_none_or(|t| x > t);
                let cut = v.iter().position(|&x| above(x)).unwrap_or(v.len());
                let cand = v.get(cut).copied();
                let keep_below = if cand.is_some() { max_pending - 1 } else { max_pending };
                let start = cut.saturating_sub(keep_below);
                v.truncate(cut + usize::from(cand.is_some()));
                v.drain(..start);
                match cand {
                    Some(c) => {
                        chain[s.index()] = Some(c);
                        next = Some(next.map_or(c, |n| n.max(c)));
                    }
                    None => complete = false,
                }
            }
            if complete {
                t = next;
            } else {
                blocked = true;
            }
        }
        (!blocked && !levels.is_empty()).then_some(chain)
    }
}

impl NetworkFunction for TrojanAnalyzer {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec {
                name: "steps".into(),
                class: PortClass::Context(STEP_MSG_TYPE.into()),
                required: true,
            }],
            outputs: vec![PortSpec::context("verdict", "verdict")],
            state: vec![StateObjectSpec::per_flow("hosts", Flowspace(vec![Field::SrcIp]))],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, _pkt: &mut Packet, _ctx: &mut dyn NfContext) -> Result<(), NfError> {
        // The analyzer has no packet input; nothing can arrive here.
        Ok(())
    }

    fn on_context(&self, _port: usize, msg: &ContextMsg, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let host = msg
            .get("host")
            .or_else(|| msg.get("src_ip"))
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<IpAddr>().ok())
            .ok_or_else(|| NfError::BadInput(format!("trojan step without a valid host: {msg}")))?;
        let step = msg
            .get("step")
            .and_then(|v| v.as_str())
            .and_then(Step::from_name)
            .ok_or_else(|| NfError::BadInput(format!("trojan step without a known step: {msg}")))?;
        let clock = match msg.get("clock") {
            None => ctx.clock(),
            Some(v) => {
                v.as_u64().ok_or_else(|| NfError::BadInput(format!("trojan step with a bad clock: {msg}")))?
            }
        };
        if self.required & step.bit() == 0 {
            return Ok(());
        }
        let key = ip_key(host);
        let mut rec = match ctx.get(HOSTS, &key)? {
            None => HostRecord::default(),
            Some(Value::Bytes(b)) => HostRecord::decode(&b)
                .ok_or_else(|| NfError::State(format!("trojan_analyzer: corrupt record for {host}")))?,
            Some(other) => {
                return Err(NfError::State(format!("trojan_analyzer: corrupt record for {host}: {other:?}")))
            }
        };
        if rec.alerted {
            return Ok(());
        }
        let mut changed = rec.insert(step, clock, &self.levels, self.max_pending);
        if let Some(chain) = rec.solve(&self.levels, self.max_pending) {
            let h = host.to_string();
            let mut a = Alert::new("trojan").with("host", h.clone());
            for s in Step::ALL {
                if let Some(c) = chain[s.index()] {
                    a = a.with(&format!("{}_clock", s.name()), c);
                }
            }
            ctx.alert(a);
            ctx.emit_context(VERDICT, json!({"src_ip": h, "suspicious": true}));
            rec = HostRecord { alerted: true, ..HostRecord::default() };
            changed = true;
        }
        if changed {
            ctx.set(HOSTS, &key, Value::Bytes(rec.encode()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels() -> Vec<Vec<Step>> {
        TrojanAnalyzer::default().levels
    }

    #[test]
    fn lines_are_classified() {
        let d = TrojanDetector::default();
        let h = |l: &str| d.classify_line(TextProto::Http, l.as_bytes());
        assert_eq!(h("GET /a/b.html HTTP/1.1\r"), Step::Html.bit());
        assert_eq!(h("GET /A.HTML?x=1.css HTTP/1.0"), Step::Html.bit());
        assert_eq!(h("GET http://x.example/i.html"), Step::Html.bit());
        assert_eq!(h("GET /a.css HTTP/1.1"), 0);
        assert_eq!(h("get /a.html HTTP/1.1"), 0, "methods are case-sensitive");
        assert_eq!(h("POST /a.html HTTP/1.1"), 0);
        let f = |l: &str| d.classify_line(TextProto::Ftp, l.as_bytes());
        assert_eq!(f("RETR setup.exe\r"), Step::Exe.bit());
        assert_eq!(f("retr my payload.ZIP  "), Step::Zip.bit());
        assert_eq!(f("STOR x.exe"), 0);
        assert_eq!(f("RETR readme.txt"), 0);
        let i = |l: &str| d.classify_line(TextProto::Irc, l.as_bytes());
        assert_eq!(i("NICK bot"), Step::Irc.bit());
        assert_eq!(i(":me JOIN #c2"), Step::Irc.bit());
        assert_eq!(i("NICK"), 0);
        assert_eq!(i("PRIVMSG #c :NICK x"), 0);
    }

    #[test]
    fn host_records_round_trip_and_reject_garbage() {
        let mut r = HostRecord::default();
        r.clocks[1] = vec![3, 9];
        r.clocks[4] = vec![u64::MAX];
        assert_eq!(HostRecord::decode(&r.encode()), Some(r.clone()));
        let b = r.encode();
        assert_eq!(HostRecord::decode(&b[..b.len() - 1]), None);
        assert_eq!(HostRecord::decode(&[9, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(HostRecord::decode(&[]), None);
    }

    #[test]
    fn a_later_repetition_completes_the_sequence() {
        // The earliest html (5) is before the ssh (10): only the second html (20) fits.
        let mut r = HostRecord::default();
        let lv = levels();
        for (s, c) in [(Step::Html, 5), (Step::Ssh, 10), (Step::Html, 20), (Step::Exe, 30), (Step::Zip, 25)] {
            r.insert(s, c, &lv, 16);
            assert_eq!(r.solve(&lv, 16), None);
        }
        r.insert(Step::Irc, 40, &lv, 16);
        assert_eq!(r.solve(&lv, 16), Some([Some(10), Some(20), Some(30), Some(25), Some(40)]));
    }
}
