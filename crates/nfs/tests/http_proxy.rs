//! The HTTP caching proxy: crafted connections (requests and responses split across
//! segments, pipelining, uncacheable responses, key collisions, bad input), answers checked
//! byte by byte with checksums verified by etherparse, and generated traces whose expected
//! hits are computed from the frames by an independent parser, on both engines.

mod common;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use streamnf_nfs::http_proxy::{HttpProxy, ProxyConfig};
use streamnf_nfs::net::ip_key;
use streamnf_packet::trace::RawRecord;
use streamnf_packet::LinkType;
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_store::Value;
use streamnf_tracegen::{GenConfig, Generator};

// ---------------------------------------------------------------------------------------
// Crafted connections
// ---------------------------------------------------------------------------------------

const SYN: u8 = 1;
const ACK: u8 = 2;
const FIN: u8 = 4;
const PSH: u8 = 8;
const RST: u8 = 16;

const SERVER: [u8; 4] = [192, 0, 2, 10];
const SERVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// One TCP connection between a client (10.0.0.N) and a server, with sequence numbers.
#[derive(Clone)]
struct Flow {
    client: IpAddr,
    cport: u16,
    server: IpAddr,
    sport: u16,
    cseq: u32,
    sseq: u32,
}

impl Flow {
    fn new(cport: u16) -> Flow {
        Flow {
            client: IpAddr::from([10, 0, 0, 1]),
            cport,
            server: IpAddr::from(SERVER),
            sport: 80,
            // Different initial sequence numbers per connection, one of them near wrap-around.
            cseq: u32::from(cport).wrapping_mul(7919),
            sseq: u32::MAX - 3000 + u32::from(cport % 64),
        }
    }

    fn v6(cport: u16) -> Flow {
        let mut c = [0u8; 16];
        c[0] = 0xfd;
        c[15] = 1;
        Flow { client: IpAddr::from(c), server: IpAddr::from(SERVER6), ..Flow::new(cport) }
    }

    fn frame(&self, to_server: bool, flags: u8, payload: &[u8]) -> RawRecord {
        let (smac, dmac) = if to_server { (CLIENT_MAC, SERVER_MAC) } else { (SERVER_MAC, CLIENT_MAC) };
        let (src, dst) = if to_server { (self.client, self.server) } else { (self.server, self.client) };
        let (sp, dp) = if to_server { (self.cport, self.sport) } else { (self.sport, self.cport) };
        let (seq, ack) = if to_server { (self.cseq, self.sseq) } else { (self.sseq, self.cseq) };
        let eth = PacketBuilder::ethernet2(smac, dmac);
        let ip = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!("one family per flow"),
        };
        let mut b = ip.tcp(sp, dp, seq, 65535);
        if flags & SYN != 0 {
            b = b.syn();
        }
        if flags & ACK != 0 {
            b = b.ack(ack);
        }
        if flags & FIN != 0 {
            b = b.fin();
        }
        if flags & PSH != 0 {
            b = b.psh();
        }
        if flags & RST != 0 {
            b = b.rst();
        }
        let mut v = Vec::new();
        b.write(&mut v, payload).expect("build");
        RawRecord { link: LinkType::Ethernet, ts_ns: 0, orig_len: v.len() as u32, data: v }
    }

    fn handshake(&mut self) -> Vec<RawRecord> {
        let syn = self.frame(true, SYN, &[]);
        self.cseq = self.cseq.wrapping_add(1);
        let synack = self.frame(false, SYN | ACK, &[]);
        self.sseq = self.sseq.wrapping_add(1);
        vec![syn, synack, self.frame(true, ACK, &[])]
    }

    fn client(&mut self, payload: &[u8]) -> RawRecord {
        let f = self.frame(true, ACK | PSH, payload);
        self.cseq = self.cseq.wrapping_add(payload.len() as u32);
        f
    }

    fn server(&mut self, payload: &[u8]) -> RawRecord {
        let f = self.frame(false, ACK | PSH, payload);
        self.sseq = self.sseq.wrapping_add(payload.len() as u32);
        f
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: www.example.org\r\nAccept: */*\r\n\r\n").into_bytes()
}

fn response(status: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\nServer: t\r\n{extra}Content-Length: {}\r\n\r\n", body.len())
        .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A body of `n` bytes that differs per `seed`.
fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| b'a' + ((i as u8).wrapping_mul(7).wrapping_add(seed)) % 26).collect()
}

fn proxy_chain(params: &str) -> std::sync::Arc<streamnf_dag::LogicalDag> {
    common::chain(&format!(
        "name = \"proxy\"\n[[vertex]]\nname = \"proxy\"\nnf = \"http_proxy\"\n[vertex.params]\n{params}\n\
         [[edge]]\nfrom = \"input\"\nto = \"proxy.in\"\n[[edge]]\nfrom = \"proxy.out\"\nto = \"output.out\"\n"
    ))
    .expect("chain")
}

/// Runs the crafted input (timestamps filled in) on the reference engine.
fn run(params: &str, mut input: Vec<RawRecord>) -> (Vec<RawRecord>, RunOutputs) {
    for (i, r) in input.iter_mut().enumerate() {
        r.ts_ns = 1_000_000 * (i as u64 + 1);
    }
    let out = common::reference(&proxy_chain(params), &input);
    (input, out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A counter of the proxy (`counters` is state object 5).
fn counter(out: &RunOutputs, name: &str) -> i64 {
    let suffix = format!("/*/5/{}", hex(name.as_bytes()));
    match out.state.iter().find(|(k, _)| k.ends_with(&suffix)).map(|(_, v)| v) {
        Some(Value::Int(i)) => *i,
        None => 0,
        Some(other) => panic!("counter {name} is {other:?}"),
    }
}

/// Values of shared object `object` of the proxy.
fn objects(out: &RunOutputs, object: u16) -> Vec<&Value> {
    let infix = format!("/*/{object}/");
    out.state.iter().filter(|(k, _)| k.contains(&infix)).map(|(_, v)| v).collect()
}

/// The frames in the output that are not the input frame of their clock (the proxy's
/// answers), with their clocks. (An answer can equal some *other* input frame byte for byte:
/// the origin's duplicate of it, when the crafted origin sends the same bytes.)
fn answers(input: &[RawRecord], out: &RunOutputs) -> Vec<(u64, Vec<u8>)> {
    out.sinks
        .get("out")
        .map(|v| {
            v.iter()
                .filter(|r| input.get(r.clock as usize - 1).is_none_or(|i| i.data != r.data))
                .map(|r| (r.clock, r.data.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether input frame `i` (clock `i + 1`) reached the output.
fn forwarded(input: &[RawRecord], out: &RunOutputs, i: usize) -> bool {
    out.sinks.get("out").is_some_and(|v| v.iter().any(|r| r.clock == i as u64 + 1 && r.data == input[i].data))
}

/// An answer segment, parsed and checked independently with etherparse.
#[derive(Debug)]
struct Seg {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    psh: bool,
    payload: Vec<u8>,
}

fn parse_answer(frame: &[u8]) -> Seg {
    let p = SlicedPacket::from_ethernet(frame).expect("answer parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else { panic!("ethernet") };
    assert_eq!((eth.source(), eth.destination()), (SERVER_MAC, CLIENT_MAC), "MACs swapped");
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else { panic!("tcp") };
    let (src, dst, ck) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum(), "IPv4 header checksum");
            assert_eq!(usize::from(h.total_len()), frame.len() - 14, "IPv4 total length");
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                tcp.calc_checksum_ipv4(h.source(), h.destination()),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                tcp.calc_checksum_ipv6(h.source(), h.destination()),
            )
        }
        _ => panic!("ip"),
    };
    assert_eq!(tcp.checksum(), ck.expect("checksum"), "TCP checksum");
    assert!(tcp.ack() && !tcp.syn() && !tcp.fin() && !tcp.rst());
    Seg {
        src,
        dst,
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        psh: tcp.psh(),
        payload: tcp.payload().to_vec(),
    }
}

/// Checks that `segs` form one answer from `flow`'s server to its client, starting at `seq`
/// and acknowledging `ack`, and returns its payload.
fn check_answer(segs: &[Seg], flow: &Flow, seq: u32, ack: u32, mss: usize) -> Vec<u8> {
    let mut next = seq;
    let mut payload = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert_eq!((s.src, s.dst, s.sport, s.dport), (flow.server, flow.client, flow.sport, flow.cport));
        assert_eq!(s.seq, next, "segment {i} continues the answer");
        assert_eq!(s.ack, ack, "acknowledges the client's next sequence number");
        assert!(s.payload.len() <= mss && !s.payload.is_empty());
        assert_eq!(s.psh, i + 1 == segs.len(), "PSH on the last segment only");
        next = next.wrapping_add(s.payload.len() as u32);
        payload.extend_from_slice(&s.payload);
    }
    payload
}

/// Conn A fetches `/index.html` (response in 3 segments), then conn B asks for it again.
/// Returns the input, the cached response bytes, conn B (before its request) and the index
/// of B's request.
fn cached_then_repeated(v6: bool, split_b: bool) -> (Vec<RawRecord>, Vec<u8>, Flow, usize) {
    let mk = if v6 { Flow::v6 } else { Flow::new };
    let mut a = mk(40001);
    let mut b = mk(40002);
    let mut input = a.handshake();
    input.push(a.client(&get("/index.html")));
    let resp = response("200 OK", "Content-Type: text/html\r\n", &body(3500, 1));
    let (p1, rest) = resp.split_at(90);
    let (p2, p3) = rest.split_at(1460);
    for p in [p1, p2, p3] {
        input.push(a.server(p));
    }
    input.push(a.frame(true, ACK, &[]));
    input.extend(b.handshake());
    let b_before = b.clone();
    let req = get("/index.html");
    let at = if split_b {
        let (x, y) = req.split_at(20);
        input.push(b.client(x));
        input.push(b.client(y));
        input.len() - 1
    } else {
        input.push(b.client(&req));
        input.len() - 1
    };
    // The origin's own answer to B still arrives (the trace is a replay): a different body.
    let dup = response("200 OK", "Content-Type: text/html\r\n", &body(3500, 9));
    for part in dup.chunks(1460) {
        input.push(b.server(part));
    }
    input.push(b.frame(true, ACK, &[]));
    (input, resp, b_before, at)
}

#[test]
fn a_response_split_across_segments_is_cached_and_a_repeat_is_answered_from_it() {
    for v6 in [false, true] {
        let (input, resp, b, at) = cached_then_repeated(v6, false);
        let (input, out) = run("", input);
        let ans = answers(&input, &out);
        assert_eq!(ans.len(), 3, "3500 body bytes plus headers in 1460-byte segments");
        assert!(ans.iter().all(|(clock, _)| *clock == at as u64 + 1), "answers carry the request's clock");
        let segs: Vec<Seg> = ans.iter().map(|(_, f)| parse_answer(f)).collect();
        let req_len = get("/index.html").len() as u32;
        // seq: B's server-side next sequence number (after the SYN-ACK); ack: B's client
        // side after the request.
        let got = check_answer(&segs, &b, b.sseq, b.cseq.wrapping_add(req_len), 1460);
        assert_eq!(got, resp, "the answer is the cached response, byte for byte");
        assert!(!forwarded(&input, &out, at), "a hit is not forwarded");
        for i in at + 1..input.len() - 1 {
            assert!(!forwarded(&input, &out, i), "the origin's duplicate answer (frame {i}) is dropped");
        }
        for i in (0..at).chain([input.len() - 1]) {
            assert!(forwarded(&input, &out, i), "frame {i} passes");
        }
        let c = |n| counter(&out, n);
        assert_eq!((c("requests"), c("hits"), c("misses"), c("fills")), (2, 1, 1, 1));
        assert_eq!((c("duplicates_dropped"), c("served_bytes")), (1, resp.len() as i64));
        assert_eq!(objects(&out, 4), vec![&Value::Int(1)], "one entry, hit once");
        assert_eq!(objects(&out, 1).len(), 1, "one cache entry");
        assert_eq!(objects(&out, 2).len(), 1, "its data");
        assert!(objects(&out, 3).is_empty(), "no transfer in progress");
    }
}

#[test]
fn a_request_split_across_segments_is_answered_when_its_last_part_arrives() {
    let (input, resp, b, at) = cached_then_repeated(false, true);
    let (input, out) = run("", input);
    assert!(forwarded(&input, &out, at - 1), "the first part could not be decided yet");
    assert!(!forwarded(&input, &out, at), "the completing part is not forwarded");
    let ans = answers(&input, &out);
    assert!(ans.iter().all(|(clock, _)| *clock == at as u64 + 1));
    let segs: Vec<Seg> = ans.iter().map(|(_, f)| parse_answer(f)).collect();
    let req_len = get("/index.html").len() as u32;
    assert_eq!(check_answer(&segs, &b, b.sseq, b.cseq.wrapping_add(req_len), 1460), resp);
    assert_eq!(counter(&out, "hits"), 1);
}

#[test]
fn a_smaller_mss_gives_smaller_answer_segments() {
    let (input, resp, b, _) = cached_then_repeated(false, false);
    let (input, out) = run("mss = 500", input);
    let segs: Vec<Seg> = answers(&input, &out).iter().map(|(_, f)| parse_answer(f)).collect();
    assert_eq!(segs.len(), resp.len().div_ceil(500));
    let req_len = get("/index.html").len() as u32;
    assert_eq!(check_answer(&segs, &b, b.sseq, b.cseq.wrapping_add(req_len), 500), resp);
}

#[test]
fn pipelined_requests_are_matched_to_their_responses_in_order() {
    let mut a = Flow::new(41001);
    let mut b = Flow::new(41002);
    let mut c = Flow::new(41003);
    let (ra, rb) = (response("200 OK", "", &body(300, 2)), response("200 OK", "", &body(700, 3)));
    let mut input = a.handshake();
    // Two requests in one segment; both responses in one segment, then a new segment.
    input.push(a.client(&[get("/a"), get("/b")].concat()));
    let both = [ra.clone(), rb.clone()].concat();
    let (x, y) = both.split_at(ra.len() + 40);
    input.push(a.server(x));
    input.push(a.server(y));
    // B: both URLs again, in the other order, in one segment: two hits, back to back.
    input.extend(b.handshake());
    let b0 = b.clone();
    input.push(b.client(&[get("/b"), get("/a")].concat()));
    let b_req = input.len() - 1;
    let b_after = b.cseq;
    input.push(b.server(&rb));
    input.push(b.server(&ra));
    // C: a miss first, then a cached URL behind it: the hit cannot jump the queue.
    input.extend(c.handshake());
    input.push(c.client(&[get("/new"), get("/a")].concat()));
    let c_req = input.len() - 1;
    input.push(c.server(&response("200 OK", "", &body(50, 4))));
    input.push(c.server(&ra));
    let (input, out) = run("", input);

    assert_eq!(counter(&out, "fills"), 3, "/a and /b from A, /new from C");
    assert!(!forwarded(&input, &out, b_req), "both of B's requests were answered");
    let b_ans: Vec<Seg> = answers(&input, &out)
        .iter()
        .filter(|(clock, _)| *clock == b_req as u64 + 1)
        .map(|(_, f)| parse_answer(f))
        .collect();
    // One segment each (both fit in the MSS), in request order, contiguous in sequence space.
    assert_eq!(b_ans.len(), 2);
    assert_eq!(check_answer(&b_ans[..1], &b0, b0.sseq, b_after, 1460), rb);
    assert_eq!(check_answer(&b_ans[1..], &b0, b0.sseq.wrapping_add(rb.len() as u32), b_after, 1460), ra);
    assert!(!forwarded(&input, &out, b_req + 1) && !forwarded(&input, &out, b_req + 2), "duplicates dropped");
    assert!(forwarded(&input, &out, c_req), "C's segment carries a miss");
    assert!(answers(&input, &out).iter().all(|(clock, _)| *clock != c_req as u64 + 1), "no answer for C");
    assert!(forwarded(&input, &out, c_req + 1) && forwarded(&input, &out, c_req + 2));
    let n = |x| counter(&out, x);
    assert_eq!((n("requests"), n("hits"), n("misses"), n("duplicates_dropped")), (6, 2, 4, 2));
}

#[test]
fn uncacheable_responses_are_never_served() {
    let cases: [(&str, Vec<u8>); 5] = [
        ("/missing", response("404 Not Found", "", &body(20, 5))),
        ("/nostore", response("200 OK", "Cache-Control: no-store\r\n", &body(20, 6))),
        ("/private", response("200 OK", "Cache-Control: max-age=60, private\r\n", &body(20, 7))),
        ("/big", response("200 OK", "", &body(2000, 8))),
        ("/close", b"HTTP/1.1 200 OK\r\nServer: t\r\n\r\nuntil the connection closes".to_vec()),
    ];
    let mut input = Vec::new();
    for (round, port0) in [(0, 42000u16), (1, 42100)] {
        for (i, (path, resp)) in cases.iter().enumerate() {
            let mut f = Flow::new(port0 + i as u16);
            input.extend(f.handshake());
            input.push(f.client(&get(path)));
            input.push(f.server(resp));
            let _ = round;
            input.push(f.frame(true, FIN | ACK, &[]));
            input.push(f.frame(false, FIN | ACK, &[]));
        }
    }
    let (input, out) = run("max_object_bytes = 1000", input);
    assert!(answers(&input, &out).is_empty());
    assert_eq!(out.sinks["out"].len(), input.len(), "everything passes");
    let n = |x| counter(&out, x);
    assert_eq!((n("requests"), n("hits"), n("misses"), n("fills"), n("uncacheable")), (10, 0, 10, 0, 10));
    assert!(objects(&out, 1).is_empty(), "no cache entry");
    assert!(objects(&out, 2).is_empty() && objects(&out, 3).is_empty(), "no partial copy is left");
    assert!(objects(&out, 0).is_empty(), "closed connections leave no record");
}

#[test]
fn a_head_request_and_an_interim_response_keep_the_responses_aligned() {
    let mut a = Flow::new(43001);
    let mut b = Flow::new(43002);
    let resp = response("200 OK", "", &body(100, 1));
    let mut input = a.handshake();
    let head = b"HEAD /x HTTP/1.1\r\nHost: www.example.org\r\n\r\n".to_vec();
    input.push(a.client(&[head, get("/x")].concat()));
    // The HEAD answer states a length but has no body; then a 100 Continue, then the GET's.
    input.push(a.server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"));
    input.push(a.server(&resp));
    input.extend(b.handshake());
    let b0 = b.clone();
    input.push(b.client(&get("/x")));
    let (input, out) = run("", input);
    let segs: Vec<Seg> = answers(&input, &out).iter().map(|(_, f)| parse_answer(f)).collect();
    let req_len = get("/x").len() as u32;
    assert_eq!(check_answer(&segs, &b0, b0.sseq, b0.cseq.wrapping_add(req_len), 1460), resp);
}

#[test]
fn a_hash_collision_is_a_miss_never_a_wrong_answer() {
    // With 1-bit keys, find two URLs sharing a key (the test's premise is checked here).
    let p = HttpProxy::new(ProxyConfig { key_bits: 1, ..ProxyConfig::default() });
    let identity =
        |path: &str| [ip_key(IpAddr::from(SERVER)), format!("www.example.org{path}").into_bytes()].concat();
    let first = "/c0";
    let other = (1..64)
        .map(|i| format!("/c{i}"))
        .find(|q| p.url_key(&identity(q)) == p.url_key(&identity(first)))
        .expect("a colliding URL");
    let (r1, r2) = (response("200 OK", "", &body(64, 1)), response("200 OK", "", &body(64, 2)));
    let mut input = Vec::new();
    let mut a = Flow::new(44001);
    input.extend(a.handshake());
    input.push(a.client(&get(first)));
    input.push(a.server(&r1));
    let mut b = Flow::new(44002);
    input.extend(b.handshake());
    input.push(b.client(&get(&other)));
    let b_req = input.len() - 1;
    input.push(b.server(&r2));
    let mut c = Flow::new(44003);
    input.extend(c.handshake());
    let c0 = c.clone();
    input.push(c.client(&get(first)));
    let c_req = input.len() - 1;
    let (input, out) = run("key_bits = 1", input);
    assert!(forwarded(&input, &out, b_req), "the colliding URL is a miss");
    assert!(answers(&input, &out).iter().all(|(clock, _)| *clock == c_req as u64 + 1), "no answer to B");
    assert!(forwarded(&input, &out, b_req + 1), "and its response reaches the client");
    assert_eq!(counter(&out, "fills_discarded"), 1, "the slot was taken: B's response is not stored");
    let segs: Vec<Seg> = answers(&input, &out).iter().map(|(_, f)| parse_answer(f)).collect();
    let req_len = get(first).len() as u32;
    assert_eq!(check_answer(&segs, &c0, c0.sseq, c0.cseq.wrapping_add(req_len), 1460), r1);
}

#[test]
fn bad_input_is_counted_and_passed_on() {
    let mut input = Vec::new();
    // Garbage on port 80 (a TLS hello), both ways.
    let mut a = Flow::new(45001);
    input.extend(a.handshake());
    input.push(a.client(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"));
    input.push(a.server(b"\x16\x03\x03\x00\x5a\x02\x00\x00\x56\x03\x03"));
    input.push(a.client(&get("/after-garbage")));
    // A request header over max_header_bytes (one huge line), then a normal request whose
    // response still lines up.
    let mut b = Flow::new(45002);
    input.extend(b.handshake());
    let huge = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "x".repeat(3000));
    for part in huge.as_bytes().chunks(700) {
        input.push(b.client(part));
    }
    input.push(b.client(&get("/ok")));
    input.push(b.server(&response("414 URI Too Long", "", b"")));
    input.push(b.server(&response("200 OK", "", &body(10, 1))));
    // A truncated response header, then the connection resets.
    let mut c = Flow::new(45003);
    input.extend(c.handshake());
    input.push(c.client(&get("/t")));
    input.push(c.server(b"HTTP/1.1 200 OK\r\nContent-Le"));
    input.push(c.frame(false, ACK | RST, &[]));
    // A response header over the limit.
    let mut d = Flow::new(45004);
    input.extend(d.handshake());
    input.push(d.client(&get("/d")));
    let long = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 1\r\n\r\nz", "p".repeat(2000));
    input.push(d.server(long.as_bytes()));
    // A cacheable response cut off by a reset halfway through its body.
    let mut e = Flow::new(45005);
    input.extend(e.handshake());
    input.push(e.client(&get("/e")));
    let full = response("200 OK", "", &body(400, 2));
    input.push(e.server(&full[..200]));
    input.push(e.frame(true, ACK | RST, &[]));
    let (input, out) = run("max_header_bytes = 1024", input);
    assert_eq!(out.sinks["out"].len(), input.len(), "every packet passes, none is answered");
    let n = |x| counter(&out, x);
    // TLS request, TLS reply (the connection is given up after the first), huge request,
    // long response header.
    assert_eq!(n("unparsable"), 3);
    assert_eq!(
        (n("requests"), n("fills")),
        (4, 1),
        "/ok, /t, /d and /e parse; only /ok's response completes"
    );
    assert_eq!(objects(&out, 2).len(), 1, "only /ok's data: /e's partial copy went with the reset");
    assert!(objects(&out, 3).is_empty(), "no transfer in progress");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// However the response and the repeat request are cut into segments, the answer is the
    /// response, and it starts at the server's next sequence number.
    #[test]
    fn segmentation_does_not_change_the_answer(
        len in 0usize..4000,
        cuts in proptest::collection::vec(1usize..2000, 0..6),
        req_cut in 1usize..40,
    ) {
        let resp = response("200 OK", "", &body(len, 3));
        let mut a = Flow::new(46001);
        let mut b = Flow::new(46002);
        let mut input = a.handshake();
        input.push(a.client(&get("/p")));
        let mut rest = &resp[..];
        for &c in &cuts {
            if rest.is_empty() {
                break;
            }
            let (x, y) = rest.split_at(c.min(rest.len()));
            input.push(a.server(x));
            rest = y;
        }
        if !rest.is_empty() {
            input.push(a.server(rest));
        }
        input.extend(b.handshake());
        let b0 = b.clone();
        let req = get("/p");
        let (x, y) = req.split_at(req_cut);
        input.push(b.client(x));
        input.push(b.client(y));
        let (input, out) = run("", input);
        let segs: Vec<Seg> = answers(&input, &out).iter().map(|(_, f)| parse_answer(f)).collect();
        let got = check_answer(&segs, &b0, b0.sseq, b0.cseq.wrapping_add(req.len() as u32), 1460);
        prop_assert_eq!(got, resp);
        prop_assert_eq!(counter(&out, "hits"), 1);
    }

    /// Random bytes in both directions of port-80 connections never crash the proxy, are
    /// never answered, and always pass.
    #[test]
    fn random_bytes_pass_unharmed(chunks in proptest::collection::vec(
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 1..300)), 1..20)
    ) {
        let mut f = Flow::new(47001);
        let mut input = f.handshake();
        for (to_server, bytes) in &chunks {
            input.push(if *to_server { f.client(bytes) } else { f.server(bytes) });
        }
        let (input, out) = run("", input);
        prop_assert_eq!(out.sinks["out"].len(), input.len());
    }
}

// ---------------------------------------------------------------------------------------
// Generated traces
// ---------------------------------------------------------------------------------------

/// What the independent oracle finds in a trace.
#[derive(Debug, Default)]
struct Expected {
    requests: u64,
    hits: u64,
    /// Requests for a URL seen before that are not hits: no cacheable response had
    /// completed yet (`in_flight`) or none ever completes before them (`never`).
    repeat_in_flight: u64,
    repeat_never: u64,
}

/// Recomputes the proxy's hits from the frames: a request (at clock c) is a hit iff an
/// earlier request for the same URL (origin address, host, path) got a complete cacheable
/// response (200, Content-Length ≤ max, no no-store/private/no-cache) whose last byte came
/// at a clock below c, and no earlier request on its connection is still waiting for the
/// origin.
fn expected_hits(trace: &[RawRecord], max_object: u64) -> Expected {
    #[derive(Default)]
    struct Side {
        buf: Vec<u8>,
        body_left: u64,
        cacheable_url: Option<Vec<u8>>,
    }
    #[derive(Default)]
    struct C {
        req: Side,
        resp: Side,
        waiting: VecDeque<Option<Vec<u8>>>, // origin-bound requests: their URL
    }
    let mut conns: HashMap<Vec<u8>, C> = HashMap::new();
    let mut completed: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut seen: HashMap<Vec<u8>, ()> = HashMap::new();
    let mut e = Expected::default();
    let mut later: Vec<(Vec<u8>, u64)> = Vec::new(); // repeat misses: (url, clock)
    for (i, r) in trace.iter().enumerate() {
        let clock = i as u64 + 1;
        let Ok(p) = SlicedPacket::from_ethernet(&r.data) else { continue };
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else { continue };
        let (src, dst): (IpAddr, IpAddr) = match &p.net {
            Some(NetSlice::Ipv4(v)) => {
                (v.header().source_addr().into(), v.header().destination_addr().into())
            }
            Some(NetSlice::Ipv6(v)) => {
                (v.header().source_addr().into(), v.header().destination_addr().into())
            }
            _ => continue,
        };
        let payload = tcp.payload();
        let (to_server, server, client) = if tcp.destination_port() == 80 {
            (true, (dst, 80), (src, tcp.source_port()))
        } else if tcp.source_port() == 80 {
            (false, (src, 80), (dst, tcp.destination_port()))
        } else {
            continue;
        };
        if payload.is_empty() {
            continue;
        }
        let key = format!("{server:?}{client:?}").into_bytes();
        let c = conns.entry(key).or_default();
        if to_server {
            c.req.buf.extend_from_slice(payload);
            while let Some(end) = find(&c.req.buf, b"\r\n\r\n") {
                let head: Vec<u8> = c.req.buf.drain(..end + 4).collect();
                let text = String::from_utf8_lossy(&head).to_string();
                let mut lines = text.split("\r\n");
                let line: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
                let host = lines
                    .find_map(|l| l.strip_prefix("Host: "))
                    .expect("generated requests have a Host")
                    .to_ascii_lowercase();
                assert_eq!(line[0], "GET");
                let url = [ip_key(server.0), host.into_bytes(), line[1].as_bytes().to_vec()].concat();
                e.requests += 1;
                let hit = c.waiting.iter().all(Option::is_none)
                    && completed.get(&url).is_some_and(|&at| at < clock);
                if hit {
                    e.hits += 1;
                    c.waiting.push_back(None);
                } else {
                    if seen.contains_key(&url) {
                        later.push((url.clone(), clock));
                    }
                    c.waiting.push_back(Some(url.clone()));
                }
                seen.insert(url, ());
            }
        } else {
            c.resp.buf.extend_from_slice(payload);
            loop {
                if c.resp.body_left > 0 {
                    let n = c.resp.buf.len().min(c.resp.body_left as usize);
                    if n == 0 {
                        break;
                    }
                    c.resp.buf.drain(..n);
                    c.resp.body_left -= n as u64;
                    if c.resp.body_left == 0 {
                        if let Some(url) = c.resp.cacheable_url.take() {
                            completed.entry(url).or_insert(clock);
                        }
                    }
                    continue;
                }
                let Some(end) = find(&c.resp.buf, b"\r\n\r\n") else { break };
                let head: Vec<u8> = c.resp.buf.drain(..end + 4).collect();
                let text = String::from_utf8_lossy(&head).to_lowercase();
                let len: u64 = text
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("generated responses have a Content-Length");
                let cacheable = text.starts_with("http/1.1 200 ")
                    && len <= max_object
                    && !["no-store", "private", "no-cache"].iter().any(|d| text.contains(d));
                let url = c.waiting.pop_front().flatten();
                c.resp.cacheable_url = url.filter(|_| cacheable);
                c.resp.body_left = len;
                if len == 0 {
                    if let Some(url) = c.resp.cacheable_url.take() {
                        completed.entry(url).or_insert(clock);
                    }
                }
            }
        }
    }
    for (url, clock) in later {
        if completed.get(&url).is_some_and(|&at| at >= clock) {
            e.repeat_in_flight += 1;
        } else {
            e.repeat_never += 1;
        }
    }
    e
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn http_trace(
    packets: u64,
    http_servers: u32,
    ipv6: f64,
    seed: u64,
) -> (Vec<RawRecord>, streamnf_tracegen::GenStats) {
    let cfg = GenConfig {
        packets,
        flows: (packets / 60) as u32,
        seed,
        concurrency: 24,
        udp_fraction: 0.0,
        ipv6_fraction: ipv6,
        http_fraction: 1.0,
        url_pool: 25,
        http_servers,
        ..GenConfig::default()
    };
    let mut g = Generator::new(cfg.clone()).expect("generator");
    let n = g.by_ref().count();
    assert_eq!(n as u64, packets);
    (common::generated(cfg), g.stats().clone())
}

#[test]
fn hits_on_a_generated_trace_match_the_trace() {
    let (trace, stats) = http_trace(30_000, 1, 0.0, 11);
    let want = expected_hits(&trace, 64 * 1024);
    let out = common::reference(&common::example("http_proxy.toml"), &trace);
    let (requests, hits) = (counter(&out, "requests"), counter(&out, "hits"));
    println!(
        "requests {requests} (trace: {}), hits {hits} (oracle: {}), hit ratio {:.3}, repeat ratio {:.3} \
         ({} repeats, {} waiting for a response in flight, {} with no cacheable response yet)",
        stats.http_requests,
        want.hits,
        hits as f64 / requests.max(1) as f64,
        stats.repeated_requests as f64 / stats.http_requests.max(1) as f64,
        stats.repeated_requests,
        want.repeat_in_flight,
        want.repeat_never,
    );
    assert_eq!(requests as u64, stats.http_requests, "every generated request is parsed");
    assert_eq!(want.requests, stats.http_requests, "the oracle sees every request too");
    assert!(want.hits > 100, "the trace has repeats to serve ({})", want.hits);
    assert_eq!(hits as u64, want.hits, "hits equal the hits computed from the trace");
    // Every repeat is a hit unless its URL had no complete cacheable response yet.
    assert_eq!(stats.repeated_requests, want.hits + want.repeat_in_flight + want.repeat_never);
    assert_eq!(counter(&out, "misses"), requests - hits);
    assert_eq!(counter(&out, "duplicates_dropped"), hits, "each served request's origin answer is dropped");
    let hits_by_entry: i64 =
        objects(&out, 4).iter().map(|v| if let Value::Int(i) = v { *i } else { 0 }).sum::<i64>();
    assert_eq!(hits_by_entry, hits, "per-entry hit counts add up");
}

/// The same check on smaller traces with other seeds, several servers and some IPv6 (where a
/// URI served from two addresses is two entries, and the oracle keys the same way).
#[test]
fn hits_match_the_trace_for_other_seeds_and_servers() {
    for (seed, servers) in [(21, 1), (22, 3), (23, 8)] {
        let (trace, stats) = http_trace(6_000, servers, 0.2, seed);
        let want = expected_hits(&trace, 64 * 1024);
        let out = common::reference(&proxy_chain(""), &trace);
        assert_eq!(counter(&out, "requests") as u64, stats.http_requests, "seed {seed}");
        assert!(want.hits > 0, "seed {seed}: no repeats to serve");
        assert_eq!(counter(&out, "hits") as u64, want.hits, "seed {seed}, {servers} servers");
    }
}

#[test]
fn parallel_runs_answer_exactly_like_one_instance() {
    let (trace, _) = http_trace(12_000, 6, 0.1, 5);
    let dag = common::example("http_proxy.toml");
    let want = common::reference(&dag, &trace);
    assert!(counter(&want, "hits") > 20, "hits to compare: {}", counter(&want, "hits"));
    for n in 1..=3 {
        let got = common::parallel(&dag, &trace, 2, &common::instances(&dag, &[("proxy", n)]));
        let d = differences(&want, &got, 8);
        assert!(d.is_empty(), "2 workers, {n} proxy instances:\n{}", d.join("\n"));
    }
}

#[test]
fn the_example_chain_is_the_default_configuration() {
    let dag = common::example("http_proxy.toml");
    let (trace, _) = http_trace(3_000, 1, 0.0, 3);
    let a = common::reference(&dag, &trace);
    let b = common::reference(&proxy_chain(""), &trace);
    let strip = |o: &RunOutputs| -> BTreeMap<String, Value> {
        // Same vertex name and object numbers: the states must agree key for key, apart
        // from the chain name's DAG id.
        o.state
            .iter()
            .map(|(k, v)| (k.split_once('/').map_or(k.clone(), |x| x.1.to_string()), v.clone()))
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a.sinks, b.sinks);
}
