//! # streamnf-nfs
//!
//! The built-in network functions, each a documented example of the NF API:
//! [`nat::Nat`], [`ids::LightIds`], [`rate_limiter::RateLimiter`], [`dpi::Dpi`] and
//! [`forward::Forward`]. [`builtin_registry`] makes them usable from chain files.
//!
//! Every NF here keeps all of its state in the store through its [`streamnf_dag::NfContext`];
//! the structs hold only immutable configuration.

#![warn(missing_docs)]

pub mod chains;
pub mod dpi;
pub mod forward;
pub mod ids;
pub mod nat;
pub mod net;
pub mod rate_limiter;

use streamnf_dag::NfRegistry;

/// The registry of built-in NFs by chain-file name.
pub fn builtin_registry() -> NfRegistry {
    let mut r = NfRegistry::new();
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
