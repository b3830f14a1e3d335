//! Trace reading and writing: round trips, handcrafted files in both byte orders,
//! timestamp resolutions, multiple interfaces and sections, truncation and corruption.

use std::io::Cursor;

use proptest::prelude::*;
use streamnf_packet::trace::{
    create_writer, read_all, PcapNgWriter, PcapWriter, RawRecord, TraceError, TraceErrorKind, TraceFormat,
    TraceReader,
};
use streamnf_packet::LinkType;

// ---------------------------------------------------------------- builders

fn put16(b: &mut Vec<u8>, big: bool, v: u16) {
    b.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}
fn put32(b: &mut Vec<u8>, big: bool, v: u32) {
    b.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}
fn put64(b: &mut Vec<u8>, big: bool, v: u64) {
    b.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

/// A pcap file; returns the bytes and the offset of each record header.
fn pcap_file(big: bool, nanos: bool, link: u32, recs: &[(u32, u32, u32, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
    let mut b = Vec::new();
    put32(&mut b, big, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    put16(&mut b, big, 2);
    put16(&mut b, big, 4);
    put32(&mut b, big, 0);
    put32(&mut b, big, 0);
    put32(&mut b, big, 65535);
    put32(&mut b, big, link);
    let mut offs = Vec::new();
    for (sec, frac, orig, data) in recs {
        offs.push(b.len());
        put32(&mut b, big, *sec);
        put32(&mut b, big, *frac);
        put32(&mut b, big, data.len() as u32);
        put32(&mut b, big, *orig);
        b.extend_from_slice(data);
    }
    (b, offs)
}

/// A pcapng file under construction; every method returns the offset of its block.
struct Ng {
    big: bool,
    buf: Vec<u8>,
}

impl Ng {
    fn new(big: bool) -> Ng {
        let mut ng = Ng { big, buf: Vec::new() };
        ng.shb(big);
        ng
    }

    fn block(&mut self, ty: u32, body: &[u8]) -> usize {
        let start = self.buf.len();
        let padded = (body.len() + 3) & !3;
        let total = (12 + padded) as u32;
        let big = self.big;
        put32(&mut self.buf, big, ty);
        put32(&mut self.buf, big, total);
        self.buf.extend_from_slice(body);
        self.buf.resize(start + 8 + padded, 0);
        put32(&mut self.buf, big, total);
        start
    }

    fn shb(&mut self, big: bool) -> usize {
        self.big = big;
        let mut body = Vec::new();
        put32(&mut body, big, 0x1A2B_3C4D);
        put16(&mut body, big, 1);
        put16(&mut body, big, 0);
        put64(&mut body, big, u64::MAX);
        self.block(0x0A0D_0D0A, &body)
    }

    fn idb(&mut self, link: u16, snaplen: u32, opts: &[(u16, Vec<u8>)]) -> usize {
        let big = self.big;
        let mut body = Vec::new();
        put16(&mut body, big, link);
        put16(&mut body, big, 0);
        put32(&mut body, big, snaplen);
        if !opts.is_empty() {
            for (code, v) in opts {
                put16(&mut body, big, *code);
                put16(&mut body, big, v.len() as u16);
                body.extend_from_slice(v);
                body.resize((body.len() + 3) & !3, 0);
            }
            put32(&mut body, big, 0);
        }
        self.block(1, &body)
    }

    fn epb(&mut self, iface: u32, ts: u64, orig: u32, data: &[u8]) -> usize {
        let big = self.big;
        let mut body = Vec::new();
        put32(&mut body, big, iface);
        put32(&mut body, big, (ts >> 32) as u32);
        put32(&mut body, big, ts as u32);
        put32(&mut body, big, data.len() as u32);
        put32(&mut body, big, orig);
        body.extend_from_slice(data);
        self.block(6, &body)
    }

    fn pb(&mut self, iface: u16, ts: u64, orig: u32, data: &[u8]) -> usize {
        let big = self.big;
        let mut body = Vec::new();
        put16(&mut body, big, iface);
        put16(&mut body, big, 0);
        put32(&mut body, big, (ts >> 32) as u32);
        put32(&mut body, big, ts as u32);
        put32(&mut body, big, data.len() as u32);
        put32(&mut body, big, orig);
        body.extend_from_slice(data);
        self.block(2, &body)
    }

    fn spb(&mut self, orig: u32, data: &[u8]) -> usize {
        let big = self.big;
        let mut body = Vec::new();
        put32(&mut body, big, orig);
        body.extend_from_slice(data);
        self.block(3, &body)
    }
}

fn reader(bytes: Vec<u8>) -> Result<TraceReader, TraceError> {
    TraceReader::from_reader("capture.pcap", Cursor::new(bytes))
}

/// All records and the error that ended the stream, if any.
fn drain(bytes: Vec<u8>) -> Result<(Vec<RawRecord>, Option<TraceError>), TraceError> {
    let r = reader(bytes)?;
    let mut recs = Vec::new();
    let mut err = None;
    for item in r {
        match item {
            Ok(rec) => recs.push(rec),
            Err(e) => {
                assert!(err.is_none(), "a second item after an error");
                err = Some(e);
            }
        }
    }
    Ok((recs, err))
}

fn ok_records(bytes: Vec<u8>) -> Vec<RawRecord> {
    let (recs, err) = drain(bytes).expect("open");
    assert!(err.is_none(), "unexpected error: {}", err.unwrap());
    recs
}

fn frame(i: usize) -> Vec<u8> {
    let len = [0, 1, 3, 14, 60, 61, 62, 63, 64, 1514, 9000][i % 11];
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

// ---------------------------------------------------------------- round trips

fn sample_packets() -> Vec<(u64, u32, Vec<u8>)> {
    (0..50)
        .map(|i| {
            let data = frame(i);
            let ts = 1_700_000_000_123_456_789u64 + i as u64 * 1_000_003;
            let orig = data.len() as u32 + (i as u32 % 3) * 100;
            (ts, orig, data)
        })
        .collect()
}

fn roundtrip(ext: &str, format: TraceFormat) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("rt.{ext}"));
    let pkts = sample_packets();
    let mut w = create_writer(&path, LinkType::Ethernet).unwrap();
    for (ts, orig, data) in &pkts {
        w.write(*ts, *orig, data).unwrap();
    }
    assert_eq!(w.finish().unwrap(), pkts.len() as u64);

    let r = TraceReader::open(&path).unwrap();
    assert_eq!(r.format(), format);
    assert_eq!(r.link_type(), Some(LinkType::Ethernet));
    let (recs, err) = read_all(&path).unwrap();
    assert!(err.is_none());
    assert_eq!(recs.len(), pkts.len());
    for (rec, (ts, orig, data)) in recs.iter().zip(&pkts) {
        assert_eq!(rec.link, LinkType::Ethernet);
        assert_eq!(rec.ts_ns, *ts);
        assert_eq!(rec.orig_len, *orig);
        assert_eq!(&rec.data, data);
    }
    let p = recs[9].clone().into_packet();
    assert_eq!(p.data.len(), 1514);
    assert_eq!(p.orig_len, pkts[9].1);
    assert_eq!(p.ts_ns, pkts[9].0);
}

#[test]
fn roundtrip_pcap() {
    roundtrip("pcap", TraceFormat::Pcap { nanos: true });
}

#[test]
fn roundtrip_pcapng() {
    roundtrip("pcapng", TraceFormat::PcapNg);
    roundtrip("PCAPNG", TraceFormat::PcapNg);
}

#[test]
fn in_memory_writers_and_other_links() {
    for link in [LinkType::RawIp, LinkType::LinuxSll2, LinkType::Other(147)] {
        let mut w = PcapWriter::new(Vec::new(), link).unwrap();
        w.write_packet(5, 3, b"abc").unwrap();
        let recs = ok_records(w.into_inner().unwrap());
        assert_eq!(recs, vec![RawRecord { link, ts_ns: 5, orig_len: 3, data: b"abc".to_vec() }]);

        let mut w = PcapNgWriter::new(Vec::new(), link).unwrap();
        w.write_packet(u64::MAX, 1, b"abcde").unwrap();
        assert_eq!(w.packets(), 1);
        let recs = ok_records(w.into_inner().unwrap());
        // orig_len below the captured length is raised to it.
        assert_eq!(recs, vec![RawRecord { link, ts_ns: u64::MAX, orig_len: 5, data: b"abcde".to_vec() }]);
    }
}

#[test]
fn writers_clip_to_snaplen_and_reject_far_timestamps() {
    let big = vec![7u8; 300_000];
    let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet).unwrap();
    w.write_packet(1, 300_000, &big).unwrap();
    assert!(w.write_packet(u64::MAX, 1, b"x").is_err());
    let recs = ok_records(w.into_inner().unwrap());
    assert_eq!(recs[0].data.len(), 262_144);
    assert_eq!(recs[0].orig_len, 300_000);

    let mut w = PcapNgWriter::new(Vec::new(), LinkType::Ethernet).unwrap();
    w.write_packet(1, 300_000, &big).unwrap();
    let recs = ok_records(w.into_inner().unwrap());
    assert_eq!(recs[0].data.len(), 262_144);
    assert_eq!(recs[0].orig_len, 300_000);
}

// ---------------------------------------------------------------- handcrafted pcap

#[test]
fn pcap_micro_and_nano_both_byte_orders() {
    let recs_in = vec![(1_700_000_000, 123_456, 100, vec![1, 2, 3]), (1, 999_999, 4, vec![9; 4])];
    for big in [false, true] {
        let (b, _) = pcap_file(big, false, 1, &recs_in);
        let r = reader(b.clone()).unwrap();
        assert_eq!(r.format(), TraceFormat::Pcap { nanos: false });
        assert_eq!(r.link_type(), Some(LinkType::Ethernet));
        let recs = ok_records(b);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_ns, 1_700_000_000_123_456_000);
        assert_eq!(recs[0].orig_len, 100);
        assert_eq!(recs[0].data, vec![1, 2, 3]);
        assert_eq!(recs[1].ts_ns, 1_999_999_000);

        let (b, _) = pcap_file(big, true, 101, &recs_in);
        let r = reader(b.clone()).unwrap();
        assert_eq!(r.format(), TraceFormat::Pcap { nanos: true });
        assert_eq!(r.link_type(), Some(LinkType::RawIp));
        let recs = ok_records(b);
        assert_eq!(recs[0].ts_ns, 1_700_000_000_000_123_456);
        assert_eq!(recs[1].ts_ns, 1_000_999_999);
        assert_eq!(recs[0].link, LinkType::RawIp);
    }
}

#[test]
fn pcap_header_only_and_incl_above_orig() {
    let (b, _) = pcap_file(false, false, 1, &[]);
    assert!(ok_records(b).is_empty());
    let (b, _) = pcap_file(true, false, 1, &[(0, 0, 2, vec![1, 2, 3, 4])]);
    let recs = ok_records(b);
    assert_eq!(recs[0].orig_len, 4);
    assert_eq!(recs[0].data.len(), 4);
}

#[test]
fn empty_file_and_unknown_magic() {
    let e = reader(Vec::new()).unwrap_err();
    assert!(matches!(e.kind, TraceErrorKind::Empty));
    assert_eq!(e.to_string(), "capture.pcap: byte 0 (record 0): empty file");

    let e = reader(b"GIF89a....".to_vec()).unwrap_err();
    assert!(matches!(e.kind, TraceErrorKind::NotACapture { magic: 0x4749_4638 }));
    assert_eq!(e.offset, 0);
    assert_eq!(
        e.to_string(),
        "capture.pcap: byte 0 (record 0): not a pcap or pcapng file (magic 0x47494638)"
    );

    let e = reader(vec![0xd4, 0xc3]).unwrap_err();
    assert!(e.to_string().contains("too short"), "{e}");

    let e = TraceReader::open("/nonexistent/dir/x.pcap").unwrap_err();
    assert!(matches!(e.kind, TraceErrorKind::Open(_)));
    assert!(e.to_string().starts_with("/nonexistent/dir/x.pcap: cannot open: "), "{e}");
    assert!(read_all("/nonexistent/dir/x.pcap").is_err());
}

#[test]
fn error_display_matches_spec() {
    let recs: Vec<_> = (0..18).map(|i| (i, 0, 1514, vec![0u8; if i == 17 { 300 } else { 64 }])).collect();
    let (mut b, offs) = pcap_file(false, false, 1, &recs);
    // Record 17 claims 1514 bytes, but only 200 follow.
    let at = offs[17];
    b[at + 8..at + 12].copy_from_slice(&1514u32.to_le_bytes());
    b.truncate(at + 16 + 200);
    let (got, err) = drain(b).unwrap();
    assert_eq!(got.len(), 17);
    let e = err.unwrap();
    assert_eq!((e.offset, e.record), (at as u64, 17));
    assert_eq!(
        e.to_string(),
        format!("capture.pcap: byte {at} (record 17): truncated record: header says 1514 bytes, 200 left")
    );
}

#[test]
fn absurd_caplen_is_corrupt() {
    let (mut b, offs) = pcap_file(false, true, 1, &[(0, 0, 3, vec![1, 2, 3]), (0, 0, 3, vec![1, 2, 3])]);
    b[offs[1] + 8..offs[1] + 12].copy_from_slice(&262_145u32.to_le_bytes());
    let (got, err) = drain(b).unwrap();
    assert_eq!(got.len(), 1);
    let e = err.unwrap();
    assert_eq!((e.offset, e.record), (offs[1] as u64, 1));
    assert!(e.to_string().contains("captured length 262145"), "{e}");
}

// ---------------------------------------------------------------- handcrafted pcapng

#[test]
fn pcapng_both_byte_orders_default_microseconds() {
    for big in [false, true] {
        let mut ng = Ng::new(big);
        ng.idb(1, 0, &[]);
        ng.epb(0, 1_700_000_000_123_456, 60, &[0xaa; 42]);
        ng.epb(0, 1, 5, b"hello");
        let r = reader(ng.buf.clone()).unwrap();
        assert_eq!(r.format(), TraceFormat::PcapNg);
        assert_eq!(r.link_type(), Some(LinkType::Ethernet));
        let recs = ok_records(ng.buf);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_ns, 1_700_000_000_123_456_000);
        assert_eq!(recs[0].orig_len, 60);
        assert_eq!(recs[0].data, vec![0xaa; 42]);
        assert_eq!(recs[1].ts_ns, 1_000);
        assert_eq!(recs[1].data, b"hello");
    }
}

#[test]
fn pcapng_tsresol_and_tsoffset() {
    for big in [false, true] {
        let mut ng = Ng::new(big);
        ng.idb(1, 0, &[(9, vec![6])]);
        ng.idb(1, 0, &[(9, vec![9])]);
        ng.idb(1, 0, &[(9, vec![0x80 | 10])]); // 2^-10 s
        let off = if big { 100i64.to_be_bytes() } else { 100i64.to_le_bytes() };
        ng.idb(1, 0, &[(2, b"eth0".to_vec()), (14, off.to_vec()), (9, vec![3])]);
        ng.epb(0, 1_500_000, 1, b"a");
        ng.epb(1, 1_500_000, 1, b"b");
        ng.epb(2, 3 * 512, 1, b"c");
        ng.epb(3, 1_500, 1, b"d");
        let ts: Vec<u64> = ok_records(ng.buf).iter().map(|r| r.ts_ns).collect();
        assert_eq!(ts, vec![1_500_000_000, 1_500_000, 1_500_000_000, 101_500_000_000]);
    }
}

#[test]
fn pcapng_two_interfaces_different_links() {
    let mut ng = Ng::new(false);
    ng.idb(1, 0, &[]);
    ng.idb(101, 0, &[]);
    ng.epb(1, 0, 20, &[0x45; 20]);
    ng.epb(0, 0, 14, &[0xff; 14]);
    let r = reader(ng.buf.clone()).unwrap();
    assert_eq!(r.link_type(), Some(LinkType::Ethernet));
    let recs = ok_records(ng.buf);
    assert_eq!(recs[0].link, LinkType::RawIp);
    assert_eq!(recs[1].link, LinkType::Ethernet);
}

#[test]
fn pcapng_simple_and_obsolete_packet_blocks() {
    for big in [false, true] {
        let mut ng = Ng::new(big);
        ng.idb(1, 8, &[(9, vec![9])]);
        ng.spb(100, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]); // cut to snaplen 8
        ng.spb(3, &[1, 2, 3, 0]); // padding is not data: orig_len 3
        ng.pb(0, 77, 10, &[5; 10]);
        let recs = ok_records(ng.buf);
        assert_eq!(recs.len(), 3);
        assert_eq!(
            recs[0],
            RawRecord {
                link: LinkType::Ethernet,
                ts_ns: 0,
                orig_len: 100,
                data: vec![1, 2, 3, 4, 5, 6, 7, 8]
            }
        );
        assert_eq!(recs[1].data, vec![1, 2, 3]);
        assert_eq!(recs[1].orig_len, 3);
        assert_eq!(recs[2].ts_ns, 77);
        assert_eq!(recs[2].data, vec![5; 10]);
    }
    // Snaplen 0 means unlimited.
    let mut ng = Ng::new(false);
    ng.idb(1, 0, &[]);
    ng.spb(5, b"hello");
    assert_eq!(ok_records(ng.buf)[0].data, b"hello");
}

#[test]
fn pcapng_sections_and_unknown_blocks() {
    let mut ng = Ng::new(false);
    ng.block(0x0000_0BAD, b"custom stuff"); // before any IDB
    ng.idb(1, 0, &[]);
    ng.block(4, &[0; 16]); // name resolution block
    ng.block(5, &[0; 30]); // interface statistics
    ng.epb(0, 1, 1, b"x");
    ng.shb(true); // new big-endian section: interfaces reset
    ng.idb(228, 0, &[(9, vec![9])]);
    ng.epb(0, 2, 1, b"y");
    let r = reader(ng.buf.clone()).unwrap();
    assert_eq!(r.link_type(), Some(LinkType::Ethernet));
    let recs = ok_records(ng.buf);
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].link, recs[0].ts_ns), (LinkType::Ethernet, 1_000));
    assert_eq!((recs[1].link, recs[1].ts_ns), (LinkType::Ipv4, 2));

    // Interface 1 of the first section does not carry over to the second one.
    let mut ng = Ng::new(false);
    ng.idb(1, 0, &[]);
    ng.idb(1, 0, &[]);
    ng.shb(false);
    ng.idb(1, 0, &[]);
    let at = ng.epb(1, 0, 1, b"z");
    let (recs, err) = drain(ng.buf).unwrap();
    assert!(recs.is_empty());
    let e = err.unwrap();
    assert_eq!(e.offset, at as u64);
    assert!(e.to_string().contains("interface 1"), "{e}");
}

#[test]
fn pcapng_no_interface() {
    let ng = Ng::new(true);
    let r = reader(ng.buf.clone()).unwrap();
    assert_eq!(r.link_type(), None);
    assert!(ok_records(ng.buf).is_empty());

    let mut ng = Ng::new(false);
    ng.spb(1, b"a");
    let (recs, err) = drain(ng.buf).unwrap();
    assert!(recs.is_empty());
    assert!(err.unwrap().to_string().contains("before any interface"));
}

#[test]
fn pcapng_bad_block_lengths() {
    let base = || {
        let mut ng = Ng::new(false);
        ng.idb(1, 0, &[]);
        ng.epb(0, 0, 4, b"good");
        ng
    };
    // Not a multiple of 4.
    let mut ng = base();
    let at = ng.epb(0, 0, 4, b"abcd");
    ng.buf[at + 4] += 1;
    let (recs, err) = drain(ng.buf).unwrap();
    assert_eq!(recs.len(), 1);
    let e = err.unwrap();
    assert_eq!((e.offset, e.record), (at as u64, 1));
    assert!(e.to_string().contains("not a multiple of 4"), "{e}");
    // Less than 12.
    let mut ng = base();
    let at = ng.epb(0, 0, 4, b"abcd");
    ng.buf[at + 4..at + 8].copy_from_slice(&8u32.to_le_bytes());
    let e = drain(ng.buf).unwrap().1.unwrap();
    assert_eq!(e.offset, at as u64);
    assert!(e.to_string().contains("less than 12"), "{e}");
    // Trailing length mismatch.
    let mut ng = base();
    let at = ng.epb(0, 0, 4, b"abcd");
    let end = ng.buf.len();
    ng.buf[end - 4] ^= 4;
    let e = drain(ng.buf).unwrap().1.unwrap();
    assert_eq!(e.offset, at as u64);
    assert!(e.to_string().contains("trailing block length"), "{e}");
    // Captured length beyond the block.
    let mut ng = base();
    let at = ng.epb(0, 0, 4, b"abcd");
    ng.buf[at + 20..at + 24].copy_from_slice(&9u32.to_le_bytes());
    let e = drain(ng.buf).unwrap().1.unwrap();
    assert_eq!(e.offset, at as u64);
    assert!(e.to_string().contains("exceeds the block"), "{e}");
    // Absurd captured length.
    let mut ng = base();
    let at = ng.epb(0, 0, 4, b"abcd");
    ng.buf[at + 20..at + 24].copy_from_slice(&300_000u32.to_le_bytes());
    let e = drain(ng.buf).unwrap().1.unwrap();
    assert!(e.to_string().contains("captured length 300000 exceeds the 262144-byte maximum"), "{e}");
    // Bad byte-order magic, unsupported version.
    let mut ng = base();
    ng.buf[8] = 0;
    assert!(reader(ng.buf).unwrap_err().to_string().contains("byte-order magic"));
    let mut ng = base();
    ng.buf[12] = 2;
    assert!(reader(ng.buf).unwrap_err().to_string().contains("version 2.0"));
    // A huge unknown block in a short file: truncated, without allocating its length.
    let mut ng = base();
    let at = ng.block(0x1234, &[0; 8]);
    ng.buf[at + 4..at + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let e = drain(ng.buf).unwrap().1.unwrap();
    assert_eq!(e.offset, at as u64);
    assert!(e.to_string().contains("truncated block: header says 4294967280 bytes, 20 left"), "{e}");
}

// ---------------------------------------------------------------- truncation

/// Cuts `file` at every length; `starts` are the record/block starts after the file header
/// (`header_end`), `ends` where each unit ends, `is_rec` whether a unit yields a record.
fn check_truncations(file: &[u8], header_end: usize, units: &[(usize, usize, bool)]) {
    for cut in 0..=file.len() {
        let bytes = file[..cut].to_vec();
        if cut == 0 {
            assert!(matches!(reader(bytes).unwrap_err().kind, TraceErrorKind::Empty));
            continue;
        }
        if cut < header_end {
            let e = reader(bytes).unwrap_err();
            assert_eq!(e.offset, 0, "cut {cut}: {e}");
            continue;
        }
        let (recs, err) = drain(bytes).unwrap_or_else(|e| panic!("cut {cut}: open failed: {e}"));
        let complete = units.iter().filter(|u| u.1 <= cut && u.2).count();
        assert_eq!(recs.len(), complete, "cut {cut}");
        match units.iter().find(|u| u.0 < cut && cut < u.1) {
            None => assert!(err.is_none(), "cut {cut}: {}", err.unwrap()),
            Some(u) => {
                let e = err.unwrap_or_else(|| panic!("cut {cut}: no error"));
                assert_eq!((e.offset, e.record), (u.0 as u64, complete as u64), "cut {cut}: {e}");
                assert!(e.to_string().contains("truncated"), "cut {cut}: {e}");
            }
        }
    }
}

#[test]
fn truncated_pcap_at_every_byte() {
    let recs: Vec<_> = (0..6).map(|i| (i, i, 100, frame(i as usize + 2))).collect();
    for big in [false, true] {
        let (b, offs) = pcap_file(big, true, 1, &recs);
        let mut units = Vec::new();
        for (i, &o) in offs.iter().enumerate() {
            let end = offs.get(i + 1).copied().unwrap_or(b.len());
            units.push((o, end, true));
        }
        check_truncations(&b, 24, &units);
    }
}

#[test]
fn truncated_pcapng_at_every_byte() {
    for big in [false, true] {
        let mut ng = Ng::new(big);
        let mut starts = vec![(ng.idb(1, 0, &[(9, vec![9])]), false)];
        starts.push((ng.epb(0, 1, 14, &frame(3)), true));
        starts.push((ng.block(77, &[1; 5]), false));
        starts.push((ng.spb(60, &frame(4)), true));
        starts.push((ng.shb(!big), false));
        starts.push((ng.idb(101, 0, &[]), false));
        starts.push((ng.pb(0, 1, 61, &frame(5)), true));
        let b = ng.buf;
        let units: Vec<_> = starts
            .iter()
            .enumerate()
            .map(|(i, &(s, rec))| (s, starts.get(i + 1).map_or(b.len(), |n| n.0), rec))
            .collect();
        check_truncations(&b, 28, &units);
    }
}

// ---------------------------------------------------------------- never panic

fn consume(bytes: Vec<u8>) {
    if let Ok(r) = reader(bytes.clone()) {
        let _ = r.link_type();
        let mut n = 0usize;
        let mut errors = 0;
        for item in r {
            n += 1;
            assert!(n <= bytes.len() + 1, "more items than bytes");
            match item {
                Ok(rec) => {
                    assert!(rec.data.len() as u64 <= rec.orig_len as u64);
                    assert!(rec.data.len() <= 262_144);
                    let _ = rec.into_packet();
                }
                Err(e) => {
                    errors += 1;
                    assert!(e.offset <= bytes.len() as u64, "{e}");
                    let _ = e.to_string();
                }
            }
        }
        assert!(errors <= 1);
    }
}

fn valid_pcap() -> Vec<u8> {
    pcap_file(false, false, 1, &(0..5).map(|i| (i, i, 70, frame(i as usize))).collect::<Vec<_>>()).0
}

fn valid_pcapng(big: bool) -> Vec<u8> {
    let mut ng = Ng::new(big);
    ng.idb(1, 64, &[(9, vec![9]), (14, vec![0; 8])]);
    ng.idb(101, 0, &[]);
    ng.epb(0, 1, 14, &frame(3));
    ng.epb(1, 1, 14, &frame(4));
    ng.spb(60, &frame(5));
    ng.pb(1, 1, 61, &frame(6));
    ng.block(99, &[3; 7]);
    ng.shb(!big);
    ng.idb(1, 0, &[]);
    ng.epb(0, 1, 14, &frame(2));
    ng.buf
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(
        prefix in 0usize..6,
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let heads: [&[u8]; 6] = [
            &[],
            &[0xd4, 0xc3, 0xb2, 0xa1],
            &[0xa1, 0xb2, 0x3c, 0x4d],
            &[0x0a, 0x0d, 0x0d, 0x0a],
            &[0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0],
            &[0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0x1c, 0x1a, 0x2b, 0x3c, 0x4d, 0, 1, 0, 0],
        ];
        let mut b = heads[prefix].to_vec();
        b.extend_from_slice(&tail);
        consume(b);
    }

    #[test]
    fn corrupted_files_never_panic(
        which in 0usize..3,
        cut in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let mut b = match which {
            0 => valid_pcap(),
            1 => valid_pcapng(false),
            _ => valid_pcapng(true),
        };
        for (at, v) in flips {
            let i = at.index(b.len());
            b[i] = v;
        }
        let keep = cut.index(b.len() + 1);
        b.truncate(keep);
        consume(b);
    }
}
