//! The proxy's per-connection record: parser positions of both directions, the queue of
//! outstanding requests, and the TCP sequence numbers answers need, encoded for the store.
//! Owns the encoding only; the proxy reads and writes it through the state API.

use super::*;

/// Record format version.
pub(super) const REC_VERSION: u8 = 1;

/// Connection flags.
pub(super) const F_DESYNC: u8 = 1;
pub(super) const F_FIN_CLIENT: u8 = 2;
pub(super) const F_FIN_SERVER: u8 = 4;
pub(super) const F_ANSWERED: u8 = 8;

/// Request-side modes.
pub(super) const REQ_HEAD: u8 = 0;
pub(super) const REQ_SKIP_HEAD: u8 = 1;
pub(super) const REQ_BODY: u8 = 2;

/// Longest response body followed by sequence number (a quarter of the sequence space); a
/// longer one is passed until the connection closes.
pub(super) const MAX_FRAMED_BODY: u64 = 1 << 30;

/// Response-side modes.
pub(super) const RESP_HEAD: u8 = 0;
pub(super) const RESP_BODY: u8 = 1;
pub(super) const RESP_UNTIL_CLOSE: u8 = 2;

/// What happens to the bytes of the response being read.
pub(super) const DISP_PASS: u8 = 0;
pub(super) const DISP_DROP: u8 = 1;
pub(super) const DISP_FILL: u8 = 2;

/// Kinds of outstanding request.
pub(super) const ITEM_OTHER: u8 = 0;
pub(super) const ITEM_HEAD: u8 = 1;
pub(super) const ITEM_GET: u8 = 2;
pub(super) const ITEM_SERVED: u8 = 3;

/// One outstanding request, waiting for its response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) kind: u8,
    /// Cache key (for `ITEM_GET`).
    pub(super) key: u64,
    /// URL identity (for `ITEM_GET`): origin address key ‖ host ‖ path.
    pub(super) url: Vec<u8>,
}

/// Everything the proxy remembers about one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Conn {
    pub(super) flags: u8,
    /// Sequence number after the last answer the proxy sent (valid with `F_ANSWERED`).
    pub(super) answers_end: u32,
    pub(super) req_mode: u8,
    pub(super) req_scan: u8,
    pub(super) req_body_left: u64,
    pub(super) req_pending: Vec<u8>,
    pub(super) resp_mode: u8,
    pub(super) resp_scan: u8,
    pub(super) resp_disp: u8,
    /// Sequence number just past the current response's body (in `RESP_BODY`), so body
    /// segments leave the record unchanged.
    pub(super) resp_end: u32,
    pub(super) resp_pending: Vec<u8>,
    /// The fill in progress (`DISP_FILL`): cache key, filler id, bytes expected in total.
    pub(super) fill_key: u64,
    pub(super) filler: u64,
    pub(super) fill_expected: u32,
    pub(super) fill_url: Vec<u8>,
    pub(super) fifo: VecDeque<Item>,
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
    }
    pub(super) fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n).map(<[u8]>::to_vec)
    }
}

/// Appends `bytes` with a 32-bit length (every buffer written is far below 4 GiB).
pub(super) fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&bytes[..n as usize]);
}

impl Conn {
    pub(super) fn encode(&self) -> Vec<u8> {
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

    pub(super) fn decode_bytes(b: &[u8]) -> Option<Conn> {
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
    pub(super) fn all_served(&self) -> bool {
        self.fifo.iter().all(|it| it.kind == ITEM_SERVED)
    }
}
