//! Churn events (§5): scale a vertex, fail or kill a task, make it straggle, clone it.
//!
//! An event is written `at=WHEN ACTION` (CLI `--event`, chain file `events = [...]`):
//!
//! | WHEN | meaning |
//! |---|---|
//! | `500000` | before input packet number 500000 (counted from 0) |
//! | `40%` | before the packet at 40 % of the trace |
//! | `2.5s`, `300ms`, `10us`, `500ns` | before the first packet this long after the first packet's timestamp |
//!
//! | ACTION | meaning |
//! |---|---|
//! | `scale VERTEX to N` | N instances from then on (up or down), with state handover (§5.3) |
//! | `fail VERTEX/I` | instance I crashes; a new one takes over with replay (§5.1) |
//! | `kill VERTEX/I` | instance I is killed and restarted (straggler mitigation, §5.2) |
//! | `clone VERTEX/I` | a clone of instance I runs beside it; the faster is kept (§5.2) |
//! | `straggle VERTEX/I [delay=10us]` | instance I takes this much longer per message |
//!
//! This module parses and validates specs and draws random schedules; the parallel engine
//! carries them out. It never touches tasks itself.

use serde::Serialize;
use streamnf_dag::LogicalDag;

/// When an event happens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum When {
    /// Before input packet number N (from 0).
    Packet(u64),
    /// Before the packet at this fraction (0..=1) of the trace.
    Fraction(f64),
    /// Before the first packet at least this many nanoseconds after the first one.
    Elapsed(u64),
}

/// What happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    /// The vertex runs `to` instances from then on.
    Scale {
        /// Vertex name.
        vertex: String,
        /// Instances after the event (at least 1).
        to: u32,
    },
    /// The instance crashes and is replaced (failover with replay).
    Fail {
        /// Vertex name.
        vertex: String,
        /// Instance index.
        task: u32,
    },
    /// The instance is killed and restarted (same mechanism as a failure).
    Kill {
        /// Vertex name.
        vertex: String,
        /// Instance index.
        task: u32,
    },
    /// A clone of the instance runs beside it; the faster of the two is kept.
    Clone {
        /// Vertex name.
        vertex: String,
        /// Instance index.
        task: u32,
    },
    /// The instance takes `delay_ns` longer per message from then on.
    Straggle {
        /// Vertex name.
        vertex: String,
        /// Instance index.
        task: u32,
        /// Extra time per message.
        delay_ns: u64,
    },
}

impl Action {
    /// The vertex the action is about.
    pub fn vertex(&self) -> &str {
        match self {
            Action::Scale { vertex, .. }
            | Action::Fail { vertex, .. }
            | Action::Kill { vertex, .. }
            | Action::Clone { vertex, .. }
            | Action::Straggle { vertex, .. } => vertex,
        }
    }

    /// Short name: scale, fail, kill, clone, straggle.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Scale { .. } => "scale",
            Action::Fail { .. } => "fail",
            Action::Kill { .. } => "kill",
            Action::Clone { .. } => "clone",
            Action::Straggle { .. } => "straggle",
        }
    }
}

/// One scheduled event, as written.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventSpec {
    /// When.
    pub at: When,
    /// What.
    pub action: Action,
    /// The spec as the user wrote it.
    pub text: String,
    /// Instance numbers count the running instances in order (`nat/1` = the second one
    /// running then) instead of naming task slots: random schedules use this, since which
    /// slots run after clones and scale-downs is only known when the event happens.
    pub relative: bool,
}

/// Default straggler delay per message.
pub const DEFAULT_STRAGGLE_NS: u64 = 10_000;

impl std::str::FromStr for EventSpec {
    type Err = String;

    /// Parses `at=WHEN ACTION`; the error names the column (1-based) of the bad word.
    fn from_str(text: &str) -> Result<EventSpec, String> {
        let words: Vec<(usize, &str)> = words(text);
        let err = |col: usize, msg: String| format!("event `{text}`, column {}: {msg}", col + 1);
        let Some(&(c0, first)) = words.first() else {
            return Err(format!("event `{text}`: empty (expected `at=WHEN ACTION`)"));
        };
        let Some(when) = first.strip_prefix("at=") else {
            return Err(err(c0, format!("expected `at=WHEN` first, found `{first}`")));
        };
        let at = parse_when(when).map_err(|m| err(c0 + 3, m))?;
        let Some(&(c1, verb)) = words.get(1) else {
            return Err(err(text.len(), "missing action (scale, fail, kill, clone, straggle)".into()));
        };
        let target = |i: usize| -> Result<(String, u32), String> {
            let Some(&(c, w)) = words.get(i) else {
                return Err(err(text.len(), format!("`{verb}` needs VERTEX/INSTANCE")));
            };
            let (v, t) =
                w.split_once('/').ok_or_else(|| err(c, format!("expected VERTEX/INSTANCE, found `{w}`")))?;
            if v.is_empty() {
                return Err(err(c, "empty vertex name".into()));
            }
            let t = t
                .parse::<u32>()
                .map_err(|_| err(c + v.len() + 1, format!("instance `{t}` is not a number")))?;
            Ok((v.to_string(), t))
        };
        let extra = |from: usize| -> Result<(), String> {
            match words.get(from) {
                Some(&(c, w)) => Err(err(c, format!("unexpected `{w}`"))),
                None => Ok(()),
            }
        };
        let action = match verb {
            "scale" => {
                let Some(&(cv, vertex)) = words.get(2) else {
                    return Err(err(text.len(), "`scale` needs VERTEX to N".into()));
                };
                if vertex.contains('/') {
                    return Err(err(cv, "scale names a vertex, not an instance".into()));
                }
                match words.get(3) {
                    Some(&(_, "to")) => {}
                    Some(&(c, w)) => return Err(err(c, format!("expected `to`, found `{w}`"))),
                    None => return Err(err(text.len(), "expected `to N`".into())),
                }
                let Some(&(cn, n)) = words.get(4) else {
                    return Err(err(text.len(), "expected the instance count after `to`".into()));
                };
                let to =
                    n.parse::<u32>().ok().filter(|&n| (1..=64).contains(&n)).ok_or_else(|| {
                        err(cn, format!("instance count `{n}` must be a number from 1 to 64"))
                    })?;
                extra(5)?;
                Action::Scale { vertex: vertex.to_string(), to }
            }
            "fail" | "kill" | "clone" => {
                let (vertex, task) = target(2)?;
                extra(3)?;
                match verb {
                    "fail" => Action::Fail { vertex, task },
                    "kill" => Action::Kill { vertex, task },
                    _ => Action::Clone { vertex, task },
                }
            }
            "straggle" => {
                let (vertex, task) = target(2)?;
                let delay_ns = match words.get(3) {
                    None => DEFAULT_STRAGGLE_NS,
                    Some(&(c, w)) => {
                        let d = w
                            .strip_prefix("delay=")
                            .ok_or_else(|| err(c, format!("expected `delay=TIME`, found `{w}`")))?;
                        parse_duration(d).map_err(|m| err(c + 6, m))?
                    }
                };
                extra(4)?;
                Action::Straggle { vertex, task, delay_ns }
            }
            other => {
                return Err(err(
                    c1,
                    format!("unknown action `{other}` (expected scale, fail, kill, clone or straggle)"),
                ))
            }
        };
        Ok(EventSpec { at, action, text: text.trim().to_string(), relative: false })
    }
}

/// Words of `s` with their byte columns.
fn words(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, ch) in s.char_indices() {
        match (ch.is_whitespace(), start) {
            (true, Some(b)) => {
                out.push((b, &s[b..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(b) = start {
        out.push((b, &s[b..]));
    }
    out
}

fn parse_when(w: &str) -> Result<When, String> {
    if let Some(p) = w.strip_suffix('%') {
        let f: f64 = p.parse().map_err(|_| format!("`{w}` is not a percentage"))?;
        if !(0.0..=100.0).contains(&f) {
            return Err(format!("`{w}` is outside 0%..100%"));
        }
        return Ok(When::Fraction(f / 100.0));
    }
    if w.bytes().all(|b| b.is_ascii_digit()) && !w.is_empty() {
        return w.parse().map(When::Packet).map_err(|_| format!("packet number `{w}` is too large"));
    }
    parse_duration(w).map(When::Elapsed)
}

/// `10us`, `2.5s`, `300ms`, `500ns` → nanoseconds.
pub fn parse_duration(w: &str) -> Result<u64, String> {
    let split = w.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(w.len());
    let (num, unit) = w.split_at(split);
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "" => return Err(format!("`{w}` needs a unit (ns, us, ms, s), or is a packet number")),
        other => return Err(format!("unknown time unit `{other}` (ns, us, ms, s)")),
    };
    let v: f64 = num.parse().map_err(|_| format!("`{w}` is not a time"))?;
    if !v.is_finite() || v < 0.0 || v * scale > u64::MAX as f64 {
        return Err(format!("`{w}` is out of range"));
    }
    Ok((v * scale) as u64)
}

impl EventSpec {
    /// Checks the vertex exists; the instance is checked when the event happens (the
    /// vertex may have scaled by then).
    pub fn validate(&self, dag: &LogicalDag) -> Result<(), String> {
        let v = self.action.vertex();
        if dag.vertex_id(v).is_none() {
            let names: Vec<&str> = dag.vertices.iter().map(|v| v.name.as_str()).collect();
            return Err(format!(
                "event `{}`: no vertex `{v}` in chain {} (vertices: {})",
                self.text,
                dag.name,
                names.join(", ")
            ));
        }
        Ok(())
    }

    /// The input packet index the event happens before, for a trace of `count` packets
    /// whose timestamps are `ts(i)` (nanoseconds).
    pub fn packet_index(&self, count: u64, ts: impl Fn(u64) -> u64) -> u64 {
        match self.at {
            When::Packet(n) => n.min(count),
            When::Fraction(f) => ((count as f64) * f).floor() as u64,
            When::Elapsed(d) => {
                if count == 0 {
                    return 0;
                }
                let start = ts(0).saturating_add(d);
                // Timestamps may go backwards a little in real captures: first at or after.
                (0..count).find(|&i| ts(i) >= start).unwrap_or(count)
            }
        }
    }
}

/// Events in the order they happen over an input of known length: each before the input
/// packet it names ([`EventSpec::packet_index`]), those past the end after the last packet.
pub struct Schedule<'a> {
    due: Vec<(u64, &'a EventSpec)>,
    next: usize,
}

impl<'a> Schedule<'a> {
    /// Orders `events` over `count` packets whose timestamps are `ts(i)`.
    pub fn new(events: &'a [EventSpec], count: u64, ts: impl Fn(u64) -> u64) -> Schedule<'a> {
        let mut due: Vec<(u64, &EventSpec)> =
            events.iter().map(|e| (e.packet_index(count, &ts), e)).collect();
        due.sort_by_key(|d| d.0);
        Schedule { due, next: 0 }
    }

    /// The next event due before input packet `i` (`u64::MAX`: every one left), once each.
    pub fn next_before(&mut self, i: u64) -> Option<&'a EventSpec> {
        let &(at, ev) = self.due.get(self.next)?;
        (at <= i).then(|| {
            self.next += 1;
            ev
        })
    }
}

/// A small deterministic generator (splitmix64) for random schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// `k` random events over a trace of `packets` packets, drawn from `seed`: scale up and
/// down, fail, kill, clone and straggle, on random vertices, at increasing packet indexes.
/// `instances` are the vertices' starting instance counts; instance numbers always name a
/// task that exists at that point, and no vertex grows beyond `max_instances`.
pub fn random_events(
    dag: &LogicalDag,
    instances: &[u32],
    k: u32,
    seed: u64,
    packets: u64,
    max_instances: u32,
) -> Vec<EventSpec> {
    let mut rng = Rng(seed ^ 0x6a09_e667_f3bc_c909);
    let mut count: Vec<u32> = dag
        .vertices
        .iter()
        .enumerate()
        .map(|(i, v)| instances.get(i).copied().unwrap_or(v.instances).max(1))
        .collect();
    let mut at: Vec<u64> = (0..k).map(|_| rng.below(packets.max(1))).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    for a in at {
        if dag.vertices.is_empty() {
            break;
        }
        let v = rng.below(dag.vertices.len() as u64) as usize;
        let name = dag.vertices[v].name.clone();
        let task = rng.below(u64::from(count[v])) as u32;
        let text = match rng.below(6) {
            0 if count[v] < max_instances => {
                count[v] += 1;
                format!("at={a} scale {name} to {}", count[v])
            }
            1 if count[v] > 1 => {
                count[v] -= 1;
                format!("at={a} scale {name} to {}", count[v])
            }
            0..=2 => format!("at={a} fail {name}/{task}"),
            3 => format!("at={a} kill {name}/{task}"),
            4 => format!("at={a} clone {name}/{task}"),
            _ => format!("at={a} straggle {name}/{task} delay={}us", 1 + rng.below(20)),
        };
        if let Ok(mut e) = text.parse::<EventSpec>() {
            e.relative = true;
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<EventSpec, String> {
        s.parse()
    }

    #[test]
    fn the_documented_forms_parse() {
        let e = p("at=40% scale ids to 3").unwrap();
        assert_eq!(e.at, When::Fraction(0.4));
        assert_eq!(e.action, Action::Scale { vertex: "ids".into(), to: 3 });
        let e = p("at=500000 fail nat/1").unwrap();
        assert_eq!(e.at, When::Packet(500_000));
        assert_eq!(e.action, Action::Fail { vertex: "nat".into(), task: 1 });
        let e = p("at=20% straggle scan/0 delay=10us").unwrap();
        assert_eq!(e.action, Action::Straggle { vertex: "scan".into(), task: 0, delay_ns: 10_000 });
        assert_eq!(p("at=1.5s clone nat/0").unwrap().at, When::Elapsed(1_500_000_000));
        assert_eq!(p("at=3 kill nat/0").unwrap().action.kind(), "kill");
        assert_eq!(
            p("  at=0   straggle a/2 ").unwrap().action,
            Action::Straggle { vertex: "a".into(), task: 2, delay_ns: DEFAULT_STRAGGLE_NS }
        );
    }

    #[test]
    fn errors_name_the_column() {
        for (s, col, what) in [
            ("fail nat/1", 1, "at=WHEN"),
            ("at=40 explode nat/1", 7, "unknown action"),
            ("at=40% scale ids to zero", 21, "instance count"),
            ("at=40% scale ids up 3", 18, "expected `to`"),
            ("at=101% fail a/0", 4, "outside"),
            ("at=5 fail nat", 11, "VERTEX/INSTANCE"),
            ("at=5 fail nat/x", 15, "not a number"),
            ("at=5 straggle a/0 delay=3parsecs", 25, "unknown time unit"),
            ("at=5 fail a/0 now", 15, "unexpected"),
            ("at=5xs fail a/0", 4, "time unit"),
        ] {
            let e = p(s).unwrap_err();
            assert!(e.contains(&format!("column {col}:")) && e.contains(what), "{s}: {e}");
        }
        assert!(p("").unwrap_err().contains("empty"));
    }

    #[test]
    fn packet_indexes() {
        let ts = |i: u64| 1_000 + i * 100;
        assert_eq!(p("at=50% fail a/0").unwrap().packet_index(10, ts), 5);
        assert_eq!(p("at=99 fail a/0").unwrap().packet_index(10, ts), 10);
        assert_eq!(p("at=250ns fail a/0").unwrap().packet_index(10, ts), 3);
        assert_eq!(p("at=1s fail a/0").unwrap().packet_index(10, ts), 10);
    }
}
