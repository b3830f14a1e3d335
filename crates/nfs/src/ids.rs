//! `light_ids`: a light intrusion detector (Figure 1). Counts SYN-only packets per
//! source in fixed windows of trace time; a source that sends more than `syn_threshold`
//! in one window is flagged for good.
//!
//! Ports: `in` → `out` (every packet), `flagged` (copies of packets from flagged sources,
//! e.g. for an off-path DPI), `verdict` (context `{"src_ip": "…", "suspicious": true}`,
//! sent once when a source is flagged, e.g. for a rate limiter).
//!
//! State: `syn_count` (per-flow `[src_ip]`, one entry per source holding its current
//! window and count, updated by the `window_count` custom op: a new window replaces the
//! old one, so past windows never pile up; deleted when the source is flagged),
//! `flagged` (per-flow `[src_ip]`), `packets` (shared counter, non-blocking).
//!
//! This module owns SYN counting and flagging; it never reads the wall clock and keeps
//! nothing outside the store.

use crate::net::KeyBuf;
use serde_json::json;
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, Packet, TcpFlags};
use streamnf_store::{CustomOpFn, Op, StoreError, Value};

const SYN_COUNT: usize = 0;
const FLAGGED: usize = 1;
const PACKETS: usize = 2;

/// Name of the custom store operation counting SYNs in the current window.
pub const WINDOW_COUNT_OP: &str = "streamnf.window_count.v1";

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

/// Counts one event in window `arg` (8-byte big-endian window number) of a per-source
/// entry. Stored value: Bytes(window u64 ‖ count u64), big-endian. A later window than the
/// stored one replaces it (count 1); the same window adds 1; an earlier window (a packet
/// older than the source's newest one) is counted in the stored window, as time never
/// goes backwards for an entry. Returns Int(count in the entry's window).
pub fn window_count(value: &mut Option<Value>, arg: &[u8]) -> Result<Option<Value>, StoreError> {
    let window = <[u8; 8]>::try_from(arg)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Custom("window_count: argument must be 8 bytes".into()))?;
    let (stored, count) = match value {
        None => (window, 0),
        Some(Value::Bytes(b)) if b.len() == 16 => {
            let w = <[u8; 8]>::try_from(&b[..8]).map(u64::from_be_bytes);
            let c = <[u8; 8]>::try_from(&b[8..]).map(u64::from_be_bytes);
            match (w, c) {
                (Ok(w), Ok(c)) => (w, c),
                _ => return Err(StoreError::Custom("window_count: corrupt entry".into())),
            }
        }
        Some(other) => {
            return Err(StoreError::Custom(format!("window_count: not a window entry: {other:?}")))
        }
    };
    let (w, n) = if window > stored { (window, 1) } else { (stored, count.saturating_add(1)) };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&w.to_be_bytes());
    b[8..].copy_from_slice(&n.to_be_bytes());
    match value {
        // Rewrite the stored bytes in place (they are 16 long here): no allocation.
        Some(Value::Bytes(old)) => old.copy_from_slice(&b),
        _ => *value = Some(Value::Bytes(b.to_vec())),
    }
    Ok(Some(Value::Int(i64::try_from(n).unwrap_or(i64::MAX))))
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

    fn custom_ops(&self) -> Vec<(String, CustomOpFn)> {
        vec![(WINDOW_COUNT_OP.to_string(), Arc::new(window_count))]
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
            let op = ctx
                .custom_op(WINDOW_COUNT_OP)
                .ok_or_else(|| NfError::State("window count operation not registered".into()))?;
            let arg = (pkt.ts_ns / self.window_ns).to_be_bytes().to_vec();
            let n = match ctx.state(SYN_COUNT, src, Op::Custom { op, arg })? {
                Some(Value::Int(n)) => n,
                other => return Err(NfError::State(format!("window count returned {other:?}"))),
            };
            if n > self.syn_threshold {
                flagged = true;
                ctx.set(FLAGGED, src, Value::Int(1))?;
                // A flagged source is never counted again: its window entry is garbage.
                ctx.state_nonblocking(SYN_COUNT, src, Op::Delete)?;
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
