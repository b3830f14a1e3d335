//! Port-scan detection as two vertices (§2.1's cross-NF example, §6): an on-path
//! [`ScanFirewall`] and an off-path [`ScanAnalyzer`] that talk only through the store.
//!
//! * The **firewall** (`scan_firewall`) sees the traffic. For every TCP *contact* — a
//!   distinct (source, destination address, destination port) — it records the outcome of
//!   the contact's first attempt in its shared `contacts` object: pending at the SYN, then
//!   success at the SYN-ACK, or failure at a RST from the target. It drops traffic from hosts in its `blocked`
//!   object, which it fills from the analyzer's decisions (a state callback).
//! * The **analyzer** (`scan_analyzer`) receives no packets. It watches the firewall's
//!   `contacts` (state callbacks) and runs the Threshold Random Walk test of Jung et al.
//!   (2004) per source: each resolved contact multiplies the likelihood ratio by
//!   θ1/θ0 (success) or (1−θ1)/(1−θ0) (failure); at or above η1 = P_D/P_F the host is a
//!   scanner (alert `port_scan`, decision written to `decisions`), at or below
//!   η0 = (1−P_D)/(1−P_F) it is benign and the walk restarts, so a host that starts
//!   scanning later is still caught. A contact still unanswered when the same source makes
//!   an attempt `timeout_ms` or more later (trace time) counts as failed.
//!
//! Determinism: a host's contacts are walked in the logical-clock order of their first
//! attempts, never in the order their outcomes arrive, and a walk waits at a contact
//! whose outcome is still pending. So the decision and its counts do not depend on how
//! the firewall's instances or the callbacks interleave.
//!
//! This module owns contact tracking and the TRW test; it keeps nothing outside the
//! store and never reads the wall clock.

use crate::net::{ip_from_key, KeyBuf};
use std::net::IpAddr;
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateChange, StateExt,
    StateObjectSpec, StateWatch,
};
use streamnf_packet::{Packet, TcpFlags};
use streamnf_store::{CustomOpFn, Op, StoreError, Value};

// ---------------------------------------------------------------------------------------
// Contacts: the firewall's record of a contact's first attempt.

/// Outcome of a contact's first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SYN sent, no answer yet.
    Pending,
    /// Answered by SYN-ACK.
    Success,
    /// Answered by RST, or unanswered within the timeout.
    Failure,
}

/// A contact record: outcome and the clock and time of the first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// Outcome so far.
    pub outcome: Outcome,
    /// Logical clock of the first SYN.
    pub clock: u64,
    /// Trace time of the first SYN, ns.
    pub ts_ns: u64,
}

impl Contact {
    /// Store encoding: outcome byte (0 pending, 1 success, 2 failure) ‖ clock ‖ ts, big-endian.
    pub fn encode(&self) -> Value {
        let mut b = Vec::with_capacity(17);
        b.push(match self.outcome {
            Outcome::Pending => 0,
            Outcome::Success => 1,
            Outcome::Failure => 2,
        });
        b.extend_from_slice(&self.clock.to_be_bytes());
        b.extend_from_slice(&self.ts_ns.to_be_bytes());
        Value::Bytes(b)
    }

    /// Inverse of [`Contact::encode`]; `None` for anything else.
    pub fn decode(v: &Value) -> Option<Contact> {
        let Value::Bytes(b) = v else { return None };
        if b.len() != 17 {
            return None;
        }
        let outcome = outcome_from(b[0])?;
        let clock = u64::from_be_bytes(b[1..9].try_into().ok()?);
        let ts_ns = u64::from_be_bytes(b[9..17].try_into().ok()?);
        Some(Contact { outcome, clock, ts_ns })
    }
}

fn outcome_from(b: u8) -> Option<Outcome> {
    match b {
        0 => Some(Outcome::Pending),
        1 => Some(Outcome::Success),
        2 => Some(Outcome::Failure),
        _ => None,
    }
}

/// Key of a contact: source ‖ destination (family tag + octets each) ‖ destination port.
fn contact_key(src: IpAddr, dst: IpAddr, dport: u16) -> KeyBuf {
    let mut k = KeyBuf::new();
    k.ip(src).ip(dst).u16(dport);
    k
}

/// Splits a contact key into source key bytes, source address and the rest
/// (destination ‖ port).
fn split_contact_key(key: &[u8]) -> Option<(&[u8], IpAddr, &[u8])> {
    let src_len = match key.first()? {
        4 => 5,
        6 => 17,
        _ => return None,
    };
    let src = key.get(..src_len)?;
    Some((src, ip_from_key(src)?, key.get(src_len..)?))
}

// ---------------------------------------------------------------------------------------
// The firewall.

const CONTACTS: usize = 0;
const BLOCKED: usize = 1;
const FW_COUNTERS: usize = 2;

const OUT: usize = 0;
const BLOCKED_OUT: usize = 1;

/// The on-path half: records contact outcomes, drops blocked hosts' traffic.
#[derive(Debug, Clone)]
pub struct ScanFirewall {
    /// Vertex whose `decisions` this firewall follows; `None` = never blocks.
    analyzer: Option<String>,
}

impl ScanFirewall {
    /// A firewall blocking the hosts that vertex `analyzer` decides are scanners (if any).
    pub fn new(analyzer: Option<String>) -> ScanFirewall {
        ScanFirewall { analyzer }
    }

    /// Chain-file constructor: `analyzer` (name of the `scan_analyzer` vertex whose
    /// decisions to enforce; default none: detect only, never block).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["analyzer"])?;
        let a = p.string("analyzer", "")?;
        Ok(Arc::new(ScanFirewall::new((!a.is_empty()).then_some(a))))
    }

    /// Resolves the pending contact `key` as `outcome` (nothing if it is not pending).
    fn resolve(&self, ctx: &mut dyn NfContext, key: &[u8], outcome: Outcome) -> Result<(), NfError> {
        let Some(old) = ctx.get(CONTACTS, key)? else { return Ok(()) };
        let Some(c) = Contact::decode(&old) else {
            return Err(NfError::State("corrupt contact record".into()));
        };
        if c.outcome != Outcome::Pending {
            return Ok(());
        }
        let new = Contact { outcome, ..c }.encode();
        ctx.state(CONTACTS, key, Op::CompareAndSet { expected: Some(old), new: Some(new) })?;
        let counter: &[u8] = if outcome == Outcome::Success { b"success" } else { b"failure" };
        ctx.incr_nb(FW_COUNTERS, counter, 1)
    }
}

impl NetworkFunction for ScanFirewall {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out"), PortSpec::optional_packets("blocked")],
            state: vec![
                StateObjectSpec::shared("contacts"),
                // Read for every packet (with an analyzer), written once per blocked host.
                StateObjectSpec { read_heavy: true, ..StateObjectSpec::shared("blocked") },
                StateObjectSpec::shared("counters"),
            ],
            connection_terminating: false,
        }
    }

    /// Both directions between two hosts go to one instance, so a contact's SYN and its
    /// answer, and every attempt at one contact, are seen by one task in clock order.
    fn partition_hash(&self, pkt: &Packet) -> Option<u64> {
        let ip = pkt.hdr.ip.as_ref()?;
        let (a, b) = if ip.src <= ip.dst { (ip.src, ip.dst) } else { (ip.dst, ip.src) };
        let mut k = KeyBuf::new();
        k.ip(a).ip(b);
        Some(streamnf_packet::FlowKey::from_bytes(k.as_bytes()).stable_hash())
    }

    fn watches(&self) -> Vec<StateWatch> {
        self.analyzer.iter().map(|a| StateWatch::new(a, "decisions")).collect()
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let Some(ip) = pkt.hdr.ip else {
            ctx.forward(OUT);
            return Ok(());
        };
        if self.analyzer.is_some() {
            let mut src = KeyBuf::new();
            src.ip(ip.src);
            if ctx.get(BLOCKED, src.as_bytes())?.is_some() {
                ctx.incr_nb(FW_COUNTERS, b"blocked_packets", 1)?;
                ctx.forward(BLOCKED_OUT);
                return Ok(());
            }
        }
        if let (Some(flags), Some((sport, dport))) = (pkt.hdr.tcp_flags(), pkt.hdr.transport.ports()) {
            let syn = flags.has(TcpFlags::SYN);
            let ack = flags.has(TcpFlags::ACK);
            if syn && !ack {
                // A first attempt only: a contact already recorded is not counted again.
                let key = contact_key(ip.src, ip.dst, dport);
                let rec =
                    Contact { outcome: Outcome::Pending, clock: ctx.clock(), ts_ns: pkt.ts_ns }.encode();
                let applied = ctx.state(
                    CONTACTS,
                    key.as_bytes(),
                    Op::CompareAndSet { expected: None, new: Some(rec) },
                )?;
                if applied == Some(Value::Int(1)) {
                    ctx.incr_nb(FW_COUNTERS, b"contacts", 1)?;
                }
            } else if syn && ack {
                let key = contact_key(ip.dst, ip.src, sport);
                self.resolve(ctx, key.as_bytes(), Outcome::Success)?;
            } else if flags.has(TcpFlags::RST) {
                // A RST from the target answers the contact; a RST from the prober
                // (nmap's half-open teardown) names no recorded contact and changes nothing.
                let key = contact_key(ip.dst, ip.src, sport);
                self.resolve(ctx, key.as_bytes(), Outcome::Failure)?;
            }
        }
        ctx.forward(OUT);
        Ok(())
    }

    fn on_state_change(&self, change: &StateChange, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        if change.value == Some(Value::Int(1)) {
            ctx.set(BLOCKED, &change.key, Value::Int(i64::try_from(change.clock).unwrap_or(i64::MAX)))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The analyzer and its walk.

const WALKS: usize = 0;
const DECISIONS: usize = 1;
const TOTALS: usize = 2;

/// Name of the custom store operation that advances one host's walk.
pub const TRW_STEP_OP: &str = "streamnf.trw_step.v1";

/// Most unresolved contacts a walk holds; past that, the oldest is taken as failed (an
/// unanswered contact is a failure anyway once its timeout passes).
pub const MAX_OUTSTANDING: usize = 1024;

/// The TRW test's parameters (Jung et al. 2004) and the contact timeout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrwParams {
    /// A contact unanswered this long (trace time, measured by the same source's later
    /// attempts) counts as failed.
    pub timeout_ns: u64,
    /// P(success | benign).
    pub theta0: f64,
    /// P(success | scanner).
    pub theta1: f64,
    /// Detection probability wanted.
    pub pd: f64,
    /// False-positive probability allowed.
    pub pf: f64,
}

impl Default for TrwParams {
    fn default() -> Self {
        TrwParams { timeout_ns: 3_000_000_000, theta0: 0.8, theta1: 0.2, pd: 0.99, pf: 0.01 }
    }
}

impl TrwParams {
    /// Checks the ranges (0 < θ1 < θ0 < 1, 0 < P_F < P_D < 1).
    pub fn validate(&self) -> Result<(), String> {
        let open = |x: f64| x > 0.0 && x < 1.0;
        if !(open(self.theta0) && open(self.theta1) && self.theta1 < self.theta0) {
            return Err(format!(
                "need 0 < theta1 < theta0 < 1, found theta0 {} theta1 {}",
                self.theta0, self.theta1
            ));
        }
        if !(open(self.pd) && open(self.pf) && self.pf < self.pd) {
            return Err(format!("need 0 < pf < pd < 1, found pd {} pf {}", self.pd, self.pf));
        }
        Ok(())
    }

    /// ln of the factors and thresholds: (success step, failure step, ln η1, ln η0).
    fn logs(&self) -> [f64; 4] {
        [
            (self.theta1 / self.theta0).ln(),
            ((1.0 - self.theta1) / (1.0 - self.theta0)).ln(),
            (self.pd / self.pf).ln(),
            ((1.0 - self.pd) / (1.0 - self.pf)).ln(),
        ]
    }
}

/// Decision state of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Still walking.
    Open,
    /// Crossed η1 with the update that returned this.
    ScannerNow,
    /// Crossed η1 earlier; further contacts are ignored.
    Scanner,
}

/// A contact waiting in a walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedContact {
    /// Clock of the first attempt.
    pub clock: u64,
    /// Trace time of the first attempt, ns.
    pub ts_ns: u64,
    /// Outcome so far.
    pub outcome: Outcome,
    /// Destination ‖ port.
    pub dst: Vec<u8>,
}

/// One host's walk: the running log-likelihood ratio, counts, and the contacts not yet
/// walked (ordered by first-attempt clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Walk {
    /// ln Λ of the current walk (0 at a restart).
    pub llr: f64,
    /// Contacts walked, over every restart.
    pub attempts: u32,
    /// Of which failed.
    pub failures: u32,
    /// Benign decisions so far (walk restarts).
    pub restarts: u32,
    /// Decision.
    pub verdict: Verdict,
    /// Contacts not walked yet, by first-attempt clock.
    pub queue: Vec<QueuedContact>,
}

impl Walk {
    fn new() -> Walk {
        Walk { llr: 0.0, attempts: 0, failures: 0, restarts: 0, verdict: Verdict::Open, queue: Vec::new() }
    }

    /// Store encoding (big-endian): llr bits, attempts, failures, restarts, verdict byte,
    /// then per queued contact: clock, ts, outcome byte, length byte, bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(21 + self.queue.len() * 34);
        b.extend_from_slice(&self.llr.to_bits().to_be_bytes());
        b.extend_from_slice(&self.attempts.to_be_bytes());
        b.extend_from_slice(&self.failures.to_be_bytes());
        b.extend_from_slice(&self.restarts.to_be_bytes());
        b.push(match self.verdict {
            Verdict::Open => 0,
            Verdict::ScannerNow => 1,
            Verdict::Scanner => 2,
        });
        for q in &self.queue {
            b.extend_from_slice(&q.clock.to_be_bytes());
            b.extend_from_slice(&q.ts_ns.to_be_bytes());
            b.push(q.outcome as u8);
            b.push(q.dst.len() as u8);
            b.extend_from_slice(&q.dst);
        }
        b
    }

    /// Inverse of [`Walk::encode`].
    pub fn decode(b: &[u8]) -> Option<Walk> {
        let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes);
        let llr = f64::from_bits(u64::from_be_bytes(b.get(0..8)?.try_into().ok()?));
        let verdict = match b.get(20)? {
            0 => Verdict::Open,
            1 => Verdict::ScannerNow,
            2 => Verdict::Scanner,
            _ => return None,
        };
        let mut w = Walk {
            llr,
            attempts: u32_at(8)?,
            failures: u32_at(12)?,
            restarts: u32_at(16)?,
            verdict,
            queue: Vec::new(),
        };
        let mut i = 21;
        while i < b.len() {
            let clock = u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?);
            let ts_ns = u64::from_be_bytes(b.get(i + 8..i + 16)?.try_into().ok()?);
            let outcome = outcome_from(*b.get(i + 16)?)?;
            let len = usize::from(*b.get(i + 17)?);
            let dst = b.get(i + 18..i + 18 + len)?.to_vec();
            w.queue.push(QueuedContact { clock, ts_ns, outcome, dst });
            i += 18 + len;
        }
        Some(w)
    }

    /// Records a contact (`c.outcome` may be pending), takes contacts left unanswered
    /// `p.timeout_ns` or more before `c`'s attempt as failed, and walks every contact now
    /// resolved, in clock order.
    pub fn update(&mut self, c: QueuedContact, p: &TrwParams) {
        if self.verdict != Verdict::Open {
            self.verdict = Verdict::Scanner;
            return;
        }
        let now = c.ts_ns;
        match self.queue.iter_mut().find(|q| q.dst == c.dst) {
            Some(entry) => {
                if entry.outcome == Outcome::Pending {
                    entry.outcome = c.outcome;
                }
            }
            None => {
                let at = self.queue.partition_point(|q| q.clock <= c.clock);
                self.queue.insert(at, c);
            }
        }
        for q in &mut self.queue {
            if q.outcome == Outcome::Pending && now.saturating_sub(q.ts_ns) >= p.timeout_ns {
                q.outcome = Outcome::Failure;
            }
        }
        if self.queue.len() > MAX_OUTSTANDING {
            if let Some(first) = self.queue.first_mut() {
                if first.outcome == Outcome::Pending {
                    first.outcome = Outcome::Failure;
                }
            }
        }
        let [ln_success, ln_failure, ln_upper, ln_lower] = p.logs();
        let mut walked = 0;
        for q in &self.queue {
            let step = match q.outcome {
                Outcome::Pending => break,
                Outcome::Success => ln_success,
                Outcome::Failure => {
                    self.failures = self.failures.saturating_add(1);
                    ln_failure
                }
            };
            walked += 1;
            self.attempts = self.attempts.saturating_add(1);
            self.llr += step;
            if self.llr >= ln_upper {
                self.verdict = Verdict::ScannerNow;
                break;
            }
            if self.llr <= ln_lower {
                // Benign: the walk restarts, so later scanning is still caught.
                self.llr = 0.0;
                self.restarts = self.restarts.saturating_add(1);
            }
        }
        self.queue.drain(..walked);
        if self.verdict != Verdict::Open {
            self.queue.clear();
        }
    }
}

/// The `trw_step` custom op. Argument (big-endian): timeout (u64 ns), θ0, θ1, P_D, P_F
/// (f64 bits), then the contact's first-attempt clock and time (u64 each), outcome byte,
/// and destination ‖ port. Stored value:
/// an encoded [`Walk`] (its verdict never left at `ScannerNow`). Returns a list: the walk
/// after the step (verdict `ScannerNow` when this step crossed η1), and the contacts and
/// failures this step walked (two big-endian u32).
pub fn trw_step(value: &mut Option<Value>, arg: &[u8]) -> Result<Option<Value>, StoreError> {
    let bad = || StoreError::Custom("trw_step: malformed argument".into());
    let f =
        |i: usize| arg.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes).ok_or_else(bad);
    let p = TrwParams {
        timeout_ns: f(0)?,
        theta0: f64::from_bits(f(8)?),
        theta1: f64::from_bits(f(16)?),
        pd: f64::from_bits(f(24)?),
        pf: f64::from_bits(f(32)?),
    };
    let clock = f(40)?;
    let ts_ns = f(48)?;
    let outcome = arg.get(56).copied().and_then(outcome_from).ok_or_else(bad)?;
    let dst = arg.get(57..).ok_or_else(bad)?.to_vec();
    let mut walk = match value {
        None => Walk::new(),
        Some(Value::Bytes(b)) => {
            Walk::decode(b).ok_or_else(|| StoreError::Custom("trw_step: corrupt walk".into()))?
        }
        Some(other) => {
            return Err(StoreError::Custom(format!("trw_step: not a walk: {}", other.type_name())))
        }
    };
    let (attempts, failures) = (walk.attempts, walk.failures);
    walk.update(QueuedContact { clock, ts_ns, outcome, dst }, &p);
    let mut deltas = Vec::with_capacity(8);
    deltas.extend_from_slice(&(walk.attempts - attempts).to_be_bytes());
    deltas.extend_from_slice(&(walk.failures - failures).to_be_bytes());
    let returned = Value::List([walk.encode(), deltas].into_iter().collect());
    if walk.verdict == Verdict::ScannerNow {
        walk.verdict = Verdict::Scanner;
    }
    *value = Some(Value::Bytes(walk.encode()));
    Ok(Some(returned))
}

/// Decodes what [`trw_step`] returns: the walk and the contacts and failures it walked.
fn decode_step(v: Option<Value>) -> Option<(Walk, u32, u32)> {
    let Some(Value::List(parts)) = v else { return None };
    let walk = Walk::decode(parts.front()?)?;
    let d = parts.get(1)?;
    let walked = u32::from_be_bytes(d.get(0..4)?.try_into().ok()?);
    let failed = u32::from_be_bytes(d.get(4..8)?.try_into().ok()?);
    Some((walk, walked, failed))
}

/// The off-path half: TRW per source over the firewall's contact outcomes.
#[derive(Debug, Clone)]
pub struct ScanAnalyzer {
    firewall: String,
    params: TrwParams,
}

impl ScanAnalyzer {
    /// An analyzer of the contacts recorded by vertex `firewall`.
    pub fn new(firewall: &str, params: TrwParams) -> Result<ScanAnalyzer, String> {
        params.validate()?;
        Ok(ScanAnalyzer { firewall: firewall.to_string(), params })
    }

    /// Chain-file constructor: `firewall` (required: the `scan_firewall` vertex),
    /// `timeout_ms` (3000), `theta0` (0.8), `theta1` (0.2), `pd` (0.99), `pf` (0.01).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["firewall", "timeout_ms", "theta0", "theta1", "pd", "pf"])?;
        let fw = p.string("firewall", "")?;
        if fw.is_empty() {
            return Err(
                "parameter `firewall` is required: the name of the scan_firewall vertex to watch".into()
            );
        }
        let d = TrwParams::default();
        let timeout_ms = p.u64("timeout_ms", d.timeout_ns / 1_000_000)?;
        if timeout_ms == 0 {
            return Err("parameter `timeout_ms` must be at least 1".into());
        }
        let params = TrwParams {
            timeout_ns: timeout_ms.saturating_mul(1_000_000),
            theta0: p.f64("theta0", d.theta0)?,
            theta1: p.f64("theta1", d.theta1)?,
            pd: p.f64("pd", d.pd)?,
            pf: p.f64("pf", d.pf)?,
        };
        Ok(Arc::new(ScanAnalyzer::new(&fw, params)?))
    }
}

/// Fraction `num / den`, 0 when `den` is 0.
fn ratio(num: i64, den: i64) -> f64 {
    if den > 0 {
        num as f64 / den as f64
    } else {
        0.0
    }
}

impl NetworkFunction for ScanAnalyzer {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: Vec::new(),
            outputs: Vec::new(),
            state: vec![
                StateObjectSpec::shared("walks"),
                StateObjectSpec::shared("decisions"),
                StateObjectSpec::shared("totals"),
            ],
            connection_terminating: false,
        }
    }

    fn watches(&self) -> Vec<StateWatch> {
        vec![StateWatch::new(&self.firewall, "contacts")]
    }

    fn custom_ops(&self) -> Vec<(String, CustomOpFn)> {
        vec![(TRW_STEP_OP.to_string(), Arc::new(trw_step))]
    }

    fn on_packet(&self, _port: usize, _pkt: &mut Packet, _ctx: &mut dyn NfContext) -> Result<(), NfError> {
        Ok(())
    }

    fn on_state_change(&self, change: &StateChange, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let Some(contact) = change.value.as_ref().and_then(Contact::decode) else { return Ok(()) };
        let Some((src_key, src, dst)) = split_contact_key(&change.key) else {
            return Err(NfError::BadInput("contact key of unknown layout".into()));
        };
        let op = ctx
            .custom_op(TRW_STEP_OP)
            .ok_or_else(|| NfError::State("trw_step operation not registered".into()))?;
        let mut arg = Vec::with_capacity(57 + dst.len());
        arg.extend_from_slice(&self.params.timeout_ns.to_be_bytes());
        for x in [self.params.theta0, self.params.theta1, self.params.pd, self.params.pf] {
            arg.extend_from_slice(&x.to_bits().to_be_bytes());
        }
        arg.extend_from_slice(&contact.clock.to_be_bytes());
        arg.extend_from_slice(&contact.ts_ns.to_be_bytes());
        arg.push(contact.outcome as u8);
        arg.extend_from_slice(dst);
        let (walk, walked, failed) = decode_step(ctx.state(WALKS, src_key, Op::Custom { op, arg })?)
            .ok_or_else(|| NfError::State("trw_step returned no walk".into()))?;
        // Every host's walked contacts, for §2.1's comparison. A decided host walks no more,
        // so contacts a blocking firewall lets through late never count.
        if walked > 0 {
            ctx.incr_nb(TOTALS, b"contacts", i64::from(walked))?;
        }
        if failed > 0 {
            ctx.incr_nb(TOTALS, b"failures", i64::from(failed))?;
        }
        if walk.verdict == Verdict::ScannerNow {
            ctx.set(DECISIONS, src_key, Value::Int(1))?;
            // §2.1: compare this host's failure ratio with every host's.
            let all = ctx.get_int(TOTALS, b"contacts")?;
            let all_failed = ctx.get_int(TOTALS, b"failures")?;
            ctx.alert(
                Alert::new("port_scan")
                    .with("src_ip", src.to_string())
                    .with("attempts", walk.attempts)
                    .with("failures", walk.failures)
                    .with("failure_ratio", ratio(i64::from(walk.failures), i64::from(walk.attempts)))
                    .with("all_hosts_failure_ratio", ratio(all_failed, all)),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst(i: u16) -> Vec<u8> {
        let mut k = KeyBuf::new();
        k.ip(IpAddr::from([10, 0, 0, 1])).u16(i);
        k.as_bytes().to_vec()
    }

    /// Contact to port `i` attempted at clock `clock`, `clock` ms into the trace.
    fn at(clock: u64, i: u16, outcome: Outcome) -> QueuedContact {
        QueuedContact { clock, ts_ns: clock * 1_000_000, outcome, dst: dst(i) }
    }

    #[test]
    fn four_failures_make_a_scanner_with_the_paper_parameters() {
        let p = TrwParams::default();
        let mut w = Walk::new();
        for i in 0..3 {
            w.update(at(u64::from(i) + 1, i, Outcome::Failure), &p);
            assert_eq!(w.verdict, Verdict::Open, "after {} failures", i + 1);
        }
        w.update(at(4, 3, Outcome::Failure), &p);
        assert_eq!(w.verdict, Verdict::ScannerNow);
        assert_eq!((w.attempts, w.failures), (4, 4));
    }

    #[test]
    fn a_pending_contact_holds_the_walk_until_it_resolves() {
        let p = TrwParams::default();
        let mut w = Walk::new();
        w.update(at(1, 0, Outcome::Pending), &p);
        for i in 1..6 {
            w.update(at(u64::from(i) + 1, i, Outcome::Failure), &p);
        }
        assert_eq!(w.verdict, Verdict::Open);
        assert_eq!(w.attempts, 0);
        // The first contact succeeds: the walk goes +ln(1/4) then four failures cross η1.
        w.update(at(1, 0, Outcome::Success), &p);
        assert_eq!(w.verdict, Verdict::ScannerNow);
        assert_eq!((w.attempts, w.failures), (6, 5));
    }

    #[test]
    fn an_attempt_a_timeout_later_fails_the_unanswered_contacts_before_it() {
        let p = TrwParams { timeout_ns: 10_000_000, ..TrwParams::default() };
        let mut w = Walk::new();
        for i in 0..4 {
            w.update(at(u64::from(i) + 1, i, Outcome::Pending), &p);
        }
        assert_eq!((w.attempts, w.verdict), (0, Verdict::Open));
        // At 13 ms the attempts made at 1, 2 and 3 ms (the last exactly 10 ms earlier)
        // have expired; the one at 4 ms has not.
        w.update(at(13, 9, Outcome::Pending), &p);
        assert_eq!((w.attempts, w.failures), (3, 3));
        w.update(at(20, 10, Outcome::Pending), &p);
        assert_eq!(w.verdict, Verdict::ScannerNow);
    }

    #[test]
    fn benign_walk_restarts_and_later_scanning_is_caught() {
        let p = TrwParams::default();
        let mut w = Walk::new();
        for i in 0..4 {
            w.update(at(u64::from(i) + 1, i, Outcome::Success), &p);
        }
        assert_eq!(w.restarts, 1);
        assert_eq!(w.llr, 0.0);
        for i in 4..8 {
            w.update(at(u64::from(i) + 1, i, Outcome::Failure), &p);
        }
        assert_eq!(w.verdict, Verdict::ScannerNow);
    }

    #[test]
    fn walk_and_contact_encodings_round_trip() {
        let p = TrwParams::default();
        let mut w = Walk::new();
        w.update(at(9, 1, Outcome::Pending), &p);
        w.update(at(12, 2, Outcome::Failure), &p);
        assert_eq!(Walk::decode(&w.encode()), Some(w.clone()));
        assert_eq!(Walk::decode(&w.encode()[..5]), None);
        let c = Contact { outcome: Outcome::Success, clock: 77, ts_ns: 5 };
        assert_eq!(Contact::decode(&c.encode()), Some(c));
        assert_eq!(Contact::decode(&Value::Int(3)), None);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(TrwParams { theta0: 0.2, theta1: 0.8, ..TrwParams::default() }.validate().is_err());
        assert!(TrwParams { pd: 0.01, pf: 0.99, ..TrwParams::default() }.validate().is_err());
        assert!(TrwParams::default().validate().is_ok());
    }
}
