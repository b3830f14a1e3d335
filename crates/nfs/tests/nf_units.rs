//! The DPI, the rate limiter and the light IDS on crafted packets: DPI signatures split
//! across TCP segments (found once, never twice), the rate limiter's exact refill and
//! burst edges, and the IDS's window roll-over and the garbage collection of its state.

mod common;

use etherparse::PacketBuilder;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use streamnf_dag::{ChainBuilder, NetworkFunction};
use streamnf_nfs::dpi::Dpi;
use streamnf_nfs::ids::{window_count, LightIds};
use streamnf_nfs::net::Cidr;
use streamnf_nfs::rate_limiter::{token_bucket, RateClass, RateLimiter};
use streamnf_packet::{LinkType, Packet};
use streamnf_runtime::engine::EngineReport;

use streamnf_store::Value;

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [192, 0, 2, 1];

/// A TCP segment A:4000 → B:80 (or back with `reply`) with sequence number `seq`.
fn seg(seq: u32, payload: &[u8], reply: bool, fin: bool, ts: u64) -> Packet {
    let (src, dst, sp, dp) = if reply { (B, A, 80, 4000) } else { (A, B, 4000, 80) };
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(src, dst, 64).tcp(sp, dp, seq, 1000).ack(1);
    let b = if fin { b.fin() } else { b };
    b.write(&mut v, payload).expect("build");
    Packet::new(LinkType::Ethernet, v, ts)
}

fn udp(payload: &[u8]) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(A, B, 64)
        .udp(5000, 53)
        .write(&mut v, payload)
        .expect("build");
    Packet::new(LinkType::Ethernet, v, 1)
}

fn syn(src: [u8; 4], sport: u16, ts: u64) -> Packet {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(src, B, 64)
        .tcp(sport, 80, 1, 1000)
        .syn()
        .write(&mut v, b"")
        .expect("b");
    Packet::new(LinkType::Ethernet, v, ts)
}

fn single(nf: Arc<dyn NetworkFunction>, pkts: Vec<Packet>) -> (EngineReport, BTreeMap<String, Value>) {
    let dag = ChainBuilder::new("units")
        .vertex("nf", nf)
        .edge("input", "nf.in")
        .edge("nf.out", "output.out")
        .build()
        .expect("chain");
    common::run_packets(dag, pkts)
}

/// Entries of state object `object` of the only vertex, whatever their owner.
fn object(state: &BTreeMap<String, Value>, object: u16) -> Vec<(&String, &Value)> {
    state.iter().filter(|(k, _)| k.split('/').nth(3) == Some(&object.to_string())).collect()
}

fn dpi(sigs: &[&str]) -> Arc<Dpi> {
    Arc::new(Dpi::new(sigs.iter().map(|s| s.to_string()).collect(), true).expect("dpi"))
}

/// Sends `parts` as consecutive segments of one stream direction, starting at seq 1000.
fn stream(parts: &[&[u8]]) -> Vec<Packet> {
    let mut seq = 1000u32;
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = seg(seq, p, false, false, i as u64);
            seq = seq.wrapping_add(p.len() as u32);
            s
        })
        .collect()
}

fn dpi_alerts(r: &EngineReport) -> usize {
    r.alerts.get("dpi_match").copied().unwrap_or(0) as usize
}

#[test]
fn dpi_finds_a_signature_split_across_two_segments() {
    let (r, state) = single(dpi(&["<script"]), stream(&[b"GET /?q=<scr", b"ipt>alert(1)"]));
    assert_eq!(dpi_alerts(&r), 1);
    let a = &r.alert_records[0];
    assert_eq!(a.fields["signature"], "<script");
    assert_eq!(a.fields["across_segments"], true);
    assert_eq!(a.fields["offset"], -4, "started 4 bytes before this payload");
    assert_eq!(a.clock, 2, "reported on the segment that completes it");
    assert!(object(&state, 2).is_empty(), "the stream ended with no pending prefix: no tail kept");
}

#[test]
fn dpi_finds_a_signature_split_across_three_segments_case_insensitively() {
    let (r, _) = single(dpi(&["<script"]), stream(&[b"xx<S", b"Cr", b"IPT"]));
    assert_eq!(dpi_alerts(&r), 1);
    let (r, _) = single(dpi(&["<script"]), stream(&[b"<", b"s", b"c", b"r", b"i", b"p", b"t"]));
    assert_eq!(dpi_alerts(&r), 1, "one byte per segment");
}

#[test]
fn dpi_never_counts_an_occurrence_twice() {
    // The whole signature is in segment 1 and its last bytes are in the tail the next
    // segments are matched with: still one alert.
    let (r, _) = single(dpi(&["<script"]), stream(&[b"a<script", b"b", b"cd<scr"]));
    assert_eq!(dpi_alerts(&r), 1);
    // Overlapping signatures: "abab" in "ababab" twice, wherever the stream is cut.
    for cut in 1..6 {
        let s: &[u8] = b"ababab";
        let (r, _) = single(dpi(&["abab"]), stream(&[&s[..cut], &s[cut..]]));
        assert_eq!(dpi_alerts(&r), 2, "cut at {cut}");
    }
}

#[test]
fn dpi_does_not_join_segments_out_of_order_other_directions_or_udp() {
    // A gap in sequence numbers (a lost or reordered segment): no join.
    let (r, _) = single(
        dpi(&["<script"]),
        vec![seg(1000, b"<scr", false, false, 1), seg(2000, b"ipt", false, false, 2)],
    );
    assert_eq!(dpi_alerts(&r), 0);
    // The other direction of the same connection has its own tail.
    let (r, _) = single(
        dpi(&["<script"]),
        vec![seg(1000, b"<scr", false, false, 1), seg(5000, b"ipt", true, false, 2)],
    );
    assert_eq!(dpi_alerts(&r), 0);
    // UDP datagrams are matched one by one.
    let (r, _) = single(dpi(&["<script"]), vec![udp(b"<scr"), udp(b"ipt")]);
    assert_eq!(dpi_alerts(&r), 0);
    // A retransmitted segment resynchronises the stream at its own end.
    let pkts = vec![
        seg(1000, b"ab<scr", false, false, 1),
        seg(1000, b"ab<scr", false, false, 2),
        seg(1006, b"ipt", false, false, 3),
    ];
    let (r, _) = single(dpi(&["<script"]), pkts);
    assert_eq!(dpi_alerts(&r), 1);
}

#[test]
fn dpi_keeps_a_tail_only_while_a_prefix_is_pending_and_drops_it_at_fin() {
    // Without percent-encoded forms the longest pattern is "<script" (7 bytes).
    let plain = Arc::new(Dpi::with_options(vec!["<script".into()], true, false).expect("dpi"));
    let (_, state) = single(plain, stream(&[b"hello <sc"]));
    let tails = object(&state, 2);
    assert_eq!(tails.len(), 1, "pending prefix: one tail");
    let Value::Bytes(b) = tails[0].1 else { panic!("tail is bytes: {tails:?}") };
    assert_eq!(&b[..4], &1009u32.to_be_bytes(), "next expected sequence number");
    assert!(b[4..].ends_with(b"<sc") && b.len() - 4 <= 6, "at most longest-1 bytes: {b:?}");

    let (_, state) = single(
        dpi(&["<script"]),
        vec![seg(1000, b"hello <sc", false, false, 1), seg(1009, b"x", false, true, 2)],
    );
    assert!(object(&state, 2).is_empty(), "FIN ends the direction: tail deleted");
    let (_, state) = single(dpi(&["<script"]), stream(&[b"hello <sc", b"rix"]));
    assert!(object(&state, 2).is_empty(), "read, and no prefix pending any more: tail deleted");
    // "ool" cannot continue any pattern: the tail is not even read, and stays (stale, its
    // sequence number no longer expected) until a FIN, even one without payload.
    let (r, state) = single(dpi(&["<script"]), stream(&[b"hello <sc", b"ool"]));
    assert_eq!(object(&state, 2).len(), 1);
    assert_eq!(r.tasks["nf"][0].state_ops, 3, "two packet counts and one tail write, no read");
    let pkts = vec![
        seg(1000, b"hello <sc", false, false, 1),
        seg(1009, b"ool", false, false, 2),
        seg(1012, b"", false, true, 3),
    ];
    let (_, state) = single(dpi(&["<script"]), pkts);
    assert!(object(&state, 2).is_empty(), "a FIN without payload deletes it");
}

#[test]
fn dpi_matches_percent_encoded_signatures_unless_disabled() {
    let (r, state) = single(dpi(&["<script"]), stream(&[b"GET /x?name=%3Cscr", b"ipt%3E HTTP/1.1"]));
    assert_eq!(dpi_alerts(&r), 1);
    assert_eq!(r.alert_records[0].fields["signature"], "<script");
    assert_eq!(r.alert_records[0].fields["percent_encoded"], true);
    let counters: Vec<i64> = object(&state, 0).iter().filter_map(|(_, v)| v.as_int()).collect();
    assert_eq!(counters, vec![1], "counted under the configured signature");
    let plain = Arc::new(Dpi::with_options(vec!["<script".into()], true, false).expect("dpi"));
    let (r, _) = single(plain, stream(&[b"GET /x?name=%3Cscript%3E"]));
    assert_eq!(dpi_alerts(&r), 0);
    let (r, _) = single(dpi(&["union select"]), stream(&[b"q=1+UNION+SELECT+a,b"]));
    assert_eq!(dpi_alerts(&r), 1, "form encoding: space as +");
}

#[test]
fn dpi_rejects_signatures_longer_than_the_limit() {
    let long = "x".repeat(streamnf_nfs::dpi::MAX_SIGNATURE_LEN + 1);
    assert!(Dpi::new(vec![long], true).is_err());
    // Percent-encoding may make a signature too long too.
    let wide = "<".repeat(streamnf_nfs::dpi::MAX_SIGNATURE_LEN / 2);
    assert!(Dpi::new(vec![wide.clone()], true).is_err());
    assert!(Dpi::with_options(vec![wide], true, false).is_ok());
}

/// Overlapping, ASCII-case-insensitive occurrences of `sig` in `text`, counted naively.
fn naive_count(text: &[u8], sig: &[u8]) -> usize {
    if sig.len() > text.len() {
        return 0;
    }
    text.windows(sig.len()).filter(|w| w.eq_ignore_ascii_case(sig)).count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// However a TCP stream is cut into segments, the DPI counts exactly the occurrences
    /// it would find in the whole stream.
    #[test]
    fn dpi_counts_do_not_depend_on_segmentation(
        text in proptest::collection::vec(prop_oneof![Just(b'<'), Just(b's'), Just(b'S'), Just(b'c'), Just(b'r'), Just(b'i'), Just(b'p'), Just(b't'), Just(b'a')], 1..200),
        cuts in proptest::collection::vec(1usize..200, 0..40),
    ) {
        let sigs = ["<script", "scr", "aa", "tt<s"];
        let want: usize = sigs.iter().map(|s| naive_count(&text, s.as_bytes())).sum();
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < text.len()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([text.len()]) {
            parts.push(&text[prev..c]);
            prev = c;
        }
        let (r, _) = single(dpi(&sigs), stream(&parts));
        prop_assert_eq!(dpi_alerts(&r), want, "parts {:?}", parts);
    }
}

// ---- rate limiter ----

/// `n` one-byte TCP packets from `src` at `ts`.
fn burst_at(src: [u8; 4], ts: u64, n: usize) -> Vec<Packet> {
    (0..n)
        .map(|_| {
            let mut v = Vec::new();
            PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4(src, B, 64)
                .tcp(4000, 80, 1, 1000)
                .ack(1)
                .write(&mut v, b"x")
                .expect("build");
            Packet::new(LinkType::Ethernet, v, ts)
        })
        .collect()
}

fn passed(r: &EngineReport) -> usize {
    r.sink_records.get("out").map_or(0, Vec::len)
}

#[test]
fn limiter_lets_a_full_burst_through_then_one_token_per_period() {
    // 10 pps, burst 3: 3 at t=0, none until exactly 100 ms later, then one.
    let lim = Arc::new(RateLimiter::new(10, 3, true));
    let mut pkts = burst_at(A, 0, 4);
    pkts.extend(burst_at(A, 99_999_999, 1));
    pkts.extend(burst_at(A, 100_000_000, 2));
    let (r, state) = single(lim, pkts);
    assert_eq!(passed(&r), 3 + 1);
    let c: BTreeMap<String, i64> = object(&state, 2)
        .into_iter()
        .filter_map(|(k, v)| Some((k.rsplit('/').next()?.to_string(), v.as_int()?)))
        .collect();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(c.get(&hex("passed")), Some(&4));
    assert_eq!(c.get(&hex("throttled")), Some(&3));
}

#[test]
fn limiter_classes_give_prefixes_their_own_rate() {
    let class = RateClass {
        name: "guests".into(),
        src: Cidr::parse("10.0.0.0/24").expect("cidr"),
        rate_pps: 0,
        burst: 1,
    };
    let lim = Arc::new(RateLimiter::new(1000, 5, true).with_classes(vec![class]));
    let mut pkts = burst_at(A, 0, 5);
    pkts.extend(burst_at([10, 0, 1, 1], 0, 5));
    let (r, _) = single(lim, pkts);
    assert_eq!(passed(&r), 1 + 5, "the class gets burst 1 and no refill; others burst 5");
}

#[test]
fn limiter_classes_are_read_from_the_chain_file_and_checked() {
    let reg = streamnf_nfs::builtin_registry();
    let p = |s: &str| streamnf_dag::Params(toml::from_str::<toml::Table>(s).expect("toml"));
    let ok =
        p("scope = \"all\"\nclasses = [ { src = \"10.0.0.0/8\", rate_pps = 5, burst = 2, name = \"lan\" } ]");
    assert!(matches!(reg.build("rate_limiter", &ok), Some(Ok(_))));
    for (params, word) in [
        ("classes = [ { rate_pps = 5 } ]", "src"),
        ("classes = [ { src = \"10.0.0.0/33\" } ]", "classes[0]"),
        ("classes = [ { src = \"10.0.0.0/8\", burst = 0 } ]", "burst"),
        ("classes = [ { src = \"10.0.0.0/8\", speed = 1 } ]", "speed"),
        ("classes = 3", "classes"),
    ] {
        match reg.build("rate_limiter", &p(params)) {
            Some(Err(e)) => assert!(e.contains(word), "{params}: {e}"),
            _ => panic!("accepted {params}"),
        }
    }
}

fn take(v: &mut Option<Value>, now: u64, rate: u64, burst: u64) -> bool {
    let mut arg = Vec::new();
    for x in [now, rate, burst] {
        arg.extend_from_slice(&x.to_be_bytes());
    }
    token_bucket(v, &arg).expect("bucket") == Some(Value::Int(1))
}

fn nanotokens(v: &Option<Value>) -> u128 {
    match v {
        Some(Value::Bytes(b)) => u128::from_be_bytes(b[..16].try_into().expect("16 bytes")),
        other => panic!("not a bucket: {other:?}"),
    }
}

#[test]
fn bucket_refill_is_exact_however_often_packets_arrive() {
    // 999 999 pps: a token takes 1000.001 ns. Packets every nanosecond must get the next
    // token at t = 1001, not later (millionths rounded each refill down to 999 per ns).
    let mut v = None;
    assert!(take(&mut v, 0, 999_999, 1));
    for t in 1..=1000 {
        assert!(!take(&mut v, t, 999_999, 1), "t = {t}");
    }
    assert!(take(&mut v, 1001, 999_999, 1));
    // Bad arguments and corrupt buckets are errors, not panics.
    assert!(token_bucket(&mut v, b"short").is_err());
    let mut corrupt = Some(Value::Bytes(vec![1, 2, 3]));
    assert!(token_bucket(&mut corrupt, &[0u8; 24]).is_err());
    let mut int = Some(Value::Int(3));
    assert!(token_bucket(&mut int, &[0u8; 24]).is_err());
}

#[test]
fn bucket_caps_at_burst_and_time_never_goes_back() {
    let mut v = None;
    // A new bucket is full: exactly `burst` tokens.
    assert!((0..4).all(|_| take(&mut v, 5_000, 1, 4)));
    assert!(!take(&mut v, 5_000, 1, 4));
    // A long pause refills to the cap, not beyond.
    assert!((0..4).all(|_| take(&mut v, 1_000_000_000_000, 1, 4)));
    assert!(!take(&mut v, 1_000_000_000_000, 1, 4));
    // An older timestamp refills nothing.
    assert!(!take(&mut v, 1, 1, 4));
    assert!(!take(&mut v, 1_000_000_000_000 + 999_999_999, 1, 4));
    assert!(take(&mut v, 2_000_000_000_000, 1, 4));
    // rate 0: the burst and nothing else.
    let mut z = None;
    assert!(take(&mut z, 0, 0, 2) && take(&mut z, 0, 0, 2));
    assert!(!take(&mut z, u64::MAX, 0, 2));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    /// Token conservation: while each gap adds less than one token and burst ≥ 2 (so the
    /// cap is never reached after the first take), the bucket holds exactly
    /// burst + rate × elapsed − passed tokens, to the nanotoken.
    #[test]
    fn bucket_conserves_tokens_exactly(
        rate in 1u64..5_000_000,
        burst in 2u64..20,
        gaps in proptest::collection::vec(0u64..1_000_000_000, 1..300),
    ) {
        let period = 1_000_000_000 / rate; // whole ns per token, rounded down
        let mut v = None;
        let mut now = 0u64;
        let mut passes = 0u128;
        prop_assert!(take(&mut v, now, rate, burst));
        passes += 1;
        for g in gaps {
            now += g % period.max(1);
            if take(&mut v, now, rate, burst) {
                passes += 1;
            }
            let want = u128::from(burst) * 1_000_000_000 + u128::from(rate) * u128::from(now) - passes * 1_000_000_000;
            prop_assert_eq!(nanotokens(&v), want);
        }
    }
}

// ---- light IDS ----

/// The IDS's `syn_count` entries: (window, count) per entry.
fn windows(state: &BTreeMap<String, Value>) -> Vec<(u64, u64)> {
    object(state, 0)
        .into_iter()
        .filter_map(|(_, v)| match v {
            Value::Bytes(b) if b.len() == 16 => Some((
                u64::from_be_bytes(b[..8].try_into().ok()?),
                u64::from_be_bytes(b[8..].try_into().ok()?),
            )),
            _ => None,
        })
        .collect()
}

fn ids_only(threshold: u64, window_ns: u64, pkts: Vec<Packet>) -> (EngineReport, BTreeMap<String, Value>) {
    single(Arc::new(LightIds::new(threshold, window_ns)), pkts)
}

#[test]
fn ids_window_rolls_over_and_old_windows_are_collected() {
    // 3 SYNs per 1 s window for 50 windows, threshold 3: never flagged, and one entry.
    let pkts: Vec<Packet> =
        (0..150u64).map(|i| syn(A, 1000 + i as u16, (i / 3) * 1_000_000_000 + i % 3)).collect();
    let (r, state) = ids_only(3, 1_000_000_000, pkts);
    assert_eq!(r.alerts.get("suspicious_source"), None);
    assert_eq!(windows(&state), vec![(49, 3)], "only the newest window is kept");
}

#[test]
fn ids_flags_on_the_first_syn_over_the_threshold_in_one_window_and_drops_its_count() {
    // 3 SYNs at the end of window 0 and 3 at the start of window 1: not flagged (fixed
    // windows); a 4th in window 1 flags it.
    let mut pkts: Vec<Packet> = (0..3).map(|i| syn(A, 1000 + i, 999_000_000 + u64::from(i))).collect();
    pkts.extend((0..3).map(|i| syn(A, 2000 + i, 1_000_000_000 + u64::from(i))));
    let (r, state) = ids_only(3, 1_000_000_000, pkts.clone());
    assert_eq!(r.alerts.get("suspicious_source"), None);
    assert_eq!(windows(&state), vec![(1, 3)]);
    pkts.push(syn(A, 3000, 1_500_000_000));
    pkts.push(syn([10, 0, 0, 2], 3000, 1_500_000_001));
    let (r, state) = ids_only(3, 1_000_000_000, pkts);
    assert_eq!(r.alerts.get("suspicious_source"), Some(&1));
    assert_eq!(r.alert_records[0].fields["syn_count"], 4);
    assert_eq!(windows(&state), vec![(1, 1)], "the flagged source's entry is gone; the other source has one");
    assert_eq!(object(&state, 1).len(), 1, "one flagged source");
}

#[test]
fn ids_counts_a_late_packet_in_the_newest_window() {
    let mut v = None;
    let w = |x: u64| x.to_be_bytes();
    assert_eq!(window_count(&mut v, &w(5)).expect("op"), Some(Value::Int(1)));
    assert_eq!(window_count(&mut v, &w(5)).expect("op"), Some(Value::Int(2)));
    assert_eq!(window_count(&mut v, &w(4)).expect("op"), Some(Value::Int(3)), "older window: stored one");
    assert_eq!(window_count(&mut v, &w(6)).expect("op"), Some(Value::Int(1)));
    assert!(window_count(&mut v, b"short").is_err());
    let mut bad = Some(Value::Int(1));
    assert!(window_count(&mut bad, &w(1)).is_err());
}
