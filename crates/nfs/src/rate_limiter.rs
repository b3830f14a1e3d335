//! `rate_limiter`: per-source token buckets (Figure 1). By default only sources the IDS
//! flagged (learned from `verdict` context messages) are limited; `scope = "all"` limits
//! every source. Rates come from the chain file: `rate_pps` and `burst` for every source,
//! overridden per source prefix by `classes` (first matching class wins).
//!
//! The bucket is a custom store operation (`token_bucket`), so refill-and-take is one
//! atomic step in the store and uses trace time, never wall-clock time: replays give the
//! same verdicts. Tokens are kept exactly, as integer "nanotokens" (one token = 10⁹): a
//! bucket gains `elapsed_ns × rate_pps` nanotokens, so no rounding is ever lost however
//! often packets arrive.
//!
//! State: `flagged` (per-flow `[src_ip]`), `bucket` (per-flow `[src_ip]`),
//! `counters` (shared: `passed`, `throttled`).
//!
//! This module owns the bucket arithmetic and the class lookup; it never reads the wall
//! clock and never keeps anything outside the store.

use crate::net::{ip_key, Cidr, KeyBuf};
use std::net::IpAddr;
use std::sync::Arc;
use streamnf_dag::{
    ContextMsg, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, Packet};
use streamnf_store::{CustomOpFn, Op, StoreError, Value};

const FLAGGED: usize = 0;
const BUCKET: usize = 1;
const COUNTERS: usize = 2;

/// Name of the custom store operation (v2: exact nanotoken buckets; v1 kept millionths
/// and lost the remainder of every refill).
pub const TOKEN_BUCKET_OP: &str = "streamnf.token_bucket.v2";
/// Nanotokens per token.
const NANO: u128 = 1_000_000_000;

/// Rate and burst of the sources in one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateClass {
    /// Class name (for messages and docs).
    pub name: String,
    /// Sources this class applies to.
    pub src: Cidr,
    /// Tokens per second of trace time.
    pub rate_pps: u64,
    /// Bucket capacity (≥ 1).
    pub burst: u64,
}

/// Per-source token-bucket limiter.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate_pps: u64,
    burst: u64,
    limit_all: bool,
    classes: Vec<RateClass>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { rate_pps: 1000, burst: 100, limit_all: false, classes: Vec::new() }
    }
}

impl RateLimiter {
    /// A limiter letting `rate_pps` packets per second through per source, bursts up to `burst`.
    pub fn new(rate_pps: u64, burst: u64, limit_all: bool) -> RateLimiter {
        RateLimiter { rate_pps, burst: burst.max(1), limit_all, classes: Vec::new() }
    }

    /// The same limiter with per-prefix rates: a source in a class's prefix gets that
    /// class's rate and burst (the first matching class wins); other sources the defaults.
    pub fn with_classes(mut self, classes: Vec<RateClass>) -> RateLimiter {
        self.classes = classes.into_iter().map(|c| RateClass { burst: c.burst.max(1), ..c }).collect();
        self
    }

    /// Rate and burst applying to `src`.
    pub fn limits_for(&self, src: IpAddr) -> (u64, u64) {
        self.classes
            .iter()
            .find(|c| c.src.contains(src))
            .map_or((self.rate_pps, self.burst), |c| (c.rate_pps, c.burst))
    }

    /// Chain-file constructor: `rate_pps` (1000), `burst` (100), `scope` ("flagged" | "all"),
    /// `classes` (array of `{ src = "CIDR", rate_pps = N, burst = N, name = "…" }`).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["rate_pps", "burst", "scope", "classes"])?;
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
        let rate = p.u64("rate_pps", 1000)?;
        let classes = match p.0.get("classes") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| class_from_toml(i, v, rate, burst))
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(format!("parameter `classes` must be an array of tables, found {v}")),
        };
        Ok(Arc::new(RateLimiter::new(rate, burst, limit_all).with_classes(classes)))
    }
}

/// Reads `classes[i]`; `rate_pps` and `burst` default to the limiter's own.
fn class_from_toml(i: usize, v: &toml::Value, rate: u64, burst: u64) -> Result<RateClass, String> {
    let at = |msg: String| format!("parameter `classes`: classes[{i}]: {msg}");
    let toml::Value::Table(t) = v else {
        return Err(at(format!(
            "must be a table like {{ src = \"10.0.0.0/8\", rate_pps = 100 }}, found {v}"
        )));
    };
    let mut c =
        RateClass { name: format!("class{i}"), src: Cidr::parse("0.0.0.0/0")?, rate_pps: rate, burst };
    let mut has_src = false;
    for (k, v) in t {
        match (k.as_str(), v) {
            ("src", toml::Value::String(s)) => {
                c.src = Cidr::parse(s).map_err(|e| at(format!("`src`: {e}")))?;
                has_src = true;
            }
            ("name", toml::Value::String(s)) => c.name = s.clone(),
            ("rate_pps", toml::Value::Integer(n)) if *n >= 0 => c.rate_pps = *n as u64,
            ("burst", toml::Value::Integer(n)) if *n >= 1 => c.burst = *n as u64,
            ("src" | "name", other) => return Err(at(format!("`{k}` must be a string, found {other}"))),
            ("rate_pps", other) => {
                return Err(at(format!("`rate_pps` must be a non-negative integer, found {other}")))
            }
            ("burst", other) => return Err(at(format!("`burst` must be an integer ≥ 1, found {other}"))),
            _ => return Err(at(format!("unknown key `{k}` (known: src, rate_pps, burst, name)"))),
        }
    }
    if !has_src {
        return Err(at("`src` is missing (an address or CIDR prefix)".into()));
    }
    Ok(c)
}

/// Argument of the token-bucket op: now_ns, rate_pps, burst (big-endian u64 each).
fn bucket_arg(now_ns: u64, rate: u64, burst: u64) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[..8].copy_from_slice(&now_ns.to_be_bytes());
    a[8..16].copy_from_slice(&rate.to_be_bytes());
    a[16..].copy_from_slice(&burst.to_be_bytes());
    a
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(u64::from_be_bytes)
}

fn u128_at(b: &[u8], at: usize) -> Option<u128> {
    b.get(at..at + 16).and_then(|s| <[u8; 16]>::try_from(s).ok()).map(u128::from_be_bytes)
}

/// Refills the bucket for the trace time since its last use and takes one token.
/// Stored value: Bytes(nanotokens u128 ‖ last_ns u64), 24 bytes big-endian. A missing
/// bucket is full. Returns Int(1) if a token was taken, Int(0) if not.
pub fn token_bucket(value: &mut Option<Value>, arg: &[u8]) -> Result<Option<Value>, StoreError> {
    let (Some(now), Some(rate), Some(burst), 24) =
        (u64_at(arg, 0), u64_at(arg, 8), u64_at(arg, 16), arg.len())
    else {
        return Err(StoreError::Custom("token_bucket: argument must be 24 bytes".into()));
    };
    let cap = u128::from(burst) * NANO;
    let (tokens, last) = match value {
        Some(Value::Bytes(b)) if b.len() == 24 => match (u128_at(b, 0), u64_at(b, 16)) {
            (Some(t), Some(l)) => (t, l),
            _ => return Err(StoreError::Custom("token_bucket: corrupt bucket".into())),
        },
        None => (cap, now),
        Some(other) => return Err(StoreError::Custom(format!("token_bucket: not a bucket: {other:?}"))),
    };
    // u64 × u64 fits in u128; a bucket never holds more than `cap`.
    let elapsed = u128::from(now.saturating_sub(last));
    let mut tokens = tokens.saturating_add(elapsed * u128::from(rate)).min(cap);
    let allowed = tokens >= NANO;
    if allowed {
        tokens -= NANO;
    }
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(&tokens.to_be_bytes());
    b[16..].copy_from_slice(&now.max(last).to_be_bytes());
    match value {
        // Rewrite the stored bytes in place: no allocation per packet.
        Some(Value::Bytes(old)) => old.copy_from_slice(&b),
        _ => *value = Some(Value::Bytes(b.to_vec())),
    }
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
            let (rate, burst) = self.limits_for(ip.src);
            let op = ctx
                .custom_op(TOKEN_BUCKET_OP)
                .ok_or_else(|| NfError::State("token bucket operation not registered".into()))?;
            let r =
                ctx.state(BUCKET, src, Op::Custom { op, arg: bucket_arg(pkt.ts_ns, rate, burst).to_vec() })?;
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
