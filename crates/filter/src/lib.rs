//! # streamnf-filter
//!
//! tcpdump / pcap-filter(7) expressions, compiled and evaluated in pure Rust.
//!
//! This crate owns compiling a filter expression (`tcp port 80 and not host 10.0.0.1`,
//! `tcp[tcpflags] & (tcp-syn|tcp-ack) != 0`, `vlan 100 and ip6`, ...) once into a small
//! tree ([`Filter::compile`]) and evaluating it on packets that
//! [`streamnf_packet`] has already parsed ([`Filter::matches`]). The semantics follow
//! libpcap's code generator closely and are checked against tcpdump itself by the
//! differential test in `tests/differential.rs`:
//!
//! * `and`/`or` have equal precedence and associate left; `not` binds tightest; a bare
//!   value after `and`/`or` reuses the previous qualifiers (`port 80 or 443`).
//! * `host`/`net` match IPv4 or IPv6 source/destination and ARP/RARP sender/target
//!   addresses; `port`/`portrange` match TCP, UDP and SCTP over IPv4 (first fragments only)
//!   and IPv6 (fixed header only: tcpdump does not walk extension headers for ports).
//! * `len`, `less`, `greater` use the on-wire length ([`Packet::orig_len`]).
//! * `vlan` shifts every later primitive past one 802.1Q tag, as in tcpdump.
//! * `proto[expr:size]` reads bytes relative to that protocol's header (`tcp[...]`,
//!   `udp[...]`, `icmp[...]` only for IPv4 first fragments, as in tcpdump). A primitive
//!   whose guard fails (wrong protocol, later fragment) is false. A read past the
//!   captured bytes (or a division by zero) rejects the packet outright, whatever the rest
//!   of the expression says, exactly like BPF: so on runt or truncated frames `not E` can
//!   be false together with `E`. Evaluation is left to right with short-circuiting.
//!
//! It never does I/O, never links libpcap, never resolves host names (use addresses) and
//! never panics or allocates while matching a packet, however malformed: a malformed
//! packet is evaluated on the bytes and header offsets that were parsed.

#![warn(missing_docs)]

mod error;
mod lex;
mod names;
mod parse;
mod prog;

pub use error::FilterError;

use std::fmt;
use streamnf_packet::Packet;

/// A compiled filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    expr: String,
    root: prog::Node,
}

impl Filter {
    /// Compiles `expr`. An empty or all-whitespace expression matches every packet.
    ///
    /// ```
    /// use streamnf_filter::Filter;
    /// let f = Filter::compile("tcp port 80 or 443").unwrap();
    /// assert_eq!(f.expr(), "tcp port 80 or 443");
    /// let e = Filter::compile("port 80 and host example.com").unwrap_err();
    /// assert_eq!(e.column, 18);
    /// ```
    pub fn compile(expr: &str) -> Result<Filter, FilterError> {
        let toks = lex::tokenize(expr)?;
        let root = parse::Parser::new(expr, toks).program()?;
        Ok(Filter { expr: expr.to_string(), root })
    }

    /// A filter that matches every packet (the empty expression).
    pub fn match_all() -> Filter {
        Filter { expr: String::new(), root: prog::Node::True }
    }

    /// True when `pkt` satisfies the expression. Never panics, never allocates.
    #[inline]
    pub fn matches(&self, pkt: &Packet) -> bool {
        self.root.eval(&prog::Ctx::new(pkt)) == Ok(true)
    }

    /// The expression as given to [`Filter::compile`].
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// True for the empty expression, which matches everything.
    pub fn is_match_all(&self) -> bool {
        self.root == prog::Node::True
    }
}

impl fmt::Display for Filter {
    /// Writes the expression as given (empty for a match-all filter).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Filter, FilterError> {
        Filter::compile(s)
    }
}
