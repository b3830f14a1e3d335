//! Interop: files written by streamnf's writers must read back in tshark with the same
//! packet count and frame lengths. Requires tshark (Debian/Ubuntu: `apt-get install tshark`).

use std::path::Path;
use std::process::Command;

use streamnf_packet::trace::{create_writer, read_all};
use streamnf_packet::LinkType;

/// A minimal Ethernet + IPv4 + UDP frame with `payload` bytes of payload.
fn frame(payload: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let ip_len = (20 + 8 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    let udp_len = (8 + payload) as u16;
    f.extend_from_slice(&[0x30, 0x39, 0, 53, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.extend((0..payload).map(|i| seed.wrapping_add(i as u8)));
    f
}

fn tshark_lengths(path: &Path) -> Vec<u32> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "frame.len"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run tshark ({e}): this test needs it; install it \
                 (Debian/Ubuntu: `apt-get install tshark`, or the wireshark package of your OS)"
            )
        });
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().unwrap_or_else(|_| panic!("bad tshark line {l:?}")))
        .collect()
}

#[test]
fn tshark_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0usize, 1, 18, 100, 1472, 5, 999, 64];
    let mut expected = Vec::new();
    for ext in ["pcap", "pcapng"] {
        let path = dir.path().join(format!("interop.{ext}"));
        let mut w = create_writer(&path, LinkType::Ethernet).unwrap();
        expected.clear();
        for (i, &s) in sizes.iter().enumerate() {
            let f = frame(s, i as u8);
            // Every third packet is snapped: on-wire length larger than captured.
            let orig = f.len() as u32 + if i % 3 == 2 { 40 } else { 0 };
            w.write(1_700_000_000_000_000_000 + i as u64 * 1_234_567, orig, &f).unwrap();
            expected.push(orig);
        }
        assert_eq!(w.finish().unwrap(), sizes.len() as u64);
        assert_eq!(tshark_lengths(&path), expected, "{ext}");
        let (recs, err) = read_all(&path).unwrap();
        assert!(err.is_none());
        assert_eq!(recs.iter().map(|r| r.orig_len).collect::<Vec<_>>(), expected);
    }
}
