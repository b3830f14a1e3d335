//! `light_ids`: a light intrusion detector (Figure 1). Counts SYN-only packets per
//! source in fixed windows of trace time; a source that sends more than `syn_threshold`
//! in one window is flagged for good.
//!
//! Ports: `in` → `out` (every packet), `flagged` (copies of packets from flagged sources,
//! e.g. for an off-path DPI), `verdict` (context `{"src_ip": "…", "suspicious": true}`,
//! sent once when a source is flagged, e.g. for a rate limiter).
//!
//! State: `syn_count` (per-flow `[src_ip]`, one counter per source and window),
//! `flagged` (per-flow `[src_ip]`), `packets` (shared counter, non-blocking).

use crate::net::KeyBuf;
use serde_json::json;
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, Packet, TcpFlags};
use streamnf_store::Value;

const SYN_COUNT: usize = 0;
const FLAGGED: usize = 1;
const PACKETS: usize = 2;

const OUT: usize = 0;
const FLAGGED_OUT: usize = 1;
const VERDICT: usize = 2;

/// The light IDS.
#[derive(Debug, Clone)]
pub struct LightIds {
    syn_threshold: i64,
    window_ns: u64,
}

impl Default for LightIds {
    fn default() -> Self {
        LightIds { syn_threshold: 20, window_ns: 1_000_000_000 }
    }
}

impl LightIds {
    /// A detector flagging more than `syn_threshold` SYN-only packets per `window_ns`.
    pub fn new(syn_threshold: u64, window_ns: u64) -> LightIds {
        LightIds {
            syn_threshold: i64::try_from(syn_threshold).unwrap_or(i64::MAX),
            window_ns: window_ns.max(1),
        }
    }

    /// Chain-file constructor: `syn_threshold` (default 20), `window_ms` (default 1000).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["syn_threshold", "window_ms"])?;
        let t = p.u64("syn_threshold", 20)?;
        let w = p.u64("window_ms", 1000)?;
        if w == 0 {
            return Err("parameter `window_ms` must be at least 1".into());
        }
        Ok(Arc::new(LightIds::new(t, w.saturating_mul(1_000_000))))
    }
}

impl NetworkFunction for LightIds {
    fn spec(&self) -> NfSpec {
        let by_src = Flowspace(vec![Field::SrcIp]);
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![
                PortSpec::packets("out"),
                PortSpec::optional_packets("flagged"),
                PortSpec::context("verdict", "verdict"),
            ],
            state: vec![
                StateObjectSpec::per_flow("syn_count", by_src.clone()),
                StateObjectSpec::per_flow("flagged", by_src),
                StateObjectSpec::shared("packets"),
            ],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        ctx.incr_nb(PACKETS, b"", 1)?;
        let Some(ip) = pkt.hdr.ip else {
            ctx.forward(OUT);
            return Ok(());
        };
        let mut src = KeyBuf::new();
        src.ip(ip.src);
        let src = src.as_bytes();
        let mut flagged = matches!(ctx.get(FLAGGED, src)?, Some(Value::Int(1)));
        let syn_only = pkt.hdr.tcp_flags().is_some_and(|f| f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK));
        if syn_only && !flagged {
            let mut key = KeyBuf::new();
            key.push(src).push(&(pkt.ts_ns / self.window_ns).to_be_bytes());
            let n = ctx.incr(SYN_COUNT, key.as_bytes(), 1)?;
            if n > self.syn_threshold {
                flagged = true;
                ctx.set(FLAGGED, src, Value::Int(1))?;
                ctx.emit_context(VERDICT, json!({"src_ip": ip.src.to_string(), "suspicious": true}));
                ctx.alert(
                    Alert::new("suspicious_source")
                        .with("src_ip", ip.src.to_string())
                        .with("syn_count", n)
                        .with("window_ms", self.window_ns / 1_000_000),
                );
            }
        }
        ctx.forward(OUT);
        if flagged {
            ctx.forward(FLAGGED_OUT);
        }
        Ok(())
    }
}
