//! HTTP/1.x framing for the proxy: finding the end of a header block across segments,
//! and parsing request and response heads. Pure functions on bytes; never touches state.

/// Finds the end of an HTTP header block in a byte stream, across segments. `state` is 1
/// right after a line ended and 0 inside a line; a `\r` leaves it unchanged, so `\r\n\r\n`,
/// `\n\n` and `\n\r\n` all end a header. Returns the index just past the terminator.
pub(super) fn scan_header_end(state: &mut u8, bytes: &[u8]) -> Option<usize> {
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
pub(super) fn header_lines(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], trim(&line[colon + 1..])))
    })
}

pub(super) fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

pub(super) fn first_line(head: &[u8]) -> &[u8] {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A decimal `Content-Length` value (at most 18 digits).
pub(super) fn parse_length(v: &[u8]) -> Option<u64> {
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
