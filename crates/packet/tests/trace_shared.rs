//! Extra check against the shared trace collection (`../shared/traces` next to the
//! workspace), skipped with a note when that folder is absent: real captures must read
//! without error and with `capinfos`' packet count; malformed ones must read fully or end
//! in one `TraceError`, never panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use streamnf_packet::trace::{read_all, TraceReader};

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces");
    p.is_dir().then_some(p)
}

/// Packet counts reported by `capinfos -c -M` (Wireshark 4.0) when this test was written.
const REAL_COUNTS: &[(&str, u64)] = &[
    ("WebattackXSS.pcap", 9374),
    ("ftp.pcap", 1192),
    ("http_ipv6.pcap", 193),
    ("http_veth_generated.pcap", 40172),
    ("irc.pcap", 29),
    ("nmap_syn_scan_lo.pcap", 20002),
    ("smtp.pcap", 95),
    ("ssh.pcap", 258),
    ("synscan.pcap", 2011),
    ("wireshark_dhcp.pcapng", 4),
    ("wireshark_http.pcap", 1),
];

fn capinfos_count(path: &Path) -> u64 {
    let out = Command::new("capinfos").args(["-c", "-M"]).arg(path).output().unwrap_or_else(|e| {
        panic!("cannot run capinfos ({e}): install it (Debian/Ubuntu: `apt-get install wireshark-common`)")
    });
    assert!(out.status.success(), "capinfos failed on {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Number of packets"))
        .unwrap_or_else(|| panic!("no packet count from capinfos for {}: {text}", path.display()));
    let n = line.rsplit(' ').next().unwrap_or("").trim();
    n.parse().unwrap_or_else(|_| panic!("bad capinfos count {n:?}"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn shared_real_traces_match_capinfos() {
    let Some(root) = shared() else {
        eprintln!("note: shared traces folder not found; skipping this extra check");
        return;
    };
    let real = files(&root.join("real"));
    assert!(!real.is_empty());
    for path in real {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (recs, err) = read_all(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(err.is_none(), "{}", err.unwrap());
        let want = capinfos_count(&path);
        assert_eq!(recs.len() as u64, want, "{name}: capinfos says {want}");
        if let Some((_, n)) = REAL_COUNTS.iter().find(|(f, _)| *f == name) {
            assert_eq!(recs.len() as u64, *n, "{name}");
        }
        assert!(TraceReader::open(&path).unwrap().link_type().is_some(), "{name}");
        eprintln!("{name}: {} records", recs.len());
    }
}

#[test]
fn shared_malformed_traces_never_panic() {
    let Some(root) = shared() else {
        eprintln!("note: shared traces folder not found; skipping this extra check");
        return;
    };
    let (mut clean, mut damaged, mut unopenable) = (0, 0, 0);
    for path in files(&root.join("malformed")) {
        match TraceReader::open(&path) {
            Err(e) => {
                unopenable += 1;
                eprintln!("{e}");
            }
            Ok(r) => {
                let mut err = None;
                let mut n = 0u64;
                for item in r {
                    match item {
                        Ok(rec) => {
                            n += 1;
                            drop(rec.into_packet());
                        }
                        Err(e) => err = Some(e),
                    }
                }
                match err {
                    Some(e) => {
                        damaged += 1;
                        eprintln!("{e}");
                    }
                    None => {
                        clean += 1;
                        let want = capinfos_count(&path);
                        assert_eq!(n, want, "{}: read fully, capinfos says {want}", path.display());
                    }
                }
            }
        }
    }
    eprintln!("malformed: {clean} read fully, {damaged} ended in an error, {unopenable} not openable");
    assert!(clean + damaged + unopenable > 0);
}
