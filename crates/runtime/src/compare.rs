//! Chain-output equivalence (§2): what "the same output as one instance per NF" means,
//! in one place, for the tests, the benchmarks and `streamnf check`.
//!
//! Two runs are equivalent when, per sink port, they wrote the same multiset of packets
//! (bytes and logical clock), raised the same multiset of alerts (everything but the
//! task that raised it), and left the same final state. State is compared without the
//! owner task of per-flow keys (which instance owns a flow is the schedule's choice) and
//! without the root's bookkeeping keys (the persisted clock). Nothing here is weakened per
//! NF; an NF whose output legitimately depends on the schedule documents its own relation.
//! This module only compares; it never runs anything.

use crate::alerts::AlertRecord;
use crate::packet_log::ROOT_VERTEX;
use crate::sink::SinkRecord;
use std::collections::BTreeMap;
use std::fmt::Write;
use streamnf_store::Value;

/// What a run produced, as compared.
#[derive(Clone, Debug, Default)]
pub struct RunOutputs {
    /// Sink packets per port.
    pub sinks: BTreeMap<String, Vec<SinkRecord>>,
    /// Alerts.
    pub alerts: Vec<AlertRecord>,
    /// Final state (`StateStore::snapshot`).
    pub state: BTreeMap<String, Value>,
}

impl RunOutputs {
    /// The outputs of a finished run: its kept sink packets and alerts (run with `keep`)
    /// and the final state (`StateStore::snapshot` of the chain).
    pub fn from_report(report: crate::engine::EngineReport, state: BTreeMap<String, Value>) -> RunOutputs {
        RunOutputs { sinks: report.sink_records, alerts: report.alert_records, state }
    }
}

/// State keys without the owner task, root keys dropped. Per-flow values of one flow can
/// only have one owner at a time, so no two keys collapse into one.
pub fn normalize_state(state: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let root = format!("/{ROOT_VERTEX}/");
    let mut out = BTreeMap::new();
    for (k, v) in state {
        let parts: Vec<&str> = k.splitn(4, '/').collect();
        if let [dag, vertex, _owner, rest] = parts[..] {
            if format!("/{vertex}/") == root {
                continue;
            }
            out.insert(format!("{dag}/{vertex}/~/{rest}"), v.clone());
        } else if !k.contains(&root) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// A value's debug form, cut to 160 characters (a long list would drown the report).
fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}… ({} characters)", &s[..i], s.chars().count()),
        None => s,
    }
}

fn sorted_sinks(s: &BTreeMap<String, Vec<SinkRecord>>) -> BTreeMap<String, Vec<SinkRecord>> {
    s.iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.sort();
            (k.clone(), v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

fn alert_key(a: &AlertRecord) -> String {
    let mut j = a.to_json();
    if let Some(o) = j.as_object_mut() {
        o.remove("task");
    }
    j.to_string()
}

/// Differences between `reference` and `other`, at most `limit` lines; empty when the
/// runs are equivalent.
pub fn differences(reference: &RunOutputs, other: &RunOutputs, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (sorted_sinks(&reference.sinks), sorted_sinks(&other.sinks));
    for port in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        let (pa, pb) =
            (a.get(port).map(Vec::as_slice).unwrap_or(&[]), b.get(port).map(Vec::as_slice).unwrap_or(&[]));
        if pa != pb {
            let first = pa.iter().zip(pb.iter()).position(|(x, y)| x != y).unwrap_or(pa.len().min(pb.len()));
            let mut line = format!("sink `{port}`: {} packets vs {}", pa.len(), pb.len());
            let at =
                |s: &[SinkRecord]| s.get(first).map(|r| r.clock.to_string()).unwrap_or_else(|| "-".into());
            let _ = write!(line, "; first difference at clock {} vs {}", at(pa), at(pb));
            out.push(line);
        }
    }
    let mut ka: Vec<String> = reference.alerts.iter().map(alert_key).collect();
    let mut kb: Vec<String> = other.alerts.iter().map(alert_key).collect();
    ka.sort();
    kb.sort();
    if ka != kb {
        out.push(format!("alerts: {} vs {}", ka.len(), kb.len()));
        for x in ka.iter().filter(|x| kb.binary_search(x).is_err()).take(3) {
            out.push(format!("  only in reference: {x}"));
        }
        for x in kb.iter().filter(|x| ka.binary_search(x).is_err()).take(3) {
            out.push(format!("  only in other: {x}"));
        }
    }
    let (sa, sb) = (normalize_state(&reference.state), normalize_state(&other.state));
    if sa != sb {
        let mut n = 0;
        for (k, v) in &sa {
            if sb.get(k) != Some(v) {
                n += 1;
                if n <= 3 {
                    out.push(format!(
                        "state {k}: {} vs {}",
                        short(v),
                        sb.get(k).map_or("missing".to_string(), short)
                    ));
                }
            }
        }
        for (k, v) in &sb {
            if !sa.contains_key(k) {
                n += 1;
                if n <= 3 {
                    out.push(format!("state {k}: missing vs {}", short(v)));
                }
            }
        }
        out.push(format!("state: {n} keys differ ({} vs {} keys)", sa.len(), sb.len()));
    }
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(clock: u64, b: u8) -> SinkRecord {
        SinkRecord { clock, data: vec![b; 4] }
    }

    #[test]
    fn order_and_owner_do_not_matter_contents_do() {
        let mut a = RunOutputs::default();
        a.sinks.insert("out".into(), vec![rec(1, 1), rec(2, 2)]);
        a.state.insert("7/0/1/0/00".into(), Value::Int(3));
        a.state.insert("7/0/*/1/".into(), Value::Int(9));
        a.state.insert(format!("7/{ROOT_VERTEX}/*/0/636c6f636b"), Value::Int(1));
        let mut b = RunOutputs::default();
        b.sinks.insert("out".into(), vec![rec(2, 2), rec(1, 1)]);
        b.state.insert("7/0/3/0/00".into(), Value::Int(3));
        b.state.insert("7/0/*/1/".into(), Value::Int(9));
        assert!(differences(&a, &b, 10).is_empty(), "{:?}", differences(&a, &b, 10));
        b.sinks.insert("out".into(), vec![rec(2, 2), rec(1, 9)]);
        b.state.insert("7/0/*/1/".into(), Value::Int(8));
        let d = differences(&a, &b, 10);
        assert!(d.iter().any(|l| l.starts_with("sink `out`")), "{d:?}");
        assert!(d.iter().any(|l| l.contains("7/0/~/1/")), "{d:?}");
    }

    #[test]
    fn alerts_compare_without_the_task() {
        let alert = |task, clock| AlertRecord {
            kind: "k".into(),
            vertex: "v".into(),
            task,
            clock,
            ts_ns: 5,
            fields: Default::default(),
        };
        let a = RunOutputs { alerts: vec![alert(0, 1), alert(0, 2)], ..Default::default() };
        let b = RunOutputs { alerts: vec![alert(3, 2), alert(1, 1)], ..Default::default() };
        assert!(differences(&a, &b, 10).is_empty());
        let c = RunOutputs { alerts: vec![alert(3, 2), alert(1, 2)], ..Default::default() };
        assert!(!differences(&a, &c, 10).is_empty());
    }
}
