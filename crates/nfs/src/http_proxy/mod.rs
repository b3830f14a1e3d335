//! `http_proxy`: an on-path HTTP/1.x caching proxy (§6) whose cache lives in the store and is
//! shared by all of its instances.
//!
//! The proxy watches TCP connections to the server ports in `ports`. Per connection it parses
//! the client's requests (pipelined requests wait in a FIFO of outstanding requests) and the
//! server's responses (status line, headers, `Content-Length` body), both across segment
//! boundaries with bounded buffers. A `GET` whose URL has a complete cached `200` response is
//! a **hit**: the request is not forwarded, and the proxy answers the client itself with
//! [`NfContext::send_packet`] (TCP segments from the server's address and port, with the
//! server's next sequence number and the client's next sequence number as acknowledgement,
//! valid checksums). The trace is a replay, so the origin's own answer to a served request
//! still arrives later: the proxy drops it. A **miss** is forwarded; when its response is
//! cacheable (`200`, `Content-Length` ≤ `max_object_bytes`, no `Cache-Control: no-store`,
//! `private` or `no-cache`), the proxy copies it into the store segment by segment (the
//! per-entry *transferred* index says how much has arrived) and publishes the entry once the
//! last byte is in. Only complete entries are served.
//!
//! **Determinism across instances.** The proxy partitions its input by the origin server's
//! address ([`NetworkFunction::partition_hash`]) and a cache entry's identity includes that
//! address, so every read and write of one entry happens on one task, in logical-clock order.
//! A request at clock `c` is a hit exactly when the entry was completed by a response whose
//! last byte had a clock below `c` (the entry stores that clock, and the lookup checks it), so
//! any number of instances answers exactly as one instance does.
//!
//! This module owns HTTP framing, the cache's fill and hit decisions, and the construction of
//! answer frames. It must never keep state outside the store (the struct holds configuration
//! only), never serve an entry that is incomplete or whose stored URL differs from the
//! request's (a hash collision is a miss), never let a buffer grow past its bound, and never
//! panic on input bytes.

use crate::net::{ip_key, KeyBuf};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use streamnf_dag::{
    NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::checksum::{checksum, ones_complement_sum};
use streamnf_packet::{Field, FlowKey, Flowspace, IpInfo, LinkType, Packet, TcpFlags, Transport};
use streamnf_store::{Op, Value};

mod answer;
mod entry;
mod http;
mod record;

use answer::*;
use entry::*;
use http::*;
use record::*;

pub use entry::Entry;
pub use http::{parse_request_head, parse_response_head, Framing, RequestHead, ResponseHead};

/// State objects, in declaration order.
const CONN: usize = 0;
const CACHE: usize = 1;
const DATA: usize = 2;
const TRANSFERRED: usize = 3;
const HITS: usize = 4;
const COUNTERS: usize = 5;
/// The one output port.
const OUT: usize = 0;

/// Names of the shared counters (keys of the `counters` object).
pub mod counter {
    /// Requests parsed (`hits + misses`).
    pub const REQUESTS: &str = "requests";
    /// Requests answered from the cache.
    pub const HITS: &str = "hits";
    /// Requests forwarded to the origin.
    pub const MISSES: &str = "misses";
    /// Responses stored as a new cache entry.
    pub const FILLS: &str = "fills";
    /// Cacheable responses whose copy was not stored: the entry was already there (or held
    /// another URL with the same key hash), or the copy did not have the expected length.
    pub const FILLS_DISCARDED: &str = "fills_discarded";
    /// Forwarded responses that could not be cached (status, headers, size, request method).
    pub const UNCACHEABLE: &str = "uncacheable";
    /// Payload bytes the proxy sent in its answers.
    pub const SERVED_BYTES: &str = "served_bytes";
    /// Origin responses to served requests, dropped.
    pub const DUPLICATES_DROPPED: &str = "duplicates_dropped";
    /// Input the parser could not follow (bad request or status line, header over
    /// `max_header_bytes`, unsupported framing); counted once per event.
    pub const UNPARSABLE: &str = "unparsable";
}

/// Configuration of an [`HttpProxy`] (the chain-file parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// TCP server ports the proxy handles.
    pub ports: Vec<u16>,
    /// Largest `Content-Length` of a response that is cached.
    pub max_object_bytes: usize,
    /// Largest request or response header (request line or status line included) the proxy
    /// buffers; longer ones are skipped and counted as unparsable.
    pub max_header_bytes: usize,
    /// Largest payload of one answer segment.
    pub mss: usize,
    /// Most outstanding requests per connection; past it the connection is passed through.
    pub max_pipeline: usize,
    /// Bits of the URL hash used as the cache key (64 in production; tests lower it to force
    /// collisions).
    pub key_bits: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            ports: vec![80, 8080],
            max_object_bytes: 64 * 1024,
            max_header_bytes: 8 * 1024,
            mss: 1460,
            max_pipeline: 16,
            key_bits: 64,
        }
    }
}

/// The caching proxy (vertex kind `http_proxy`).
pub struct HttpProxy {
    cfg: ProxyConfig,
    /// One bit per TCP port: set when the port is in `ports`.
    port_set: Box<[u64]>,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy").field("cfg", &self.cfg).finish()
    }
}

impl Default for HttpProxy {
    fn default() -> Self {
        HttpProxy::new(ProxyConfig::default())
    }
}

/// An integer parameter within `lo..=hi`.
fn bounded(p: &Params, key: &str, default: u64, lo: u64, hi: u64) -> Result<u64, String> {
    let v = p.u64(key, default)?;
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(format!("parameter `{key}` must be in {lo}..={hi}, found {v}"))
    }
}

impl HttpProxy {
    /// A proxy with configuration `cfg` (values are clamped to their documented ranges).
    pub fn new(mut cfg: ProxyConfig) -> HttpProxy {
        cfg.mss = cfg.mss.clamp(64, 9000);
        cfg.max_header_bytes = cfg.max_header_bytes.clamp(256, 65536);
        cfg.max_object_bytes = cfg.max_object_bytes.min(16 << 20);
        cfg.max_pipeline = cfg.max_pipeline.clamp(1, 255);
        cfg.key_bits = cfg.key_bits.clamp(1, 64);
        let mut port_set = vec![0u64; 1024].into_boxed_slice();
        for &p in &cfg.ports {
            port_set[usize::from(p) / 64] |= 1 << (p % 64);
        }
        HttpProxy { cfg, port_set }
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Chain-file constructor. Parameters (all optional): `ports` (list, default [80, 8080]),
    /// `max_object_bytes` (0..=16777216, default 65536), `max_header_bytes` (256..=65536,
    /// default 8192), `mss` (64..=9000, default 1460), `max_pipeline` (1..=255, default 16),
    /// `key_bits` (1..=64, default 64; a testing aid).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["ports", "max_object_bytes", "max_header_bytes", "mss", "max_pipeline", "key_bits"])?;
        let d = ProxyConfig::default();
        let cfg = ProxyConfig {
            ports: p.ports("ports", &d.ports)?,
            max_object_bytes: bounded(p, "max_object_bytes", d.max_object_bytes as u64, 0, 16 << 20)?
                as usize,
            max_header_bytes: bounded(p, "max_header_bytes", d.max_header_bytes as u64, 256, 65536)? as usize,
            mss: bounded(p, "mss", d.mss as u64, 64, 9000)? as usize,
            max_pipeline: bounded(p, "max_pipeline", d.max_pipeline as u64, 1, 255)? as usize,
            key_bits: bounded(p, "key_bits", u64::from(d.key_bits), 1, 64)? as u32,
        };
        Ok(Arc::new(HttpProxy::new(cfg)))
    }

    fn watched(&self, port: u16) -> bool {
        self.port_set.get(usize::from(port) / 64).is_some_and(|w| w & (1 << (port % 64)) != 0)
    }

    /// Which end is the server: `Some(true)` when the destination is, `Some(false)` when the
    /// source is, `None` when neither port is watched. When both are, the lower port (then
    /// the lower address) is the server, so both directions agree.
    fn dst_is_server(&self, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Option<bool> {
        match (self.watched(src.1), self.watched(dst.1)) {
            (false, false) => None,
            (false, true) => Some(true),
            (true, false) => Some(false),
            (true, true) => Some((dst.1, dst.0) < (src.1, src.0)),
        }
    }

    /// The cache key of a URL identity: its hash cut to `key_bits` bits.
    pub fn url_key(&self, identity: &[u8]) -> u64 {
        let h = FlowKey::from_bytes(identity).stable_hash();
        if self.cfg.key_bits >= 64 {
            h
        } else {
            h & ((1u64 << self.cfg.key_bits) - 1)
        }
    }
}

/// What one client segment carried.
#[derive(Default)]
struct ClientSegment {
    /// Some request bytes of this segment go (or may go) to the origin.
    origin_bytes: bool,
    /// Requests completed in this segment.
    requests: usize,
}

impl HttpProxy {
    fn count(ctx: &mut dyn NfContext, name: &str, n: i64) -> Result<(), NfError> {
        ctx.incr_nb(COUNTERS, name.as_bytes(), n)
    }

    /// Marks the connection as no longer followed (after counting one unparsable event) and
    /// aborts its fill.
    fn desync(&self, c: &mut Conn, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        Self::count(ctx, counter::UNPARSABLE, 1)?;
        self.abort_fill(c, ctx)?;
        c.flags |= F_DESYNC;
        c.fifo.clear();
        c.req_pending = Vec::new();
        c.resp_pending = Vec::new();
        Ok(())
    }

    /// Forgets the fill in progress, if any, and its partial copy.
    fn abort_fill(&self, c: &mut Conn, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        if c.resp_disp == DISP_FILL {
            let pk = data_key(c.fill_key, c.filler);
            ctx.state_nonblocking(DATA, &pk, Op::Delete)?;
            ctx.state_nonblocking(TRANSFERRED, &pk, Op::Delete)?;
            c.resp_disp = DISP_PASS;
            c.fill_url = Vec::new();
        }
        Ok(())
    }

    /// Client bytes: completes requests, serves the hits. Returns what the segment carried.
    fn client_bytes(
        &self,
        c: &mut Conn,
        data: &[u8],
        answer: &AnswerTo<'_>,
        ctx: &mut dyn NfContext,
    ) -> Result<ClientSegment, NfError> {
        let mut seg = ClientSegment::default();
        let mut rest = data;
        while !rest.is_empty() && c.flags & F_DESYNC == 0 {
            match c.req_mode {
                REQ_BODY => {
                    let n = rest.len().min(usize::try_from(c.req_body_left).unwrap_or(usize::MAX));
                    rest = &rest[n..];
                    c.req_body_left -= n as u64;
                    seg.origin_bytes = true;
                    if c.req_body_left == 0 {
                        c.req_mode = REQ_HEAD;
                    }
                }
                REQ_SKIP_HEAD => {
                    seg.origin_bytes = true;
                    match scan_header_end(&mut c.req_scan, rest) {
                        Some(end) => {
                            rest = &rest[end..];
                            c.req_mode = REQ_HEAD;
                            c.req_scan = 0;
                            // An overlong request still gets a response: keep the FIFO aligned.
                            self.enqueue(c, Item { kind: ITEM_OTHER, ..Item::default() }, ctx)?;
                        }
                        None => rest = &[],
                    }
                }
                _ => {
                    if c.req_pending.is_empty() {
                        // Empty lines between requests are allowed.
                        let skip = rest.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(rest.len());
                        rest = &rest[skip..];
                        if rest.is_empty() {
                            break;
                        }
                    }
                    match scan_header_end(&mut c.req_scan, rest) {
                        Some(end) if c.req_pending.len() + end <= self.cfg.max_header_bytes => {
                            let mut head = std::mem::take(&mut c.req_pending);
                            head.extend_from_slice(&rest[..end]);
                            rest = &rest[end..];
                            c.req_scan = 0;
                            seg.requests += 1;
                            let served = self.request(c, &head, answer, ctx)?;
                            seg.origin_bytes |= !served;
                        }
                        Some(end) => {
                            // Complete, but longer than allowed.
                            rest = &rest[end..];
                            c.req_pending = Vec::new();
                            c.req_scan = 0;
                            seg.origin_bytes = true;
                            Self::count(ctx, counter::UNPARSABLE, 1)?;
                            self.enqueue(c, Item { kind: ITEM_OTHER, ..Item::default() }, ctx)?;
                        }
                        None if c.req_pending.len() + rest.len() <= self.cfg.max_header_bytes => {
                            c.req_pending.extend_from_slice(rest);
                            rest = &[];
                            seg.origin_bytes = true;
                        }
                        None => {
                            c.req_pending = Vec::new();
                            c.req_mode = REQ_SKIP_HEAD;
                            rest = &[];
                            seg.origin_bytes = true;
                            Self::count(ctx, counter::UNPARSABLE, 1)?;
                        }
                    }
                }
            }
        }
        Ok(seg)
    }

    /// Adds an outstanding request; too many of them and the connection is given up.
    fn enqueue(&self, c: &mut Conn, item: Item, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        if c.fifo.len() >= self.cfg.max_pipeline {
            return self.desync(c, ctx);
        }
        c.fifo.push_back(item);
        Ok(())
    }

    /// One complete request header. Returns true when the proxy answered it from the cache.
    fn request(
        &self,
        c: &mut Conn,
        head: &[u8],
        answer: &AnswerTo<'_>,
        ctx: &mut dyn NfContext,
    ) -> Result<bool, NfError> {
        let Some(req) = parse_request_head(head) else {
            self.desync(c, ctx)?;
            return Ok(false);
        };
        if c.fifo.len() >= self.cfg.max_pipeline {
            self.desync(c, ctx)?;
            return Ok(false);
        }
        Self::count(ctx, counter::REQUESTS, 1)?;
        if req.body_len > 0 {
            c.req_mode = REQ_BODY;
            c.req_body_left = req.body_len;
        }
        let mut item = Item { kind: if req.head { ITEM_HEAD } else { ITEM_OTHER }, ..Item::default() };
        if let (true, 0, Some(url)) = (req.get, req.body_len, req.url) {
            let mut identity = Vec::with_capacity(answer.origin.len() + url.len());
            identity.extend_from_slice(&answer.origin);
            identity.extend_from_slice(&url);
            let key = self.url_key(&identity);
            if c.all_served() {
                if let Some(entry) = self.lookup(key, &identity, ctx)? {
                    self.serve(c, &entry, key, answer, ctx)?;
                    c.fifo.push_back(Item { kind: ITEM_SERVED, ..Item::default() });
                    return Ok(true);
                }
            }
            item = Item { kind: ITEM_GET, key, url: identity };
        }
        Self::count(ctx, counter::MISSES, 1)?;
        self.enqueue(c, item, ctx)?;
        Ok(false)
    }

    /// The complete entry for `identity`, if one was completed before the current clock.
    fn lookup(&self, key: u64, identity: &[u8], ctx: &mut dyn NfContext) -> Result<Option<Entry>, NfError> {
        match ctx.get(CACHE, &key8(key))? {
            Some(Value::Bytes(b)) => {
                let e = Entry::decode(&b)
                    .ok_or_else(|| NfError::State("http_proxy: corrupt cache entry".into()))?;
                Ok((e.url == identity && e.clock < ctx.clock()).then_some(e))
            }
            None => Ok(None),
            Some(other) => Err(NfError::State(format!("http_proxy: corrupt cache entry {other:?}"))),
        }
    }

    /// Sends `entry`'s response to the client as MSS-sized segments.
    fn serve(
        &self,
        c: &mut Conn,
        entry: &Entry,
        key: u64,
        answer: &AnswerTo<'_>,
        ctx: &mut dyn NfContext,
    ) -> Result<(), NfError> {
        let mut seq = answer.ack_seq.unwrap_or(c.answers_end);
        if c.flags & F_ANSWERED != 0 && seq_after(c.answers_end, seq) {
            seq = c.answers_end;
        }
        let dk = data_key(key, entry.filler);
        let parts = match ctx.get(DATA, &dk)? {
            Some(Value::List(l)) => l,
            _ => return Err(NfError::State("http_proxy: a cache entry without its data".into())),
        };
        let total: usize = parts.iter().map(Vec::len).sum();
        if total != entry.len as usize {
            return Err(NfError::State("http_proxy: a cache entry with data of the wrong length".into()));
        }
        let mut chunks = parts.iter().map(Vec::as_slice);
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(4);
        let mut sent = 0usize;
        let mut carry: &[u8] = &[];
        while sent < total {
            // One segment of up to `mss` bytes, taken from the stored parts without copying.
            pieces.clear();
            let mut len = 0;
            while len < self.cfg.mss {
                if carry.is_empty() {
                    match chunks.next() {
                        Some(c) => carry = c,
                        None => break,
                    }
                }
                let n = carry.len().min(self.cfg.mss - len);
                pieces.push(&carry[..n]);
                carry = &carry[n..];
                len += n;
            }
            sent += len;
            let pkt = answer.segment(seq, answer.client_next, sent >= total, &pieces).ok_or_else(|| {
                NfError::BadInput("http_proxy: cannot build an answer for this packet".into())
            })?;
            ctx.send_packet(OUT, pkt);
            seq = seq.wrapping_add(len as u32);
        }
        c.answers_end = seq;
        c.flags |= F_ANSWERED;
        Self::count(ctx, counter::HITS, 1)?;
        Self::count(ctx, counter::SERVED_BYTES, total as i64)?;
        ctx.incr_nb(HITS, &key8(key), 1)
    }

    /// Server bytes: frames responses, copies cacheable ones, and drops the origin's answers
    /// to served requests. Returns true when any byte of the segment must reach the client.
    /// `seq` is the sequence number of `data[0]`.
    fn server_bytes(
        &self,
        c: &mut Conn,
        data: &[u8],
        seq: u32,
        conn_id: &[u8],
        ctx: &mut dyn NfContext,
    ) -> Result<bool, NfError> {
        let mut pass = false;
        let mut rest = data;
        let mut cur = seq;
        while !rest.is_empty() && c.flags & F_DESYNC == 0 {
            match c.resp_mode {
                RESP_UNTIL_CLOSE => return Ok(true),
                RESP_BODY => {
                    let left = c.resp_end.wrapping_sub(cur) as i32;
                    let n = if left > 0 { rest.len().min(left as usize) } else { 0 };
                    let (body, tail) = rest.split_at(n);
                    rest = tail;
                    cur = cur.wrapping_add(n as u32);
                    self.body_bytes(c, body, &mut pass, ctx)?;
                    if cur == c.resp_end || n == 0 {
                        self.response_done(c, ctx)?;
                    }
                }
                _ => match scan_header_end(&mut c.resp_scan, rest) {
                    Some(end) if c.resp_pending.len() + end <= self.cfg.max_header_bytes => {
                        let mut head = std::mem::take(&mut c.resp_pending);
                        head.extend_from_slice(&rest[..end]);
                        rest = &rest[end..];
                        cur = cur.wrapping_add(end as u32);
                        c.resp_scan = 0;
                        self.response_head(c, head, cur, conn_id, &mut pass, ctx)?;
                    }
                    Some(_) => {
                        self.desync(c, ctx)?;
                        return Ok(true);
                    }
                    None if c.resp_pending.len() + rest.len() <= self.cfg.max_header_bytes => {
                        // A head still incomplete: the origin's duplicate when the request was
                        // served (dropped), otherwise bytes for the client.
                        let front_served = c.fifo.front().is_some_and(|it| it.kind == ITEM_SERVED);
                        pass |= !front_served;
                        c.resp_pending.extend_from_slice(rest);
                        rest = &[];
                    }
                    None => {
                        self.desync(c, ctx)?;
                        return Ok(true);
                    }
                },
            }
        }
        Ok(pass || c.flags & F_DESYNC != 0)
    }

    /// A complete response header block.
    fn response_head(
        &self,
        c: &mut Conn,
        head: Vec<u8>,
        body_start: u32,
        conn_id: &[u8],
        pass: &mut bool,
        ctx: &mut dyn NfContext,
    ) -> Result<(), NfError> {
        let front_kind = c.fifo.front().map(|it| it.kind);
        let Some(resp) = parse_response_head(&head, front_kind == Some(ITEM_HEAD)) else {
            return self.desync(c, ctx);
        };
        if resp.framing == Framing::Interim {
            *pass |= front_kind != Some(ITEM_SERVED);
            return Ok(());
        }
        let item = c.fifo.pop_front().unwrap_or_default();
        c.resp_disp = DISP_PASS;
        if item.kind == ITEM_SERVED {
            c.resp_disp = DISP_DROP;
            Self::count(ctx, counter::DUPLICATES_DROPPED, 1)?;
        } else if item.kind == ITEM_GET
            && resp.cacheable
            && matches!(resp.framing, Framing::Length(n) if n <= self.cfg.max_object_bytes as u64)
        {
            let body = match resp.framing {
                Framing::Length(n) => n,
                _ => 0,
            };
            let mut id = Vec::with_capacity(conn_id.len() + 8);
            id.extend_from_slice(conn_id);
            id.extend_from_slice(&ctx.clock().to_be_bytes());
            c.resp_disp = DISP_FILL;
            c.fill_key = item.key;
            c.filler = FlowKey::from_bytes(&id).stable_hash();
            c.fill_expected = u32::try_from(head.len() as u64 + body).unwrap_or(u32::MAX);
            c.fill_url = item.url;
            self.store_part(c, &head, ctx)?;
        } else {
            Self::count(ctx, counter::UNCACHEABLE, 1)?;
        }
        *pass |= c.resp_disp != DISP_DROP;
        match resp.framing {
            Framing::Length(0) => self.response_done(c, ctx)?,
            Framing::Length(n) if n <= MAX_FRAMED_BODY => {
                c.resp_mode = RESP_BODY;
                c.resp_end = body_start.wrapping_add(n as u32);
            }
            _ => {
                c.resp_mode = RESP_UNTIL_CLOSE;
                self.abort_fill(c, ctx)?;
            }
        }
        Ok(())
    }

    fn body_bytes(
        &self,
        c: &mut Conn,
        body: &[u8],
        pass: &mut bool,
        ctx: &mut dyn NfContext,
    ) -> Result<(), NfError> {
        *pass |= c.resp_disp != DISP_DROP;
        if c.resp_disp == DISP_FILL && !body.is_empty() {
            self.store_part(c, body, ctx)?;
        }
        Ok(())
    }

    /// Appends bytes to the partial copy and moves the transferred index.
    fn store_part(&self, c: &Conn, bytes: &[u8], ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let pk = data_key(c.fill_key, c.filler);
        ctx.state_nonblocking(DATA, &pk, Op::Push { back: true, item: bytes.to_vec() })?;
        ctx.incr_nb(TRANSFERRED, &pk, bytes.len() as i64)
    }

    /// The current response ended: publish its copy, if it was being copied.
    fn response_done(&self, c: &mut Conn, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        c.resp_mode = RESP_HEAD;
        c.resp_end = 0;
        if c.resp_disp != DISP_FILL {
            c.resp_disp = DISP_PASS;
            return Ok(());
        }
        let dk = data_key(c.fill_key, c.filler);
        let transferred = ctx.get_int(TRANSFERRED, &dk)?;
        ctx.state_nonblocking(TRANSFERRED, &dk, Op::Delete)?;
        c.resp_disp = DISP_PASS;
        let url = std::mem::take(&mut c.fill_url);
        let published = if transferred == i64::from(c.fill_expected) {
            let e = Entry { clock: ctx.clock(), filler: c.filler, len: c.fill_expected, url };
            let op = Op::CompareAndSet { expected: None, new: Some(Value::Bytes(e.encode())) };
            ctx.state(CACHE, &key8(c.fill_key), op)? == Some(Value::Int(1))
        } else {
            false
        };
        if published {
            Self::count(ctx, counter::FILLS, 1)
        } else {
            ctx.state_nonblocking(DATA, &dk, Op::Delete)?;
            Self::count(ctx, counter::FILLS_DISCARDED, 1)
        }
    }
}

/// The key of a connection, the same for both directions: the lower endpoint, then the
/// higher one (address ‖ port each).
fn conn_key(a: (IpAddr, u16), b: (IpAddr, u16)) -> KeyBuf {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut k = KeyBuf::new();
    k.ip(lo.0).u16(lo.1).ip(hi.0).u16(hi.1);
    k
}

impl NetworkFunction for HttpProxy {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out")],
            state: vec![
                StateObjectSpec::per_flow("conn", Flowspace(vec![Field::Connection])),
                StateObjectSpec::shared("cache"),
                StateObjectSpec::shared("data"),
                StateObjectSpec::shared("transferred"),
                StateObjectSpec::shared("hits"),
                StateObjectSpec::shared("counters"),
            ],
            connection_terminating: false,
        }
    }

    fn partition_hash(&self, pkt: &Packet) -> Option<u64> {
        let ip = pkt.hdr.ip?;
        let Transport::Tcp { src_port, dst_port, .. } = pkt.hdr.transport else { return None };
        let server =
            if self.dst_is_server((ip.src, src_port), (ip.dst, dst_port))? { ip.dst } else { ip.src };
        let mut k = KeyBuf::new();
        k.ip(server);
        Some(FlowKey::from_bytes(k.as_bytes()).stable_hash())
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        if self.inspect(pkt, ctx)? {
            ctx.forward(OUT);
        }
        Ok(())
    }
}

impl HttpProxy {
    /// Everything but forwarding; returns whether the packet goes on.
    fn inspect(&self, pkt: &Packet, ctx: &mut dyn NfContext) -> Result<bool, NfError> {
        let Some(ip) = pkt.hdr.ip else { return Ok(true) };
        let Transport::Tcp { src_port, dst_port, seq, ack, flags, .. } = pkt.hdr.transport else {
            return Ok(true);
        };
        let Some(to_server) = self.dst_is_server((ip.src, src_port), (ip.dst, dst_port)) else {
            return Ok(true);
        };
        let payload = pkt.payload();
        let key = conn_key((ip.src, src_port), (ip.dst, dst_port));
        let key = key.as_bytes();
        let syn = flags.has(TcpFlags::SYN);
        let fin = flags.has(TcpFlags::FIN);
        let rst = flags.has(TcpFlags::RST);
        if payload.is_empty() && !fin && !rst && !syn {
            return Ok(true);
        }
        let old = match ctx.get(CONN, key)? {
            None => None,
            Some(Value::Bytes(b)) => Some(b),
            Some(other) => {
                return Err(NfError::State(format!("http_proxy: corrupt connection record {other:?}")))
            }
        };
        if payload.is_empty() && old.is_none() {
            return Ok(true);
        }
        let mut c = match &old {
            Some(b) => Conn::decode_bytes(b)
                .ok_or_else(|| NfError::State("http_proxy: corrupt connection record".into()))?,
            None => Conn::default(),
        };
        if syn && !flags.has(TcpFlags::ACK) && old.is_some() {
            // A new connection on the same addresses and ports: start over.
            self.abort_fill(&mut c, ctx)?;
            c = Conn::default();
        }
        let mut forward = true;
        if !payload.is_empty() && c.flags & F_DESYNC == 0 {
            if to_server {
                let answer = AnswerTo {
                    tpl: pkt,
                    ip,
                    server_port: dst_port,
                    client_port: src_port,
                    origin: ip_key(ip.dst),
                    ack_seq: flags.has(TcpFlags::ACK).then_some(ack),
                    client_next: seq
                        .wrapping_add(payload.len() as u32)
                        .wrapping_add(u32::from(syn))
                        .wrapping_add(u32::from(fin)),
                };
                let seg = self.client_bytes(&mut c, payload, &answer, ctx)?;
                forward = seg.origin_bytes || seg.requests == 0 || c.flags & F_DESYNC != 0;
            } else {
                let first = seq.wrapping_add(u32::from(syn));
                forward = self.server_bytes(&mut c, payload, first, key, ctx)?;
            }
        }
        if fin {
            c.flags |= if to_server { F_FIN_CLIENT } else { F_FIN_SERVER };
        }
        let closed = rst || c.flags & (F_FIN_CLIENT | F_FIN_SERVER) == F_FIN_CLIENT | F_FIN_SERVER;
        if closed {
            self.abort_fill(&mut c, ctx)?;
            if old.is_some() {
                ctx.state(CONN, key, Op::Delete)?;
            }
        } else if !(old.is_none() && c == Conn::default()) {
            let new = c.encode();
            if old.as_deref() != Some(&new[..]) {
                ctx.set(CONN, key, Value::Bytes(new))?;
            }
        }
        Ok(forward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end_is_found_across_pieces() {
        let whole = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        for cut in 0..whole.len() {
            let mut st = 0;
            let (a, b) = whole.split_at(cut);
            let end = match scan_header_end(&mut st, a) {
                Some(e) => Some(e),
                None => scan_header_end(&mut st, b).map(|e| e + cut),
            };
            assert_eq!(end, Some(whole.len() - 4), "cut at {cut}");
        }
        let mut st = 0;
        assert_eq!(scan_header_end(&mut st, b"GET / HTTP/1.0\n\nx"), Some(16));
    }

    #[test]
    fn requests_parse() {
        let r = parse_request_head(b"GET /a?b=1 HTTP/1.1\r\nHost: WWW.Example\r\n\r\n").expect("request");
        assert_eq!(
            r,
            RequestHead { get: true, head: false, url: Some(b"www.example/a?b=1".to_vec()), body_len: 0 }
        );
        let r = parse_request_head(b"GET http://h.example HTTP/1.1\r\n\r\n").expect("absolute");
        assert_eq!(r.url, Some(b"h.example/".to_vec()));
        let r =
            parse_request_head(b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n").expect("post");
        assert_eq!((r.get, r.body_len), (false, 5));
        assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\n\r\n").expect("no host").url, None);
        assert_eq!(parse_request_head(b"\x16\x03\x01garbage\r\n\r\n"), None);
        assert_eq!(parse_request_head(b"GET / SPDY/3\r\n\r\n"), None);
        assert_eq!(parse_request_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), None);
    }

    #[test]
    fn responses_parse() {
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false).expect("ok");
        assert_eq!(r, ResponseHead { status: 200, framing: Framing::Length(12), cacheable: true });
        let r = parse_response_head(
            b"HTTP/1.1 200 OK\r\nCache-Control: max-age=0, Private\r\nContent-Length: 1\r\n\r\n",
            false,
        );
        assert_eq!(r.map(|r| r.cacheable), Some(false));
        let r =
            parse_response_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n", false).expect("404");
        assert_eq!((r.framing, r.cacheable), (Framing::Length(3), false));
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).expect("head");
        assert_eq!((r.framing, r.cacheable), (Framing::Length(0), false));
        let r = parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\n", false).expect("interim");
        assert_eq!(r.framing, Framing::Interim);
        let r = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n", false).expect("until close");
        assert_eq!((r.framing, r.cacheable), (Framing::UntilClose, false));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            None
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false),
            None
        );
        assert_eq!(parse_response_head(b"HTTP/1.1 2x0 OK\r\n\r\n", false), None);
        assert_eq!(parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n", false), None);
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let mut c =
            Conn { flags: F_ANSWERED, answers_end: 7, req_pending: b"GE".to_vec(), ..Conn::default() };
        c.fifo.push_back(Item { kind: ITEM_GET, key: 9, url: b"u".to_vec() });
        c.fifo.push_back(Item { kind: ITEM_SERVED, ..Item::default() });
        let b = c.encode();
        assert_eq!(Conn::decode_bytes(&b), Some(c));
        assert_eq!(Conn::decode_bytes(&b[..b.len() - 1]), None);
        assert_eq!(Conn::decode_bytes(&[]), None);
        let e = Entry { clock: 5, filler: 77, len: 300, url: b"x/y".to_vec() };
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Entry::decode(&[9]), None);
    }
}
