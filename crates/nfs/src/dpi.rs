//! `dpi`: deep packet inspection (Figure 1, off-path). Matches many payload signatures
//! at once (Aho–Corasick), counts matches per signature in the store and raises one
//! `dpi_match` alert per signature occurrence in a packet.
//!
//! Ports: `in`; `out` (optional) passes packets on when the DPI sits on-path.
//! State: `matches` (shared, one counter per signature, non-blocking), `packets` (shared).
//! Limits: matches within one packet's payload (signatures split across segments are a
//! later issue).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::Packet;

const MATCHES: usize = 0;
const PACKETS: usize = 1;

/// Default signatures.
pub const DEFAULT_SIGNATURES: &[&str] = &["<script", "cmd.exe", "/etc/passwd", "union select", "../../"];

/// Multi-signature payload matcher.
#[derive(Debug, Clone)]
pub struct Dpi {
    signatures: Vec<String>,
    matcher: AhoCorasick,
}

impl Dpi {
    /// A matcher for `signatures`.
    pub fn new(signatures: Vec<String>, case_insensitive: bool) -> Result<Dpi, String> {
        if signatures.is_empty() || signatures.iter().any(String::is_empty) {
            return Err("signatures must be a non-empty list of non-empty strings".into());
        }
        let matcher = AhoCorasickBuilder::new()
            .ascii_case_insensitive(case_insensitive)
            .match_kind(MatchKind::Standard)
            .build(&signatures)
            .map_err(|e| format!("cannot build the signature matcher: {e}"))?;
        Ok(Dpi { signatures, matcher })
    }

    /// Chain-file constructor: `signatures` (list), `case_insensitive` (default true).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["signatures", "case_insensitive"])?;
        let sigs = p.strings("signatures", DEFAULT_SIGNATURES)?;
        let dpi = Dpi::new(sigs, p.bool("case_insensitive", true)?)
            .map_err(|e| format!("parameter `signatures`: {e}"))?;
        Ok(Arc::new(dpi))
    }
}

impl NetworkFunction for Dpi {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::optional_packets("out")],
            state: vec![StateObjectSpec::shared("matches"), StateObjectSpec::shared("packets")],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        ctx.incr_nb(PACKETS, b"", 1)?;
        let payload = pkt.payload();
        if !payload.is_empty() {
            for m in self.matcher.find_overlapping_iter(payload) {
                let idx = m.pattern().as_usize();
                let sig = self.signatures.get(idx).map(String::as_str).unwrap_or("");
                ctx.incr_nb(MATCHES, sig.as_bytes(), 1)?;
                let mut a = Alert::new("dpi_match").with("signature", sig).with("offset", m.start());
                if let Some(ip) = pkt.hdr.ip {
                    a = a.with("src_ip", ip.src.to_string()).with("dst_ip", ip.dst.to_string());
                }
                if let Some((s, d)) = pkt.hdr.transport.ports() {
                    a = a.with("src_port", s).with("dst_port", d);
                }
                ctx.alert(a);
            }
        }
        ctx.forward(0);
        Ok(())
    }
}
