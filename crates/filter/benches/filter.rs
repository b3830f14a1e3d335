//! `Filter::matches` cost per packet for three typical expressions over a mixed set of
//! frames (IPv4/IPv6 TCP and UDP, ICMP, ARP, VLAN, fragments, runts).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use streamnf_filter::Filter;
use streamnf_packet::{LinkType, Packet};

#[path = "../tests/common/mod.rs"]
mod common;

fn bench(c: &mut Criterion) {
    let pkts: Vec<Packet> = common::synthetic_frames()
        .into_iter()
        .map(|(d, len)| Packet::with_orig_len(LinkType::Ethernet, d, 0, len))
        .collect();
    let mut g = c.benchmark_group("matches");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    for expr in [
        "tcp port 80",
        "host 10.0.0.1 and (port 80 or 443)",
        "tcp[tcpflags] & (tcp-syn|tcp-ack) != 0 and not src net 192.168.0.0/16",
    ] {
        let f = Filter::compile(expr).unwrap();
        g.bench_function(expr, |b| {
            b.iter(|| {
                let mut n = 0u32;
                for p in &pkts {
                    n += u32::from(f.matches(black_box(p)));
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
