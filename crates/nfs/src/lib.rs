//! # streamnf-nfs
//!
//! The built-in network functions, each a documented example of the NF API:
//! [`nat::Nat`], [`ids::LightIds`], [`rate_limiter::RateLimiter`], [`dpi::Dpi`] and
//! [`forward::Forward`]. [`builtin_registry`] makes them usable from chain files.
//!
//! Every NF here keeps all of its state in the store through its [`streamnf_dag::NfContext`];
//! the structs hold only immutable configuration.

#![warn(missing_docs)]

pub mod acl;
pub mod chains;
pub mod dpi;
pub mod forward;
pub mod http_proxy;
pub mod ids;
pub mod nat;
pub mod net;
pub mod port_scan;
pub mod rate_limiter;
pub mod trojan;

use streamnf_dag::NfRegistry;

/// The registry of built-in NFs by chain-file name.
pub fn builtin_registry() -> NfRegistry {
    let mut r = NfRegistry::new();
    r.register(
        "http_proxy",
        "HTTP caching proxy (§6): shared cache in the store, answers hits itself",
        http_proxy::HttpProxy::from_params,
    );
    r.register(
        "trojan_detector",
        "multi-step trojan (§5.4): per-connection steps (ssh in, html, ftp exe/zip, irc) as context",
        trojan::TrojanDetector::from_params,
    );
    r.register(
        "trojan_analyzer",
        "multi-step trojan (§5.4): per-host order check of step clocks; one `trojan` alert per host",
        trojan::TrojanAnalyzer::from_params,
    );
    r.register("acl", "firewall: tcpdump-filter rules, allow/deny, first match wins", acl::Acl::from_params);
    r.register("nat", "source NAT with a shared port pool; translates replies back", nat::Nat::from_params);
    r.register(
        "light_ids",
        "flags sources sending too many SYN-only packets per window",
        ids::LightIds::from_params,
    );
    r.register(
        "rate_limiter",
        "per-source token buckets for flagged (or all) traffic",
        rate_limiter::RateLimiter::from_params,
    );
    r.register(
        "dpi",
        "multi-signature payload matching (off-path; alerts and counts)",
        dpi::Dpi::from_params,
    );
    r.register(
        "scan_firewall",
        "on-path half of the port-scan detector: records contact outcomes, drops blocked hosts",
        port_scan::ScanFirewall::from_params,
    );
    r.register(
        "scan_analyzer",
        "off-path half of the port-scan detector: Threshold Random Walk over the firewall's contacts",
        port_scan::ScanAnalyzer::from_params,
    );
    r.register(
        "forward",
        "passes every packet through unchanged, counting them",
        forward::Forward::from_params,
    );
    r
}

/// The README's Rust examples, compiled and run as doctests so they never go stale.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
