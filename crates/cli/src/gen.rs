//! `streamnf gen-trace`: write a synthetic trace made by `streamnf-tracegen`.

use clap::Args;
use std::path::PathBuf;
use streamnf_packet::trace::create_writer;
use streamnf_packet::LinkType;
use streamnf_tracegen::{GenConfig, Generator, ScanConfig, TrojanConfig};

/// Arguments of `streamnf gen-trace`.
#[derive(Args)]
pub struct GenArgs {
    /// Output file; `.pcapng` writes pcapng, anything else pcap.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Approximate number of regular TCP/UDP flows.
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// Exact number of packets.
    #[arg(long, default_value_t = 100_000)]
    packets: u64,
    /// PRNG seed: the same seed and options give a byte-identical trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Flows active at once.
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Mean packet rate used for timestamps (packets per second).
    #[arg(long, default_value_t = 1_000_000)]
    pps: u64,
    /// Fraction of flows that are UDP.
    #[arg(long, default_value_t = 0.2)]
    udp_fraction: f64,
    /// Fraction of TCP flows that are HTTP.
    #[arg(long, default_value_t = 0.5)]
    http_fraction: f64,
    /// Number of distinct URLs (popular ones repeat).
    #[arg(long, default_value_t = 200)]
    url_pool: u32,
    /// Number of web servers HTTP flows go to (1–200).
    #[arg(long, default_value_t = 200)]
    http_servers: u32,
    /// Fraction of HTTP requests carrying `<script>` in the URI.
    #[arg(long, default_value_t = 0.0)]
    xss: f64,
    /// Add SYN scanners.
    #[arg(long)]
    scan: bool,
    /// Number of scanners (implies --scan).
    #[arg(long)]
    scanners: Option<u32>,
    /// Ports each scanner probes per target (implies --scan).
    #[arg(long)]
    scan_ports: Option<u32>,
    /// Add multi-step trojan hosts (SSH in, HTTP .html, FTP .exe and .zip, IRC).
    #[arg(long)]
    trojan: bool,
    /// Number of infected hosts (implies --trojan).
    #[arg(long)]
    trojan_hosts: Option<u32>,
    /// Hosts doing the same steps in a wrong order (implies --trojan).
    #[arg(long)]
    trojan_decoys: Option<u32>,
}

/// Generates and writes the trace.
pub fn gen(a: GenArgs) -> Result<(), String> {
    let mut cfg = GenConfig {
        flows: a.flows,
        packets: a.packets,
        seed: a.seed,
        concurrency: a.concurrency,
        pps: a.pps,
        udp_fraction: a.udp_fraction,
        http_fraction: a.http_fraction,
        url_pool: a.url_pool,
        http_servers: a.http_servers,
        xss_fraction: a.xss,
        ..GenConfig::default()
    };
    if a.scan || a.scanners.is_some() || a.scan_ports.is_some() {
        let d = ScanConfig::default();
        cfg.scan = Some(ScanConfig {
            scanners: a.scanners.unwrap_or(d.scanners),
            ports_per_scanner: a.scan_ports.unwrap_or(d.ports_per_scanner),
            ..d
        });
    }
    if a.trojan || a.trojan_hosts.is_some() || a.trojan_decoys.is_some() {
        let d = TrojanConfig::default();
        cfg.trojan = Some(TrojanConfig {
            hosts: a.trojan_hosts.unwrap_or(d.hosts),
            decoys: a.trojan_decoys.unwrap_or(d.decoys),
        });
    }
    let mut generator = Generator::new(cfg).map_err(|e| e.to_string())?;
    let mut w =
        create_writer(&a.output, LinkType::Ethernet).map_err(|e| format!("{}: {e}", a.output.display()))?;
    for p in generator.by_ref() {
        w.write(p.ts_ns, p.data.len() as u32, &p.data).map_err(|e| format!("{}: {e}", a.output.display()))?;
    }
    let n = w.finish().map_err(|e| format!("{}: {e}", a.output.display()))?;
    let s = generator.stats();
    eprintln!(
        "wrote {} packets to {} ({} flows: {} tcp, {} udp; {} http requests, {} distinct urls; {} scan probes; {} trojan connections)",
        n,
        a.output.display(),
        s.flows_started,
        s.tcp_flows,
        s.udp_flows,
        s.http_requests,
        s.distinct_urls,
        s.scan_probes,
        s.trojan_connections
    );
    Ok(())
}
