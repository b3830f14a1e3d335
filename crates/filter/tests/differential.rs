//! Differential test against tcpdump: for every expression in the corpus and every trace,
//! the set of packets `Filter::matches` selects must equal the set tcpdump writes out.
//!
//! Traces: every capture in `../shared/traces/real` (when present) plus a synthetic trace
//! generated here (VLAN, QinQ, ARP/RARP, fragments, IPv6 extension headers, SCTP,
//! truncated captures, runts), so the test runs without the shared folder too.
//! tcpdump is required: the test fails with instructions when it is missing.

mod common;

use common::{read_capture, synthetic_pcap, Rec};
use std::path::{Path, PathBuf};
use std::process::Command;
use streamnf_filter::Filter;
use streamnf_packet::{LinkType, Packet};

const TRACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/traces/real");

const CORPUS: &[&str] = &[
    // protocols
    "ip",
    "ip6",
    "arp",
    "rarp",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "sctp",
    "igmp",
    "not ip and not ip6",
    // hosts and nets
    "host 172.16.0.1",
    "src host 192.168.10.50",
    "dst host 192.168.10.50",
    "host 10.0.0.1",
    "ip host 10.0.0.1",
    "arp host 10.0.0.254",
    "src and dst host 127.0.0.1",
    "host 2a00:1450:4006:804::200e",
    "ip6 host fe80::908e:69ff:fe19:2375",
    "dst host ff02::16",
    "host 198.18.0.2",
    "net 172.16.0.0/16",
    "net 192.168",
    "src net 10.0.0.0 mask 255.0.0.0",
    "dst net 2a00::/16",
    "net 10",
    "net 2001:db8::/32 and not host 2001:db8::2",
    "host 10.9",
    // ports
    "port 80",
    "tcp port 80",
    "udp port 53",
    "sctp port 2905",
    "port http",
    "port ssh",
    "port domain",
    "tcp dst port 22",
    "src port 443",
    "portrange 1-1023",
    "tcp portrange 8000-8100",
    "udp src portrange 1000-65535",
    "src or dst port 25",
    "src and dst port 5353",
    "dst port (80 or 8080)",
    "port ftp or ftp-data",
    // link layer
    "ether broadcast",
    "ether multicast",
    "broadcast",
    "multicast",
    "ip multicast",
    "ip6 multicast",
    "ip broadcast",
    "ether host 00:c1:b1:14:eb:31",
    "ether src 02:00:00:00:00:0a",
    "ether dst 00-0c-29-a5-45-e0 or ether src 0050.56c0.0008",
    "ether proto 0x0806",
    "ether proto \\ip6",
    // protocol numbers
    "ip proto 6",
    "ip proto \\udp",
    "ip6 proto 58",
    "ip6 proto 0",
    "proto \\tcp",
    "proto 132",
    // lengths
    "less 60",
    "greater 1000",
    "len <= 66",
    "len >= 1500",
    "len - 14 > 1000",
    // accessors and flags
    "tcp[tcpflags] & (tcp-syn|tcp-ack) != 0",
    "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack = 0",
    "tcp[13] & 2 != 0",
    "tcp[13] = 0x12",
    "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0",
    "tcp[tcpflags] & (tcp-ece|tcp-cwr) != 0",
    "tcp[tcpflags] == tcp-push|tcp-ack",
    "ip[8] < 64",
    "ip[6:2] & 0x1fff != 0",
    "ip[2:2] > 576",
    "ip[0] & 0xf != 5",
    "ip6[6] = 0",
    "udp[4:2] > 100",
    "icmp[icmptype] = icmp-echo",
    "icmp[icmptype] != icmp-echo and icmp[icmptype] != icmp-echoreply",
    "icmp6[icmp6type] = icmp6-routersolicit",
    "icmp6[0] = 128",
    "ether[0] & 1 = 1",
    "ether[12:2] = 0x86dd",
    "tcp[((tcp[12] & 0xf0) >> 2):4] = 0x47455420",
    "tcp[12] >> 4 > 5",
    "arp[6:2] = 1",
    "udp[0:2] % 2 = 0",
    "tcp[4:4] ^ tcp[8:4] != 0",
    "tcp[2:2] * 2 > 1000",
    "tcp[0:2] / 1000 = 50",
    "-tcp[13] < 0x100",
    "ip[9] + 1 = 7 and ip[6] & 0x20 = 0",
    // boolean structure and implicit continuation
    "host 172.16.0.1 or 192.168.10.50",
    "port 80 or 443",
    "tcp port 80 or 443 and not src host 172.16.0.1",
    "host 192.168.1.212 and not 90.130.70.73",
    "host 10.0.0.1 or (10.0.0.9 or 10.9.9.3)",
    "(port 80 or 443) and tcp",
    "not tcp and not udp",
    "! ip and ! arp",
    "tcp && port 21 || udp",
    "udp or tcp and port 80",
    "not (icmp or arp) and len < 100",
    "icmp or arp or (udp and port 67)",
    "ip6 and not ip6 proto 6",
    "tcp and len > 100 and not port 22",
    "src 172.16.238.1 and dst port 22",
    "dst 10.0.0.2 or 10.0.0.1",
    // vlan
    "vlan",
    "vlan 100",
    "vlan and ip",
    "vlan 100 and tcp port 22",
    "vlan 200 and vlan 300 and tcp",
    "not vlan",
    "vlan and arp",
    "vlan and host 10.9.9.1",
];

/// Expressions tcpdump rejects; we must reject them too.
const INVALID: &[&str] = &[
    "10.0.0.1",
    "port",
    "tcp and 10.0.0.1",
    "host 256.1.1.1",
    "net 10.1.2.3/8",
    "port 99999",
    "udp port ssh",
    "ip6 host 1.2.3.4",
    "tcp host 1.2.3.4",
    "host 1.2.3.4/32",
    "tcp[0:3] = 1",
    "(tcp",
    "tcp)",
    "ip and",
    "ether host 1.2.3.4",
    "host 00:11:22:33:44:55",
    "vlan 5000",
    "ip port 80",
    "net 10.0.0.0/33",
    "tcp[1] / 0 = 1",
];

fn tcpdump() -> PathBuf {
    for p in ["/usr/sbin/tcpdump", "/usr/bin/tcpdump", "/usr/local/sbin/tcpdump", "/usr/local/bin/tcpdump"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tcpdump"]).output() {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !s.is_empty() {
            return PathBuf::from(s);
        }
    }
    panic!(
        "tcpdump not found: the differential test needs it. Install it \
         (Debian/Ubuntu: `apt-get install tcpdump`, Fedora: `dnf install tcpdump`, macOS ships it)"
    );
}

fn traces(tmp: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(TRACE_DIR) {
        for e in rd.flatten() {
            let p = e.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "pcap" | "pcapng" | "cap") {
                v.push(p);
            }
        }
    } else {
        eprintln!("note: {TRACE_DIR} not found; using the synthetic trace only");
    }
    v.sort();
    let syn = tmp.join("synthetic.pcap");
    std::fs::write(&syn, synthetic_pcap()).unwrap();
    v.push(syn);
    v
}

fn key(r: &Rec) -> (u64, u32, &[u8]) {
    (r.ts_ns / 1000, r.orig_len, &r.data)
}

/// Indices (0-based) of the input packets tcpdump selects, matched as a subsequence.
fn tcpdump_selection(bin: &Path, trace: &Path, expr: &str, input: &[Rec]) -> Result<Vec<usize>, String> {
    let out = Command::new(bin)
        .arg("-n")
        .arg("-r")
        .arg(trace)
        .arg("-w")
        .arg("-")
        .arg("--")
        .arg(expr)
        .output()
        .map_err(|e| format!("running tcpdump: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let sel = read_capture(&out.stdout)?;
    let mut idx = Vec::with_capacity(sel.len());
    let mut j = 0;
    for (i, r) in input.iter().enumerate() {
        if j < sel.len() && key(&sel[j]) == key(r) {
            idx.push(i);
            j += 1;
        }
    }
    if j != sel.len() {
        return Err(format!("could not align tcpdump output ({} of {} packets matched)", j, sel.len()));
    }
    Ok(idx)
}

#[test]
fn matches_tcpdump_on_all_traces() {
    let bin = tcpdump();
    let tmp = tempfile::tempdir().unwrap();
    let mut mismatches = Vec::new();
    let mut runs = 0;
    let filters: Vec<Filter> = CORPUS
        .iter()
        .map(|e| Filter::compile(e).unwrap_or_else(|err| panic!("{e:?} does not compile:\n{}", err.render())))
        .collect();
    let trace_list = traces(tmp.path());
    for trace in &trace_list {
        let name = trace.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(trace).unwrap();
        let recs = match read_capture(&bytes) {
            Ok(r) => r,
            Err(e) => panic!("cannot read {name}: {e}"),
        };
        let pkts: Vec<Packet> = recs
            .iter()
            .map(|r| {
                Packet::with_orig_len(LinkType::from_linktype(r.link), r.data.clone(), r.ts_ns, r.orig_len)
            })
            .collect();
        for (expr, f) in CORPUS.iter().zip(&filters) {
            runs += 1;
            let theirs = match tcpdump_selection(&bin, trace, expr, &recs) {
                Ok(s) => s,
                Err(e) => {
                    mismatches.push(format!("{name}: {expr:?}: tcpdump failed: {e}"));
                    continue;
                }
            };
            let ours: Vec<usize> =
                pkts.iter().enumerate().filter(|(_, p)| f.matches(p)).map(|(i, _)| i).collect();
            if ours != theirs {
                let only_ours: Vec<usize> =
                    ours.iter().filter(|i| theirs.binary_search(i).is_err()).map(|i| i + 1).take(8).collect();
                let only_theirs: Vec<usize> =
                    theirs.iter().filter(|i| ours.binary_search(i).is_err()).map(|i| i + 1).take(8).collect();
                mismatches.push(format!(
                    "{name}: {expr:?}: ours {} vs tcpdump {} packets; only ours (1-based): {only_ours:?}; only tcpdump: {only_theirs:?}",
                    ours.len(),
                    theirs.len()
                ));
            }
        }
    }
    eprintln!(
        "differential: {} expressions x {} traces = {runs} comparisons, {} mismatches",
        CORPUS.len(),
        trace_list.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches against tcpdump:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn rejects_what_tcpdump_rejects() {
    let bin = tcpdump();
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("synthetic.pcap");
    std::fs::write(&trace, synthetic_pcap()).unwrap();
    let mut problems = Vec::new();
    for expr in INVALID {
        let st = Command::new(&bin)
            .arg("-n")
            .arg("-d")
            .arg("-r")
            .arg(&trace)
            .arg("--")
            .arg(expr)
            .output()
            .unwrap();
        if st.status.success() {
            problems.push(format!("{expr:?}: tcpdump accepts it (fix the corpus)"));
        }
        if Filter::compile(expr).is_ok() {
            problems.push(format!("{expr:?}: we accept it"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
