//! `rate_limiter`: per-source token buckets (Figure 1). By default only sources the IDS
//! flagged (learned from `verdict` context messages) are limited; `scope = "all"` limits
//! every source.
//!
//! The bucket is a custom store operation (`token_bucket`), so refill-and-take is one
//! atomic step in the store and uses trace time, never wall-clock time: replays give the
//! same verdicts. Tokens are kept in millionths, in integers, for the same reason.
//!
//! State: `flagged` (per-flow `[src_ip]`), `bucket` (per-flow `[src_ip]`),
//! `counters` (shared: `passed`, `throttled`).

use crate::net::{ip_key, KeyBuf};
use std::sync::Arc;
use streamnf_dag::{
    ContextMsg, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, Packet};
use streamnf_store::{CustomOpFn, Op, StoreError, Value};

const FLAGGED: usize = 0;
const BUCKET: usize = 1;
const COUNTERS: usize = 2;

/// Name of the custom store operation.
pub const TOKEN_BUCKET_OP: &str = "streamnf.token_bucket.v1";
const MICRO: u128 = 1_000_000;

/// Per-source token-bucket limiter.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate_pps: u64,
    burst: u64,
    limit_all: bool,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { rate_pps: 1000, burst: 100, limit_all: false }
    }
}

impl RateLimiter {
    /// A limiter letting `rate_pps` packets per second through per source, bursts up to `burst`.
    pub fn new(rate_pps: u64, burst: u64, limit_all: bool) -> RateLimiter {
        RateLimiter { rate_pps, burst: burst.max(1), limit_all }
    }

    /// Chain-file constructor: `rate_pps` (1000), `burst` (100), `scope` ("flagged" | "all").
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["rate_pps", "burst", "scope"])?;
        let scope = p.string("scope", "flagged")?;
        let limit_all = match scope.as_str() {
            "flagged" => false,
            "all" => true,
            other => {
                return Err(format!("parameter `scope` must be \"flagged\" or \"all\", found \"{other}\""))
            }
        };
        let burst = p.u64("burst", 100)?;
        if burst == 0 {
            return Err("parameter `burst` must be at least 1".into());
        }
        Ok(Arc::new(RateLimiter::new(p.u64("rate_pps", 1000)?, burst, limit_all)))
    }
}

/// Argument of the token-bucket op: now_ns, rate_pps, burst (big-endian u64 each).
fn bucket_arg(now_ns: u64, rate: u64, burst: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(24);
    a.extend_from_slice(&now_ns.to_be_bytes());
    a.extend_from_slice(&rate.to_be_bytes());
    a.extend_from_slice(&burst.to_be_bytes());
    a
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_be_bytes)
}

/// Refills the bucket for the time since its last use and takes one token.
/// Stored value: Bytes(tokens_micro u64 ‖ last_ns u64). Returns Int(1) if a token was taken.
fn token_bucket(value: &mut Option<Value>, arg: &[u8]) -> Result<Option<Value>, StoreError> {
    let (Some(now), Some(rate), Some(burst)) = (u64_at(arg, 0), u64_at(arg, 8), u64_at(arg, 16)) else {
        return Err(StoreError::Custom("token_bucket: argument must be 24 bytes".into()));
    };
    let cap = u128::from(burst) * MICRO;
    let (mut tokens, last) = match value {
        Some(Value::Bytes(b)) => match (u64_at(b, 0), u64_at(b, 8)) {
            (Some(t), Some(l)) => (u128::from(t), l),
            _ => return Err(StoreError::Custom("token_bucket: corrupt bucket".into())),
        },
        None => (cap, now),
        Some(other) => return Err(StoreError::Custom(format!("token_bucket: not a bucket: {other:?}"))),
    };
    let elapsed = u128::from(now.saturating_sub(last));
    tokens = (tokens + elapsed * u128::from(rate) * MICRO / 1_000_000_000).min(cap);
    let allowed = tokens >= MICRO;
    if allowed {
        tokens -= MICRO;
    }
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&(tokens as u64).to_be_bytes());
    b.extend_from_slice(&now.max(last).to_be_bytes());
    *value = Some(Value::Bytes(b));
    Ok(Some(Value::Int(i64::from(allowed))))
}

impl NetworkFunction for RateLimiter {
    fn spec(&self) -> NfSpec {
        let by_src = Flowspace(vec![Field::SrcIp]);
        NfSpec {
            inputs: vec![PortSpec::packets("in"), PortSpec::context("verdict", "verdict")],
            outputs: vec![PortSpec::packets("out")],
            state: vec![
                StateObjectSpec::per_flow("flagged", by_src.clone()),
                StateObjectSpec::per_flow("bucket", by_src),
                StateObjectSpec::shared("counters"),
            ],
            connection_terminating: false,
        }
    }

    fn custom_ops(&self) -> Vec<(String, CustomOpFn)> {
        vec![(TOKEN_BUCKET_OP.to_string(), Arc::new(token_bucket))]
    }

    fn on_context(&self, _port: usize, msg: &ContextMsg, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let ip = msg
            .get("src_ip")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            .ok_or_else(|| NfError::BadInput(format!("verdict without a valid src_ip: {msg}")))?;
        let suspicious = msg
            .get("suspicious")
            .and_then(|v| v.as_bool())
            .ok_or_else(|| NfError::BadInput(format!("verdict without a boolean `suspicious`: {msg}")))?;
        ctx.set(FLAGGED, &ip_key(ip), Value::Int(i64::from(suspicious)))
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let Some(ip) = pkt.hdr.ip else {
            ctx.forward(0);
            return Ok(());
        };
        let mut src = KeyBuf::new();
        src.ip(ip.src);
        let src = src.as_bytes();
        let limited = self.limit_all || matches!(ctx.get(FLAGGED, src)?, Some(Value::Int(1)));
        if limited {
            let op = ctx
                .custom_op(TOKEN_BUCKET_OP)
                .ok_or_else(|| NfError::State("token bucket operation not registered".into()))?;
            let r = ctx.state(
                BUCKET,
                src,
                Op::Custom { op, arg: bucket_arg(pkt.ts_ns, self.rate_pps, self.burst) },
            )?;
            if !matches!(r, Some(Value::Int(1))) {
                return ctx.incr_nb(COUNTERS, b"throttled", 1);
            }
        }
        ctx.incr_nb(COUNTERS, b"passed", 1)?;
        ctx.forward(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut v = None;
        let take = |v: &mut Option<Value>, t: u64| token_bucket(v, &bucket_arg(t, 10, 3)).expect("op");
        // Burst of 3 at t=0, then nothing.
        for _ in 0..3 {
            assert_eq!(take(&mut v, 0), Some(Value::Int(1)));
        }
        assert_eq!(take(&mut v, 0), Some(Value::Int(0)));
        // 10 pps: one token after 100 ms.
        assert_eq!(take(&mut v, 50_000_000), Some(Value::Int(0)));
        assert_eq!(take(&mut v, 100_000_000), Some(Value::Int(1)));
        assert!(token_bucket(&mut v, b"short").is_err());
    }
}
