//! Seeded, deterministic, realistic synthetic traffic for streamnf tests and
//! benchmarks (the engine behind `streamnf gen-trace`).
//!
//! This crate owns synthetic traffic generation and nothing else:
//!
//! * it never does file I/O — callers (the CLI) write the produced Ethernet
//!   frames with the packet crate's pcap/pcapng writer;
//! * it never touches global RNG state — all randomness comes from a small
//!   built-in xoshiro256** generator seeded from [`GenConfig::seed`], so the
//!   same configuration yields byte-identical output on every platform and
//!   across dependency upgrades (no `rand`, no floating-point transcendental
//!   functions);
//! * it streams: [`Generator`] is an iterator that keeps only the currently
//!   active flows in memory, so 10M+ packet traces are fine.
//!
//! # Traffic model
//!
//! `concurrency` regular flows are active at any time; each emitted packet
//! comes from an active flow chosen uniformly at random, so flows interleave.
//! Scanners and trojan hosts run alongside from the first packet; they get a
//! share of the packets sized so that their traffic is spread over roughly
//! the first half of the trace (at most half of all packets, at least their
//! proportional share of the active sources).
//! When a flow finishes a new one starts, until exactly `packets` packets
//! have been emitted (the last flows are cut mid-flow). Flow sizes are drawn
//! so that roughly `flows` flows fit into `packets` packets (many small
//! flows, a few elephants); [`GenStats::flows_started`] reports the actual
//! number.
//!
//! * TCP flows have a three-way handshake (with MSS/SACK/window-scale
//!   options), correct sequence/acknowledgement numbers, data in both
//!   directions segmented at the MSS (1460, or 1440 over IPv6) with an ACK
//!   every two segments, and end with FIN / FIN-ACK / ACK (most) or RST.
//!   A fraction `http_fraction` of them are HTTP/1.1 on port 80 with
//!   keep-alive GETs for URLs drawn from a Zipf-distributed pool of
//!   `url_pool` URLs and responses with `Content-Length` and a body; the rest
//!   are TLS-like (443, 993), SSH (22) or SMTP (25).
//! * UDP flows are DNS query/response on port 53 (70%), NTP (123) or
//!   QUIC/RTP-like streams (443, 5004).
//! * A fraction `ipv6_fraction` of flows uses IPv6.
//! * Optional SYN scanners ([`ScanConfig`]) and trojan hosts
//!   ([`TrojanConfig`]) are interleaved with the regular traffic.
//!
//! # Address plan
//!
//! | range | use |
//! |---|---|
//! | `N.N.1.1` – `N.N.254.254` (`N.N` = `internal_net[0..2]`) | internal clients (also scan targets) |
//! | `N.N.0.10` + i | trojan-infected hosts |
//! | `N.N.0.128` + i | trojan decoy hosts |
//! | `192.0.2.1` – `.200` | web servers (HTTP) |
//! | `192.0.2.53`, `198.51.100.53` | DNS resolvers |
//! | `198.51.100.1` – `.200` | other servers (TLS, SSH, SMTP, NTP, streams) |
//! | `203.0.113.1` + i | SYN scanners |
//! | `203.0.113.200` – `.203` | trojan infrastructure (SSH attacker, web, FTP, IRC) |
//! | `fd00::1:0:0:a.b.c.d` / `2001:db8::a.b.c.d` | IPv6 variants of internal / external addresses |
//!
//! Internal hosts have MAC `02:1a:a:b:c:d`; all external hosts are reached
//! through the router MAC `02:00:5e:00:00:01`. Clients use ephemeral ports
//! 32768–60999, allocated sequentially so that concurrent 5-tuples never
//! collide.
//!
//! # Example
//!
//! ```
//! use streamnf_tracegen::{GenConfig, Generator};
//!
//! let cfg = GenConfig { packets: 500, flows: 20, ..GenConfig::default() };
//! let gen = Generator::new(cfg).unwrap();
//! let frames: Vec<_> = gen.collect();
//! assert_eq!(frames.len(), 500);
//! ```

#![warn(missing_docs)]

mod actor;
mod flows;
mod frame;
mod rng;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use actor::{Actor, Event, UrlKey};
use flows::Ctx;

/// Last octet of the first trojan-infected host (`N.N.0.10`).
pub(crate) const TROJAN_HOST_BASE: u8 = 10;
/// Last octet of the first trojan decoy host (`N.N.0.128`).
pub(crate) const TROJAN_DECOY_BASE: u8 = 128;

/// Configuration of a synthetic trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenConfig {
    /// Approximate number of regular TCP+UDP flows (default 1000). Flow sizes
    /// are chosen so that about this many flows fit into `packets`; if they
    /// run out early, new flows keep starting until `packets` is reached.
    pub flows: u32,
    /// Exact total number of packets to emit (default 100 000), including
    /// scanner and trojan traffic. Generation stops exactly here, even
    /// mid-flow.
    pub packets: u64,
    /// PRNG seed (default 1). Same seed and config → byte-identical output.
    pub seed: u64,
    /// Regular flows active at once (default 64).
    pub concurrency: u32,
    /// Fraction of regular flows that are UDP (default 0.2): mostly DNS on
    /// port 53, plus NTP and QUIC/RTP-like streams.
    pub udp_fraction: f64,
    /// Fraction of flows that are IPv6 (default 0.05).
    pub ipv6_fraction: f64,
    /// SYN scanners (default none).
    pub scan: Option<ScanConfig>,
    /// Multi-step trojan traces (default none).
    pub trojan: Option<TrojanConfig>,
    /// Fraction of TCP flows that are HTTP (default 0.5).
    pub http_fraction: f64,
    /// Number of distinct URLs HTTP requests are drawn from, Zipf-like, so
    /// popular URLs repeat (default 200). Must be ≥ 1 when HTTP is enabled.
    /// Repeats are counted by request URI ([`GenStats::distinct_urls`]),
    /// whichever server the request goes to.
    pub url_pool: u32,
    /// Number of web servers HTTP flows go to, 1–200 (default 200): server
    /// `k` is `192.0.2.(1 + k)`, `Host: www.site{k}.example`, chosen with a
    /// skew towards small `k`. With 1, every request goes to one host, so a
    /// repeated URI is also a repeated absolute URL (Host + path), which is
    /// what a caching proxy keys by.
    pub http_servers: u32,
    /// Fraction of regular HTTP requests whose URI contains `<script>`
    /// (default 0.0).
    pub xss_fraction: f64,
    /// Timestamp of the first packet in nanoseconds since the Unix epoch
    /// (default 1 700 000 000 000 000 000).
    pub start_ns: u64,
    /// Mean packet rate used for timestamps, packets per second (default
    /// 1 000 000). Gaps are uniform in `0..=2e9/pps` ns.
    pub pps: u64,
    /// Internal network; only the first two octets are used (a /16,
    /// default `10.0.0.0`). Must not overlap the external documentation
    /// ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24.
    pub internal_net: [u8; 4],
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            flows: 1000,
            packets: 100_000,
            seed: 1,
            concurrency: 64,
            udp_fraction: 0.2,
            ipv6_fraction: 0.05,
            scan: None,
            trojan: None,
            http_fraction: 0.5,
            url_pool: 200,
            http_servers: 200,
            xss_fraction: 0.0,
            start_ns: 1_700_000_000_000_000_000,
            pps: 1_000_000,
            internal_net: [10, 0, 0, 0],
        }
    }
}

/// SYN scanners: each scanner probes `ports_per_scanner` distinct ports
/// (a pseudo-random permutation of 1–65535) on each of `targets` internal
/// hosts. Closed ports answer RST-ACK; open ports answer SYN-ACK and the
/// scanner resets with RST.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// Number of scanners, 1–127, at 203.0.113.1 upwards (default 1).
    pub scanners: u32,
    /// Distinct ports probed per target, 1–65535 (default 1000).
    pub ports_per_scanner: u32,
    /// Internal hosts scanned (the first `targets` client addresses,
    /// `N.N.1.1` upwards), 1–64516 (default 1).
    pub targets: u32,
    /// Probability that a probed port is open (default 0.02).
    pub open_fraction: f64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig { scanners: 1, ports_per_scanner: 1000, targets: 1, open_fraction: 0.02 }
    }
}

/// Multi-step trojan traces. Each infected host performs, strictly in this
/// order: (1) an inbound SSH connection to its port 22 from 203.0.113.200,
/// (2) an HTTP download `GET /dl/update-tI.html` from 203.0.113.201,
/// (3) an FTP control session to 203.0.113.202 with `RETR setup-tI.exe` and
/// `RETR payload-tI.zip` (passive mode, each with its own data connection),
/// (4) an IRC session to 203.0.113.203:6667 with `NICK` and `JOIN` lines.
/// Decoys perform the same four steps (tagged `dI`) in a wrong order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrojanConfig {
    /// Infected hosts doing all 4 steps in order, 0–100, at `N.N.0.10` + i
    /// (default 1).
    pub hosts: u32,
    /// Decoy hosts doing the steps in a wrong order, 0–100, at
    /// `N.N.0.128` + i (default 1).
    pub decoys: u32,
}

impl Default for TrojanConfig {
    fn default() -> Self {
        TrojanConfig { hosts: 1, decoys: 1 }
    }
}

/// One generated Ethernet II frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedPacket {
    /// Capture timestamp, nanoseconds since the Unix epoch; non-decreasing.
    pub ts_ns: u64,
    /// The complete frame (Ethernet + IPv4/IPv6 + TCP/UDP + payload) with
    /// valid checksums.
    pub data: Vec<u8>,
}

/// Invalid generator configuration.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GenError {
    /// A parameter is out of range or inconsistent with another one.
    #[error("invalid trace generator parameter `{name}`: {reason}")]
    InvalidParameter {
        /// Name of the offending parameter, e.g. `udp_fraction` or `scan.targets`.
        name: &'static str,
        /// Human-readable explanation including the offending value.
        reason: String,
    },
}

fn invalid(name: &'static str, reason: String) -> GenError {
    GenError::InvalidParameter { name, reason }
}

/// Running statistics of what has actually been emitted so far (events are
/// counted when the packet that makes them visible is emitted, so the numbers
/// match a recount from the frames even if the trace is cut mid-flow).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenStats {
    /// Packets emitted.
    pub packets: u64,
    /// Frame bytes emitted.
    pub bytes: u64,
    /// Regular flows whose first packet was emitted (`tcp_flows + udp_flows`;
    /// scanner probes and trojan connections are not included).
    pub flows_started: u64,
    /// Regular TCP flows started (SYN emitted).
    pub tcp_flows: u64,
    /// Regular UDP flows started (first datagram emitted).
    pub udp_flows: u64,
    /// Regular flows over IPv6.
    pub ipv6_flows: u64,
    /// DNS queries emitted (one per DNS flow).
    pub dns_queries: u64,
    /// HTTP GET requests emitted (including trojan downloads).
    pub http_requests: u64,
    /// Distinct request URIs among `http_requests`.
    pub distinct_urls: u64,
    /// `http_requests - distinct_urls`: requests for an already-requested URI.
    pub repeated_requests: u64,
    /// Requests whose URI contains `<script>`.
    pub xss_requests: u64,
    /// SYN probes sent by scanners.
    pub scan_probes: u64,
    /// Probes answered with SYN-ACK (open ports).
    pub scan_open_ports: u64,
    /// TCP connections made by trojan and decoy hosts (SYNs emitted),
    /// including FTP data connections.
    pub trojan_connections: u64,
}

/// Streaming trace generator; an [`Iterator`] of [`GeneratedPacket`]s that
/// yields exactly [`GenConfig::packets`] items.
#[derive(Debug)]
pub struct Generator {
    ctx: Ctx,
    /// Active regular flows (always `concurrency` of them).
    regular: Vec<Actor>,
    /// Active scanners and trojan hosts.
    special: Vec<Actor>,
    /// Probability that a packet comes from a special actor.
    special_share: f64,
    clock: u64,
    gap_max: u64,
    stats: GenStats,
    url_seen: Vec<u64>,
    trojan_hosts: Vec<Ipv4Addr>,
    decoy_hosts: Vec<Ipv4Addr>,
    scanners: Vec<Ipv4Addr>,
}

fn check_fraction(name: &'static str, v: f64) -> Result<(), GenError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(name, format!("must be a fraction within 0.0..=1.0, got {v}")))
    }
}

fn validate(cfg: &GenConfig) -> Result<(), GenError> {
    check_fraction("udp_fraction", cfg.udp_fraction)?;
    check_fraction("http_fraction", cfg.http_fraction)?;
    check_fraction("xss_fraction", cfg.xss_fraction)?;
    check_fraction("ipv6_fraction", cfg.ipv6_fraction)?;
    if cfg.packets > 0 && cfg.flows == 0 {
        return Err(invalid(
            "flows",
            format!("must be at least 1 when packets > 0 (packets = {})", cfg.packets),
        ));
    }
    if cfg.packets > 0 && cfg.concurrency == 0 {
        return Err(invalid("concurrency", "must be at least 1 when packets > 0".into()));
    }
    if cfg.pps == 0 {
        return Err(invalid("pps", "must be at least 1 packet per second".into()));
    }
    if cfg.http_fraction > 0.0 && cfg.url_pool == 0 {
        return Err(invalid("url_pool", "must be at least 1 when http_fraction > 0".into()));
    }
    if !(1..=200).contains(&cfg.http_servers) {
        return Err(invalid("http_servers", format!("must be within 1..=200, got {}", cfg.http_servers)));
    }
    if cfg.url_pool > 1 << 24 {
        return Err(invalid("url_pool", format!("must be at most {}, got {}", 1u32 << 24, cfg.url_pool)));
    }
    let net = [cfg.internal_net[0], cfg.internal_net[1]];
    if [[192, 0], [198, 51], [203, 0]].contains(&net) {
        return Err(invalid(
            "internal_net",
            format!("{}.{}.0.0/16 overlaps the external server ranges", net[0], net[1]),
        ));
    }
    if let Some(s) = &cfg.scan {
        check_fraction("scan.open_fraction", s.open_fraction)?;
        if !(1..=127).contains(&s.scanners) {
            return Err(invalid("scan.scanners", format!("must be within 1..=127, got {}", s.scanners)));
        }
        if !(1..=65535).contains(&s.ports_per_scanner) {
            return Err(invalid(
                "scan.ports_per_scanner",
                format!("must be within 1..=65535, got {}", s.ports_per_scanner),
            ));
        }
        if !(1..=254 * 254).contains(&s.targets) {
            return Err(invalid("scan.targets", format!("must be within 1..=64516, got {}", s.targets)));
        }
    }
    if let Some(t) = &cfg.trojan {
        if t.hosts > 100 {
            return Err(invalid("trojan.hosts", format!("must be at most 100, got {}", t.hosts)));
        }
        if t.decoys > 100 {
            return Err(invalid("trojan.decoys", format!("must be at most 100, got {}", t.decoys)));
        }
    }
    Ok(())
}

impl Generator {
    /// Validates `cfg` and creates a generator.
    ///
    /// # Errors
    ///
    /// [`GenError::InvalidParameter`] naming the offending parameter, e.g. a
    /// fraction outside `0.0..=1.0`, `flows = 0` with `packets > 0`,
    /// `pps = 0`, `url_pool = 0` with HTTP enabled, or out-of-range scanner /
    /// trojan counts.
    pub fn new(cfg: GenConfig) -> Result<Generator, GenError> {
        validate(&cfg)?;
        let url_bits = if cfg.http_fraction > 0.0 { 2 * cfg.url_pool as usize } else { 0 };
        let clock = cfg.start_ns;
        let gap_max = 2 * (1_000_000_000 / cfg.pps);
        let mut ctx = Ctx::new(cfg);
        let mut actors = Vec::new();
        let mut scanners = Vec::new();
        let mut trojan_hosts = Vec::new();
        let mut decoy_hosts = Vec::new();
        if let Some(s) = ctx.cfg.scan.clone() {
            for i in 0..s.scanners {
                actors.push(ctx.new_scanner(i));
                scanners.push(Ipv4Addr::from(flows::scanner_ip(i)));
            }
        }
        if let Some(t) = ctx.cfg.trojan.clone() {
            let n = ctx.cfg.internal_net;
            for i in 0..t.hosts {
                actors.push(ctx.new_trojan(i, false));
                trojan_hosts.push(Ipv4Addr::new(n[0], n[1], 0, TROJAN_HOST_BASE + i as u8));
            }
            for i in 0..t.decoys {
                actors.push(ctx.new_trojan(i, true));
                decoy_hosts.push(Ipv4Addr::new(n[0], n[1], 0, TROJAN_DECOY_BASE + i as u8));
            }
        }
        // Spread scanner/trojan traffic over roughly the first half of the
        // trace, but never below its natural share of the active actors.
        let n_special = actors.len() as f64;
        let natural = n_special / (n_special + f64::from(ctx.cfg.concurrency.max(1)));
        let wanted = 2.0 * ctx.special_est as f64 / (ctx.cfg.packets.max(1) as f64);
        let special_share = if actors.is_empty() { 0.0 } else { wanted.clamp(natural.min(0.5), 0.5) };
        Ok(Generator {
            ctx,
            regular: Vec::new(),
            special: actors,
            special_share,
            clock,
            gap_max,
            stats: GenStats::default(),
            url_seen: vec![0; url_bits.div_ceil(64)],
            trojan_hosts,
            decoy_hosts,
            scanners,
        })
    }

    /// Statistics of the packets emitted so far.
    pub fn stats(&self) -> &GenStats {
        &self.stats
    }

    /// The configuration this generator runs with.
    pub fn config(&self) -> &GenConfig {
        &self.ctx.cfg
    }

    /// Addresses of the trojan-infected hosts (steps in the right order).
    pub fn trojan_hosts(&self) -> &[Ipv4Addr] {
        &self.trojan_hosts
    }

    /// Addresses of the trojan decoy hosts (steps in a wrong order).
    pub fn decoy_hosts(&self) -> &[Ipv4Addr] {
        &self.decoy_hosts
    }

    /// Addresses of the SYN scanners.
    pub fn scanners(&self) -> &[Ipv4Addr] {
        &self.scanners
    }

    fn mark_url(&mut self, bit: usize) -> bool {
        let (w, b) = (bit / 64, 1u64 << (bit % 64));
        let new = self.url_seen[w] & b == 0;
        self.url_seen[w] |= b;
        new
    }

    fn account(&mut self, ev: Event) {
        let s = &mut self.stats;
        match ev {
            Event::TcpStart { v6 } => {
                s.flows_started += 1;
                s.tcp_flows += 1;
                s.ipv6_flows += u64::from(v6);
            }
            Event::UdpStart { v6, dns } => {
                s.flows_started += 1;
                s.udp_flows += 1;
                s.ipv6_flows += u64::from(v6);
                s.dns_queries += u64::from(dns);
            }
            Event::Http(key) => {
                s.http_requests += 1;
                let new = match key {
                    UrlKey::Pool(k) => self.mark_url(k as usize),
                    UrlKey::Xss(k) => {
                        self.stats.xss_requests += 1;
                        let pool = self.ctx.cfg.url_pool as usize;
                        self.mark_url(pool + k as usize)
                    }
                    UrlKey::Unique => true,
                };
                let s = &mut self.stats;
                s.distinct_urls += u64::from(new);
                s.repeated_requests = s.http_requests - s.distinct_urls;
            }
            Event::ScanProbe => s.scan_probes += 1,
            Event::ScanOpen => s.scan_open_ports += 1,
            Event::TrojanConn => s.trojan_connections += 1,
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedPacket;

    fn next(&mut self) -> Option<GeneratedPacket> {
        if self.stats.packets >= self.ctx.cfg.packets {
            return None;
        }
        loop {
            while self.regular.len() < self.ctx.cfg.concurrency as usize {
                let a = self.ctx.new_regular();
                self.regular.push(a);
            }
            let pool = if !self.special.is_empty() && self.ctx.rng.chance(self.special_share) {
                &mut self.special
            } else {
                &mut self.regular
            };
            let i = self.ctx.rng.index(pool.len());
            match pool[i].next_frame(&mut self.ctx) {
                Some((data, ev)) => {
                    if self.stats.packets > 0 {
                        self.clock = self.clock.saturating_add(self.ctx.rng.below(self.gap_max + 1));
                    }
                    if let Some(ev) = ev {
                        self.account(ev);
                    }
                    self.stats.packets += 1;
                    self.stats.bytes += data.len() as u64;
                    return Some(GeneratedPacket { ts_ns: self.clock, data });
                }
                None => {
                    pool.swap_remove(i);
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.ctx.cfg.packets - self.stats.packets) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Generator {}

/// Convenience: validates `cfg` and collects the whole trace into memory.
///
/// # Errors
///
/// Same as [`Generator::new`].
pub fn generate(cfg: GenConfig) -> Result<Vec<GeneratedPacket>, GenError> {
    Ok(Generator::new(cfg)?.collect())
}
