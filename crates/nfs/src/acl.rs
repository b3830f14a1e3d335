//! `acl`: a firewall / access-control list. Each rule is a tcpdump filter expression with
//! an action (`allow` or `deny`); the first rule whose filter matches a packet decides,
//! and a packet no rule matches gets the `default` action (allow unless configured).
//! Allowed packets go to `out`, denied ones to the optional `denied` port (or nowhere).
//!
//! State: `hits` (shared: one counter per rule name, plus `default`), `verdicts` (shared:
//! `allowed`, `denied`), both non-blocking increments. No per-flow state: the ACL imposes
//! no partitioning on its vertex.
//!
//! This module owns parsing the rules from the chain file and evaluating them. Filters
//! are compiled once, when the chain is built; the NF never compiles, allocates or keeps
//! anything per packet.

use std::collections::HashSet;
use std::sync::Arc;
use streamnf_dag::{
    Alert, NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_filter::Filter;
use streamnf_packet::Packet;

const HITS: usize = 0;
const VERDICTS: usize = 1;

const OUT: usize = 0;
const DENIED: usize = 1;

/// The `hits` key counting packets that matched no rule.
pub const DEFAULT_KEY: &str = "default";

/// What a rule does with the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward to `out`.
    Allow,
    /// Forward to `denied` (dropped when that port is unconnected).
    Deny,
}

impl Action {
    /// Parses `"allow"` or `"deny"`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "deny" => Some(Action::Deny),
            _ => None,
        }
    }

    /// The chain-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// One ACL rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique name; the rule's key in the `hits` object and in alerts.
    pub name: String,
    /// Packets this rule applies to.
    pub filter: Filter,
    /// What it does with them.
    pub action: Action,
    /// Raise an `acl_match` alert for each packet the rule decides.
    pub alert: bool,
}

/// The ACL NF: ordered rules, first match wins.
#[derive(Clone, Debug)]
pub struct Acl {
    rules: Vec<Rule>,
    default: Action,
}

impl Acl {
    /// An ACL over `rules` (first match wins) with `default` for unmatched packets. Fails
    /// when two rules share a name or a rule is called [`DEFAULT_KEY`].
    pub fn new(rules: Vec<Rule>, default: Action) -> Result<Acl, String> {
        let mut seen = HashSet::new();
        for (i, r) in rules.iter().enumerate() {
            if r.name.is_empty() || r.name == DEFAULT_KEY {
                return Err(format!("rules[{i}]: a rule may not be named \"{}\"", r.name));
            }
            if !seen.insert(r.name.as_str()) {
                return Err(format!("rules[{i}]: the name \"{}\" is used by an earlier rule", r.name));
            }
        }
        Ok(Acl { rules, default })
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The index of the rule deciding `pkt` (`None`: no rule matched) and its action.
    pub fn decide(&self, pkt: &Packet) -> (Option<usize>, Action) {
        match self.rules.iter().position(|r| r.filter.matches(pkt)) {
            Some(i) => (Some(i), self.rules[i].action),
            None => (None, self.default),
        }
    }

    /// Chain-file constructor: `rules` (array of tables with `action`, `filter`, optional
    /// `name` and `alert`) and `default` (`"allow"`, the default, or `"deny"`).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&["rules", "default"])?;
        let default = p.string("default", "allow")?;
        let default = Action::parse(&default).ok_or_else(|| {
            format!("parameter `default` must be \"allow\" or \"deny\", found \"{default}\"")
        })?;
        let rules = match p.0.get("rules") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => {
                a.iter().enumerate().map(|(i, v)| rule_from_toml(i, v)).collect::<Result<Vec<_>, _>>()?
            }
            Some(v) => return Err(format!("parameter `rules` must be an array of tables, found {v}")),
        };
        let acl = Acl::new(rules, default).map_err(|e| format!("parameter `rules`: {e}"))?;
        Ok(Arc::new(acl))
    }
}

/// Reads `rules[i]`; every error names the parameter and the rule index.
fn rule_from_toml(i: usize, v: &toml::Value) -> Result<Rule, String> {
    let at = |msg: String| format!("parameter `rules`: rules[{i}]: {msg}");
    let toml::Value::Table(t) = v else {
        return Err(at(format!(
            "must be a table like {{ action = \"deny\", filter = \"tcp port 23\" }}, found {v}"
        )));
    };
    for k in t.keys() {
        if !["action", "filter", "name", "alert"].contains(&k.as_str()) {
            return Err(at(format!("unknown key `{k}` (known: action, filter, name, alert)")));
        }
    }
    let action = match t.get("action") {
        Some(toml::Value::String(s)) => Action::parse(s)
            .ok_or_else(|| at(format!("`action` must be \"allow\" or \"deny\", found \"{s}\"")))?,
        Some(other) => return Err(at(format!("`action` must be \"allow\" or \"deny\", found {other}"))),
        None => return Err(at("`action` is missing (\"allow\" or \"deny\")".into())),
    };
    let expr = match t.get("filter") {
        Some(toml::Value::String(s)) => s.as_str(),
        Some(other) => return Err(at(format!("`filter` must be a string, found {other}"))),
        None => return Err(at("`filter` is missing (a tcpdump expression; \"\" matches everything)".into())),
    };
    let filter = Filter::compile(expr)
        .map_err(|e| at(format!("bad filter \"{expr}\" at column {}: {}", e.column, e.message)))?;
    let name = match t.get("name") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => return Err(at(format!("`name` must be a string, found {other}"))),
        None => format!("rule{i}"),
    };
    let alert = match t.get("alert") {
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => return Err(at(format!("`alert` must be true or false, found {other}"))),
        None => false,
    };
    Ok(Rule { name, filter, action, alert })
}

impl NetworkFunction for Acl {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out"), PortSpec::optional_packets("denied")],
            state: vec![StateObjectSpec::shared("hits"), StateObjectSpec::shared("verdicts")],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let (rule, action) = self.decide(pkt);
        let r = rule.and_then(|i| self.rules.get(i));
        ctx.incr_nb(HITS, r.map_or(DEFAULT_KEY, |r| r.name.as_str()).as_bytes(), 1)?;
        if let Some(r) = r.filter(|r| r.alert) {
            let mut a = Alert::new("acl_match").with("rule", r.name.as_str()).with("action", action.name());
            if let Some(ip) = pkt.hdr.ip {
                a = a.with("src_ip", ip.src.to_string()).with("dst_ip", ip.dst.to_string());
            }
            if let Some((s, d)) = pkt.hdr.transport.ports() {
                a = a.with("src_port", s).with("dst_port", d);
            }
            ctx.alert(a);
        }
        match action {
            Action::Allow => {
                ctx.incr_nb(VERDICTS, b"allowed", 1)?;
                ctx.forward(OUT);
            }
            Action::Deny => {
                ctx.incr_nb(VERDICTS, b"denied", 1)?;
                ctx.forward(DENIED);
            }
        }
        Ok(())
    }
}
