//! `dpi`: deep packet inspection (Figure 1, off-path). Matches many payload signatures
//! at once (Aho–Corasick), also across the segment boundaries of one TCP stream, counts
//! matches per signature in the store and raises one `dpi_match` alert per occurrence.
//!
//! Ports: `in`; `out` (optional) passes packets on when the DPI sits on-path.
//! State: `matches` (shared, one counter per signature, non-blocking), `packets` (shared),
//! `tail` (per-flow `[connection]`, keyed by the directional 5-tuple): the last bytes of a
//! TCP stream direction, kept only while they end in a proper prefix of a signature.
//!
//! This module owns signature matching and the per-direction tail. It must never keep
//! anything between packets outside the store: the stack buffers used while matching are
//! filled and dropped within one `on_packet` call (no per-packet heap allocation unless a
//! tail is stored or read).

use crate::net::KeyBuf;
use aho_corasick::automaton::Automaton;
use aho_corasick::{dfa, AhoCorasick, AhoCorasickBuilder, Anchored, MatchKind};
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, Packet, TcpFlags, Transport};
use streamnf_store::{Op, Value};

const MATCHES: usize = 0;
const PACKETS: usize = 1;
const TAIL: usize = 2;

/// Default signatures.
pub const DEFAULT_SIGNATURES: &[&str] = &["<script", "cmd.exe", "/etc/passwd", "union select", "../../"];

/// Longest accepted signature (or percent-encoded form of one), in bytes. Keeps every
/// buffer used while matching on the stack.
pub const MAX_SIGNATURE_LEN: usize = 256;

/// Bytes of payload lower-cased per prefilter pass (a stack buffer).
const FOLD_CHUNK: usize = 2048;

/// One Aho–Corasick pattern: which configured signature it stands for, and whether it is
/// the percent-encoded form.
#[derive(Debug, Clone, Copy)]
struct PatternInfo {
    signature: usize,
    encoded: bool,
}

/// Multi-signature payload matcher with cross-segment matching for TCP.
#[derive(Debug, Clone)]
pub struct Dpi {
    signatures: Vec<String>,
    patterns: Vec<PatternInfo>,
    /// Every pattern, standard semantics: all (overlapping) occurrences.
    matcher: AhoCorasick,
    /// The same patterns (lower-cased when `fold`), leftmost-first and case-sensitive so
    /// the crate may use its SIMD prefilter: a fast "is there any occurrence" check.
    detector: AhoCorasick,
    /// The payload must be ASCII-lower-cased before `detector` sees it.
    fold: bool,
    /// Standard DFA over the patterns: its state after a stream's last bytes tells whether
    /// they end in a proper prefix of a pattern (a match may continue in the next segment).
    prefixes: dfa::DFA,
    /// Longest pattern in bytes; a tail keeps at most `max_len - 1` bytes.
    max_len: usize,
    /// Which payload starts may continue a pattern begun in an earlier segment.
    continues: Continuations,
}

/// The ways a payload can begin with the rest of a pattern whose first `j ≥ 1` bytes
/// ended the previous segment (`pattern[j..]`): a necessary condition for an occurrence
/// across the boundary, checked before reading the stream's tail from the store.
/// Bytes are ASCII-lower-cased first when matching is case-insensitive.
#[derive(Clone)]
struct Continuations {
    fold: bool,
    /// Bytes at some position `j ≥ 1` of a pattern (a one-byte payload).
    any: [bool; 256],
    /// Last bytes of patterns (the continuation is one byte long).
    last: [bool; 256],
    /// Byte pairs at positions `(j, j + 1)`, `1 ≤ j ≤ len − 2`: a 65,536-bit set.
    pairs: Box<[u64; 1024]>,
}

impl std::fmt::Debug for Continuations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Continuations").field("fold", &self.fold).finish_non_exhaustive()
    }
}

impl Continuations {
    fn new(patterns: &[String], fold: bool) -> Continuations {
        let mut c = Continuations { fold, any: [false; 256], last: [false; 256], pairs: Box::new([0; 1024]) };
        for p in patterns {
            let b: Vec<u8> = p.bytes().map(|x| c.norm(x)).collect();
            for (j, &x) in b.iter().enumerate().skip(1) {
                c.any[usize::from(x)] = true;
                if let Some(&y) = b.get(j + 1) {
                    let i = (usize::from(x) << 8) | usize::from(y);
                    c.pairs[i / 64] |= 1 << (i % 64);
                }
            }
            if let Some(&x) = b.last() {
                c.last[usize::from(x)] = true;
            }
        }
        c
    }

    fn norm(&self, b: u8) -> u8 {
        if self.fold {
            b.to_ascii_lowercase()
        } else {
            b
        }
    }

    /// False when `payload` cannot begin with the rest of any pattern, so no occurrence
    /// can cross into it (no false negatives; false positives only cost a store read).
    fn possible(&self, payload: &[u8]) -> bool {
        let Some(&a) = payload.first() else {
            return false;
        };
        let a = self.norm(a);
        match payload.get(1) {
            None => self.any[usize::from(a)],
            Some(&b) => {
                let i = (usize::from(a) << 8) | usize::from(self.norm(b));
                self.last[usize::from(a)] || self.pairs[i / 64] & (1 << (i % 64)) != 0
            }
        }
    }
}

/// Percent-encodes every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`),
/// as a browser or scanner writes `<script` into a URI (`%3Cscript`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Dpi {
    /// A matcher for `signatures`, also matching their percent-encoded forms.
    pub fn new(signatures: Vec<String>, case_insensitive: bool) -> Result<Dpi, String> {
        Dpi::with_options(signatures, case_insensitive, true)
    }

    /// A matcher for `signatures`. With `percent_encoded`, each signature's percent-encoded
    /// form (see [`percent_encode`]; for a signature with a space, also the form-encoded
    /// one with `+`) is searched too and counted under the signature.
    pub fn with_options(
        signatures: Vec<String>,
        case_insensitive: bool,
        percent_encoded: bool,
    ) -> Result<Dpi, String> {
        if signatures.is_empty() || signatures.iter().any(String::is_empty) {
            return Err("signatures must be a non-empty list of non-empty strings".into());
        }
        let mut pats: Vec<String> = Vec::new();
        let mut patterns = Vec::new();
        for (i, s) in signatures.iter().enumerate() {
            pats.push(s.clone());
            patterns.push(PatternInfo { signature: i, encoded: false });
            if percent_encoded {
                let encoded = percent_encode(s);
                let plus = encoded.replace("%20", "+");
                for (k, f) in [encoded.clone(), plus].into_iter().enumerate() {
                    // Skip forms equal to the signature or to the form before them.
                    if f != *s && (k == 0 || f != encoded) {
                        pats.push(f);
                        patterns.push(PatternInfo { signature: i, encoded: true });
                    }
                }
            }
        }
        if let Some(long) = pats.iter().find(|p| p.len() > MAX_SIGNATURE_LEN) {
            return Err(format!("`{long}` is longer than {MAX_SIGNATURE_LEN} bytes"));
        }
        let max_len = pats.iter().map(String::len).max().unwrap_or(1);
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(case_insensitive)
            .match_kind(MatchKind::Standard)
            .build(&pats)
            .map_err(|e| format!("cannot build the signature matcher: {e}"))?;
        let folded: Vec<String> =
            pats.iter().map(|p| if case_insensitive { p.to_ascii_lowercase() } else { p.clone() }).collect();
        let detector = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&folded)
            .map_err(|e| format!("cannot build the signature matcher: {e}"))?;
        let prefixes = dfa::Builder::new()
            .ascii_case_insensitive(case_insensitive)
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(&pats)
            .map_err(|e| format!("cannot build the signature matcher: {e}"))?;
        let continues = Continuations::new(&pats, case_insensitive);
        Ok(Dpi {
            signatures,
            patterns,
            matcher,
            detector,
            fold: case_insensitive,
            prefixes,
            max_len,
            continues,
        })
    }

    /// Chain-file constructor: `signatures` (list), `case_insensitive` (default true),
    /// `percent_encoded` (default true).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["signatures", "case_insensitive", "percent_encoded"])?;
        let sigs = p.strings("signatures", DEFAULT_SIGNATURES)?;
        let dpi =
            Dpi::with_options(sigs, p.bool("case_insensitive", true)?, p.bool("percent_encoded", true)?)
                .map_err(|e| format!("parameter `signatures`: {e}"))?;
        Ok(Arc::new(dpi))
    }

    /// True when `bytes` may contain an occurrence of some pattern (no false negatives).
    fn may_match(&self, bytes: &[u8]) -> bool {
        if !self.fold {
            return self.detector.is_match(bytes);
        }
        let mut buf = [0u8; FOLD_CHUNK];
        let overlap = self.max_len - 1;
        let mut start = 0;
        loop {
            let end = (start + FOLD_CHUNK).min(bytes.len());
            let chunk = &mut buf[..end - start];
            chunk.copy_from_slice(&bytes[start..end]);
            chunk.make_ascii_lowercase();
            if self.detector.is_match(&*chunk) {
                return true;
            }
            if end == bytes.len() {
                return false;
            }
            // The next chunk repeats the last `max_len - 1` bytes, so an occurrence that
            // crosses the chunk boundary is seen whole. FOLD_CHUNK > 2 * MAX_SIGNATURE_LEN.
            start = end - overlap;
        }
    }

    /// True when `end_of_stream` ends in a proper prefix of some pattern, i.e. an
    /// occurrence may continue in the next segment.
    fn ends_in_prefix(&self, end_of_stream: &[u8]) -> bool {
        let Ok(mut sid) = self.prefixes.start_state(Anchored::No) else {
            // Cannot happen for a DFA built with the default start kind; be conservative.
            return true;
        };
        for &b in end_of_stream {
            sid = self.prefixes.next_state(Anchored::No, sid, b);
        }
        !self.prefixes.is_start(sid)
    }

    fn report(
        &self,
        pattern: usize,
        offset: i64,
        across: bool,
        pkt: &Packet,
        ctx: &mut dyn NfContext,
    ) -> Result<(), NfError> {
        let Some(info) = self.patterns.get(pattern) else {
            return Ok(());
        };
        let sig = self.signatures.get(info.signature).map(String::as_str).unwrap_or("");
        ctx.incr_nb(MATCHES, sig.as_bytes(), 1)?;
        let mut a = Alert::new("dpi_match").with("signature", sig).with("offset", offset);
        if info.encoded {
            a = a.with("percent_encoded", true);
        }
        if across {
            a = a.with("across_segments", true);
        }
        if let Some(ip) = pkt.hdr.ip {
            a = a.with("src_ip", ip.src.to_string()).with("dst_ip", ip.dst.to_string());
        }
        if let Some((s, d)) = pkt.hdr.transport.ports() {
            a = a.with("src_port", s).with("dst_port", d);
        }
        ctx.alert(a);
        Ok(())
    }
}

/// A TCP segment's place in its stream direction.
struct Segment {
    key: KeyBuf,
    /// Sequence number of the first payload byte.
    seq: u32,
    /// FIN or RST: the direction ends here.
    last: bool,
}

fn segment(pkt: &Packet) -> Option<Segment> {
    let ip = pkt.hdr.ip?;
    let Transport::Tcp { src_port, dst_port, seq, flags, .. } = pkt.hdr.transport else {
        return None;
    };
    let mut key = KeyBuf::new();
    key.ip(ip.src).ip(ip.dst).u16(src_port).u16(dst_port);
    // A SYN takes one sequence number before the data it may carry.
    let seq = if flags.has(TcpFlags::SYN) { seq.wrapping_add(1) } else { seq };
    Some(Segment { key, seq, last: flags.has(TcpFlags::FIN) || flags.has(TcpFlags::RST) })
}

impl NetworkFunction for Dpi {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::optional_packets("out")],
            state: vec![
                StateObjectSpec::shared("matches"),
                StateObjectSpec::shared("packets"),
                StateObjectSpec::per_flow("tail", Flowspace(vec![Field::Connection])),
            ],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        ctx.incr_nb(PACKETS, b"", 1)?;
        let keep = self.max_len - 1;
        let seg = if keep > 0 { segment(pkt) } else { None };
        let payload = pkt.payload();
        if payload.is_empty() {
            if let Some(s) = seg.as_ref().filter(|s| s.last) {
                // FIN or RST: the direction ends, its tail (if any) is garbage.
                ctx.state_nonblocking(TAIL, s.key.as_bytes(), Op::Delete)?;
            }
            ctx.forward(0);
            return Ok(());
        }

        // The previous in-order segment's tail, when it ended in a signature prefix. Read
        // only when this payload could continue a pattern: otherwise nothing can cross the
        // boundary, and nothing that started before it can cross into later segments either.
        let mut tail = [0u8; MAX_SIGNATURE_LEN];
        let mut tail_len = 0;
        let mut had_state = false;
        let read = seg.is_some() && self.continues.possible(payload);
        if let Some(s) = seg.as_ref().filter(|_| read) {
            if let Some(v) = ctx.get(TAIL, s.key.as_bytes())? {
                had_state = true;
                if let Value::Bytes(b) = v {
                    let expected =
                        b.get(..4).and_then(|x| <[u8; 4]>::try_from(x).ok()).map(u32::from_be_bytes);
                    let bytes = b.get(4..).unwrap_or(&[]);
                    if expected == Some(s.seq) && bytes.len() <= keep {
                        tail[..bytes.len()].copy_from_slice(bytes);
                        tail_len = bytes.len();
                    }
                }
            }
        }

        // Occurrences that start in the tail and end in this payload.
        if tail_len > 0 {
            let mut joint = [0u8; 2 * MAX_SIGNATURE_LEN];
            let head = payload.len().min(keep);
            joint[..tail_len].copy_from_slice(&tail[..tail_len]);
            joint[tail_len..tail_len + head].copy_from_slice(&payload[..head]);
            for m in self.matcher.find_overlapping_iter(&joint[..tail_len + head]) {
                if m.start() < tail_len && m.end() > tail_len {
                    let offset = m.start() as i64 - tail_len as i64;
                    self.report(m.pattern().as_usize(), offset, true, pkt, ctx)?;
                }
            }
        }

        // Occurrences within this payload.
        if self.may_match(payload) {
            for m in self.matcher.find_overlapping_iter(payload) {
                self.report(m.pattern().as_usize(), m.start() as i64, false, pkt, ctx)?;
            }
        }

        // Keep the stream's last bytes only if an occurrence may continue past them.
        if let Some(s) = seg {
            let mut end = [0u8; MAX_SIGNATURE_LEN];
            let from_tail = keep.saturating_sub(payload.len()).min(tail_len);
            let from_payload = payload.len().min(keep);
            end[..from_tail].copy_from_slice(&tail[tail_len - from_tail..tail_len]);
            end[from_tail..from_tail + from_payload]
                .copy_from_slice(&payload[payload.len() - from_payload..]);
            let end = &end[..from_tail + from_payload];
            if !s.last && self.ends_in_prefix(end) {
                let next = s.seq.wrapping_add(payload.len() as u32);
                let mut v = Vec::with_capacity(4 + end.len());
                v.extend_from_slice(&next.to_be_bytes());
                v.extend_from_slice(end);
                ctx.state_nonblocking(TAIL, s.key.as_bytes(), Op::Set(Value::Bytes(v)))?;
            } else if had_state || (s.last && !read) {
                // A tail not read here is left for the next reader: it cannot match (its
                // sequence number is this segment's), and FIN/RST deletes it.
                ctx.state_nonblocking(TAIL, s.key.as_bytes(), Op::Delete)?;
            }
        }
        ctx.forward(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_bytes() {
        assert_eq!(percent_encode("<script"), "%3Cscript");
        assert_eq!(percent_encode("cmd.exe"), "cmd.exe");
        assert_eq!(percent_encode("../../"), "..%2F..%2F");
        assert_eq!(percent_encode("union select"), "union%20select");
    }

    #[test]
    fn prefix_check_sees_partial_signatures_at_the_end() {
        let d = Dpi::new(vec!["<script".into()], true).expect("dpi");
        assert!(d.ends_in_prefix(b"abc<SC"));
        assert!(d.ends_in_prefix(b"x%3c"));
        assert!(!d.ends_in_prefix(b"abcdef"));
        assert!(!d.ends_in_prefix(b""));
    }

    #[test]
    fn every_rest_of_every_pattern_may_continue() {
        let pats = vec!["<script".to_string(), "%3Cscript".to_string(), "ab".to_string()];
        let c = Continuations::new(&pats, true);
        for p in &pats {
            for j in 1..p.len() {
                let rest = p[j..].to_ascii_uppercase();
                assert!(c.possible(rest.as_bytes()), "{p} from {j}");
                assert!(c.possible(format!("{rest}zz").as_bytes()), "{p} from {j}, longer payload");
                assert!(c.possible(&rest.as_bytes()[..1]), "{p} from {j}, one byte");
            }
        }
        assert!(!c.possible(b"GET / HTTP/1.1"));
        assert!(!c.possible(b"<script"), "a pattern's first byte never continues it");
        assert!(!c.possible(b""));
    }

    #[test]
    fn detector_has_no_false_negatives_across_fold_chunks() {
        let d = Dpi::new(vec!["<script".into()], true).expect("dpi");
        for at in [0, FOLD_CHUNK - 7, FOLD_CHUNK - 3, FOLD_CHUNK, 3 * FOLD_CHUNK - 5] {
            let mut v = vec![b'a'; 3 * FOLD_CHUNK + 10];
            v[at..at + 7].copy_from_slice(b"<ScRiPt");
            assert!(d.may_match(&v), "at {at}");
        }
        assert!(!d.may_match(&vec![b'a'; 3 * FOLD_CHUNK]));
    }
}
