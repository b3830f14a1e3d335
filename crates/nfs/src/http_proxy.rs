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

// ---------------------------------------------------------------------------------------
// HTTP parsing (pure functions)
// ---------------------------------------------------------------------------------------

/// Finds the end of an HTTP header block in a byte stream, across segments. `state` is 1
/// right after a line ended and 0 inside a line; a `\r` leaves it unchanged, so `\r\n\r\n`,
/// `\n\n` and `\n\r\n` all end a header. Returns the index just past the terminator.
fn scan_header_end(state: &mut u8, bytes: &[u8]) -> Option<usize> {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' if *state == 1 => {
                *state = 0;
                return Some(i + 1);
            }
            b'\n' => *state = 1,
            b'\r' => {}
            _ => *state = 0,
        }
    }
    None
}

/// Header lines of a header block (after its first line), as (name, value) pairs.
fn header_lines(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], trim(&line[colon + 1..])))
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

fn first_line(head: &[u8]) -> &[u8] {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A decimal `Content-Length` value (at most 18 digits).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// What a request asks for, as far as the cache cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET` (the only cacheable method).
    pub get: bool,
    /// `HEAD` (its response has no body).
    pub head: bool,
    /// Lower-cased host followed by the path (and query), when the request names both.
    pub url: Option<Vec<u8>>,
    /// Request body length (`Content-Length`), 0 when absent.
    pub body_len: u64,
}

/// Parses a complete request header block. `None` when the request line is not
/// `METHOD TARGET HTTP/1.x`, or the body framing is not a plain `Content-Length`.
pub fn parse_request_head(head: &[u8]) -> Option<RequestHead> {
    let line = first_line(head);
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !version.starts_with(b"HTTP/1.")
        || !method.iter().all(u8::is_ascii_uppercase)
    {
        return None;
    }
    let mut host: Option<&[u8]> = None;
    let mut body_len = 0u64;
    for (name, value) in header_lines(head) {
        if name.eq_ignore_ascii_case(b"host") {
            host.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            body_len = parse_length(value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
    }
    let (host, path): (Option<&[u8]>, &[u8]) =
        if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
            let rest = &target[7..];
            let slash = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
            let path: &[u8] = if slash < rest.len() { &rest[slash..] } else { b"/" };
            (Some(&rest[..slash]), path)
        } else if target.first() == Some(&b'/') {
            (host, target)
        } else {
            (None, target)
        };
    let url = host.filter(|h| !h.is_empty()).map(|h| {
        let mut u = h.to_ascii_lowercase();
        u.extend_from_slice(path);
        u
    });
    Some(RequestHead { get: method == b"GET", head: method == b"HEAD", url, body_len })
}

/// How a response's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An interim `1xx` response: no body, and the request is still waiting for its answer.
    Interim,
    /// A body of exactly this many bytes (0 for `204`, `304` and answers to `HEAD`).
    Length(u64),
    /// No length: the body runs until the connection closes.
    UntilClose,
}

/// What a response says, as far as the cache cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub framing: Framing,
    /// `200`, a `Content-Length`, and no `Cache-Control: no-store / private / no-cache`.
    pub cacheable: bool,
}

/// Parses a complete response header block; `head_request` says whether it answers a `HEAD`.
/// `None` when the status line is not `HTTP/1.x NNN ...`, the `Content-Length` is invalid,
/// or the body uses a transfer coding (chunked bodies are not followed).
pub fn parse_response_head(head: &[u8], head_request: bool) -> Option<ResponseHead> {
    let line = first_line(head);
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(1..).map(trim)?;
    let digits = code.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || code.get(3).is_some_and(|&b| b != b' ') {
        return None;
    }
    let status = digits.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let mut length: Option<u64> = None;
    let mut no_store = false;
    for (name, value) in header_lines(head) {
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !value.eq_ignore_ascii_case(b"identity") {
                return None;
            }
        } else if name.eq_ignore_ascii_case(b"cache-control") {
            for d in value.split(|&b| b == b',') {
                let d = trim(d);
                let d = d.split(|&b| b == b'=').next().unwrap_or(d);
                no_store |=
                    [&b"no-store"[..], b"private", b"no-cache"].iter().any(|x| d.eq_ignore_ascii_case(x));
            }
        }
    }
    let framing = if (100..200).contains(&status) {
        Framing::Interim
    } else if head_request || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    let cacheable = status == 200 && length.is_some() && !no_store && !head_request;
    Some(ResponseHead { status, framing, cacheable })
}

// ---------------------------------------------------------------------------------------
// Per-connection record
// ---------------------------------------------------------------------------------------

/// Record format version.
const REC_VERSION: u8 = 1;

/// Connection flags.
const F_DESYNC: u8 = 1;
const F_FIN_CLIENT: u8 = 2;
const F_FIN_SERVER: u8 = 4;
const F_ANSWERED: u8 = 8;

/// Request-side modes.
const REQ_HEAD: u8 = 0;
const REQ_SKIP_HEAD: u8 = 1;
const REQ_BODY: u8 = 2;

/// Longest response body followed by sequence number (a quarter of the sequence space); a
/// longer one is passed until the connection closes.
const MAX_FRAMED_BODY: u64 = 1 << 30;

/// Response-side modes.
const RESP_HEAD: u8 = 0;
const RESP_BODY: u8 = 1;
const RESP_UNTIL_CLOSE: u8 = 2;

/// What happens to the bytes of the response being read.
const DISP_PASS: u8 = 0;
const DISP_DROP: u8 = 1;
const DISP_FILL: u8 = 2;

/// Kinds of outstanding request.
const ITEM_OTHER: u8 = 0;
const ITEM_HEAD: u8 = 1;
const ITEM_GET: u8 = 2;
const ITEM_SERVED: u8 = 3;

/// One outstanding request, waiting for its response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Item {
    kind: u8,
    /// Cache key (for `ITEM_GET`).
    key: u64,
    /// URL identity (for `ITEM_GET`): origin address key ‖ host ‖ path.
    url: Vec<u8>,
}

/// Everything the proxy remembers about one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Conn {
    flags: u8,
    /// Sequence number after the last answer the proxy sent (valid with `F_ANSWERED`).
    answers_end: u32,
    req_mode: u8,
    req_scan: u8,
    req_body_left: u64,
    req_pending: Vec<u8>,
    resp_mode: u8,
    resp_scan: u8,
    resp_disp: u8,
    /// Sequence number just past the current response's body (in `RESP_BODY`), so body
    /// segments leave the record unchanged.
    resp_end: u32,
    resp_pending: Vec<u8>,
    /// The fill in progress (`DISP_FILL`): cache key, filler id, bytes expected in total.
    fill_key: u64,
    filler: u64,
    fill_expected: u32,
    fill_url: Vec<u8>,
    fifo: VecDeque<Item>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n).map(<[u8]>::to_vec)
    }
}

/// Appends `bytes` with a 32-bit length (every buffer written is far below 4 GiB).
fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&bytes[..n as usize]);
}

impl Conn {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.req_pending.len() + self.resp_pending.len());
        b.push(REC_VERSION);
        b.push(self.flags);
        b.extend_from_slice(&self.answers_end.to_be_bytes());
        b.push(self.req_mode);
        b.push(self.req_scan);
        b.extend_from_slice(&self.req_body_left.to_be_bytes());
        put_bytes(&mut b, &self.req_pending);
        b.push(self.resp_mode);
        b.push(self.resp_scan);
        b.push(self.resp_disp);
        b.extend_from_slice(&self.resp_end.to_be_bytes());
        put_bytes(&mut b, &self.resp_pending);
        b.extend_from_slice(&self.fill_key.to_be_bytes());
        b.extend_from_slice(&self.filler.to_be_bytes());
        b.extend_from_slice(&self.fill_expected.to_be_bytes());
        put_bytes(&mut b, &self.fill_url);
        b.push(self.fifo.len().min(255) as u8);
        for it in self.fifo.iter().take(255) {
            b.push(it.kind);
            b.extend_from_slice(&it.key.to_be_bytes());
            put_bytes(&mut b, &it.url);
        }
        b
    }

    fn decode_bytes(b: &[u8]) -> Option<Conn> {
        let mut r = Reader(b);
        if r.u8()? != REC_VERSION {
            return None;
        }
        let mut c = Conn {
            flags: r.u8()?,
            answers_end: r.u32()?,
            req_mode: r.u8()?,
            req_scan: r.u8()?,
            req_body_left: r.u64()?,
            req_pending: r.bytes()?,
            resp_mode: r.u8()?,
            resp_scan: r.u8()?,
            resp_disp: r.u8()?,
            resp_end: r.u32()?,
            resp_pending: r.bytes()?,
            fill_key: r.u64()?,
            filler: r.u64()?,
            fill_expected: r.u32()?,
            fill_url: r.bytes()?,
            fifo: VecDeque::new(),
        };
        for _ in 0..r.u8()? {
            c.fifo.push_back(Item { kind: r.u8()?, key: r.u64()?, url: r.bytes()? });
        }
        (r.0.is_empty()
            && c.req_mode <= REQ_BODY
            && c.resp_mode <= RESP_UNTIL_CLOSE
            && c.resp_disp <= DISP_FILL)
            .then_some(c)
    }

    /// True when every outstanding request was answered by the proxy, so a new answer can
    /// follow on the connection right away.
    fn all_served(&self) -> bool {
        self.fifo.iter().all(|it| it.kind == ITEM_SERVED)
    }
}

// ---------------------------------------------------------------------------------------
// Cache entries
// ---------------------------------------------------------------------------------------

/// Entry format version.
const ENTRY_VERSION: u8 = 2;

/// A complete cache entry's descriptor, stored in `cache`: `version ‖ completion clock ‖
/// filler id ‖ length ‖ url`. The response bytes themselves are the list in `data` under
/// `key ‖ filler`, exactly as the fill copied them, so publishing an entry copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Logical clock of the packet that brought the response's last byte.
    pub clock: u64,
    /// Id of the fill that copied the response (second half of its `data` key).
    pub filler: u64,
    /// Length of the response (status line, headers and body) in bytes.
    pub len: u32,
    /// URL identity: origin address key ‖ lower-cased host ‖ path.
    pub url: Vec<u8>,
}

impl Entry {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(25 + self.url.len());
        b.push(ENTRY_VERSION);
        b.extend_from_slice(&self.clock.to_be_bytes());
        b.extend_from_slice(&self.filler.to_be_bytes());
        b.extend_from_slice(&self.len.to_be_bytes());
        put_bytes(&mut b, &self.url);
        b
    }

    /// Inverse of [`Entry::encode`]; `None` for anything it did not write.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        let mut r = Reader(b);
        if r.u8()? != ENTRY_VERSION {
            return None;
        }
        let e = Entry { clock: r.u64()?, filler: r.u64()?, len: r.u32()?, url: r.bytes()? };
        r.0.is_empty().then_some(e)
    }
}

fn key8(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

fn data_key(key: u64, filler: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&key.to_be_bytes());
    b[8..].copy_from_slice(&filler.to_be_bytes());
    b
}

// ---------------------------------------------------------------------------------------
// Answer frames
// ---------------------------------------------------------------------------------------

/// The client segment being processed, as the source of answers: they go from its
/// destination (the server) back to its source (the client).
struct AnswerTo<'a> {
    tpl: &'a Packet,
    ip: IpInfo,
    server_port: u16,
    client_port: u16,
    /// The origin's address key (first part of every URL identity on this connection).
    origin: Vec<u8>,
    /// The segment's acknowledgement number: the server's next sequence number as the
    /// client knows it.
    ack_seq: Option<u32>,
    /// The client's next sequence number after this segment.
    client_next: u32,
}

impl AnswerTo<'_> {
    /// One TCP segment (ACK, plus PSH when `last`) carrying `payload`, with valid IPv4 (or
    /// IPv6) and TCP checksums; the link header is the template's with the MACs swapped.
    /// The payload is the concatenation of `parts`.
    fn segment(&self, seq: u32, ack: u32, last: bool, parts: &[&[u8]]) -> Option<Packet> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let l3 = usize::from(self.tpl.hdr.l3_offset);
        let mut f = Vec::with_capacity(l3 + 60 + payload_len);
        f.extend_from_slice(self.tpl.data.get(..l3)?);
        if self.tpl.hdr.link == LinkType::Ethernet && f.len() >= 12 {
            let (dst, src) = f.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
        }
        let tcp_len = 20 + payload_len;
        let (src, dst) = (self.ip.dst, self.ip.src);
        let pseudo = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(20 + tcp_len).ok()?;
                let at = f.len();
                f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0]);
                f[at + 2..at + 4].copy_from_slice(&total.to_be_bytes());
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let ck = checksum(&f[at..at + 20]);
                f[at + 10..at + 12].copy_from_slice(&ck.to_be_bytes());
                let mut p = Vec::with_capacity(12);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&[0, 6]);
                p.extend_from_slice(&(tcp_len as u16).to_be_bytes());
                p
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let plen = u16::try_from(tcp_len).ok()?;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&plen.to_be_bytes());
                f.extend_from_slice(&[6, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let mut p = Vec::with_capacity(40);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&(tcp_len as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, 6]);
                p
            }
            _ => return None,
        };
        let at = f.len();
        let flags = TcpFlags::ACK | if last { TcpFlags::PSH } else { 0 };
        f.extend_from_slice(&self.server_port.to_be_bytes());
        f.extend_from_slice(&self.client_port.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        for p in parts {
            f.extend_from_slice(p);
        }
        let ck = checksum_with(&pseudo, &f[at..]);
        f[at + 16..at + 18].copy_from_slice(&ck.to_be_bytes());
        Some(Packet::new(self.tpl.hdr.link, f, self.tpl.ts_ns))
    }
}

/// The Internet checksum of `pseudo` followed by `data` (`pseudo` has an even length).
fn checksum_with(pseudo: &[u8], data: &[u8]) -> u16 {
    !(ones_complement_sum(data, ones_complement_sum(pseudo, 0)) as u16)
}

/// `a` comes after `b` in TCP sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

// ---------------------------------------------------------------------------------------
// Packet processing
// ---------------------------------------------------------------------------------------

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
