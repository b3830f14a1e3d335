//! Splitters (§4.2): which instance (task) of a downstream vertex gets a packet or a
//! context message.
//!
//! One [`SplitRule`] is resolved per edge when the physical DAG is built; on the per-packet
//! path it only hashes. A packet goes to the task that owns its flow in the downstream
//! vertex's coarsest per-flow flowspace, so per-flow state is only ever touched by its
//! owner; a context message goes to the task owning the flow its fields name (a verdict
//! about `src_ip` reaches the task that sees that source's packets). This module never
//! moves messages and never touches state: it only chooses.

use std::collections::HashMap;
use std::sync::Arc;
use streamnf_dag::{ContextMsg, Endpoint, LogicalDag, NetworkFunction, Partition, Vertex};
use streamnf_packet::{Field, FieldValue, Flowspace, Packet};

/// A user-supplied splitter for `partition = "custom:NAME"` edges.
pub trait Splitter: Send + Sync {
    /// The partition (`0..partitions`, see [`PARTITIONS`]) that gets `pkt`; the partition
    /// table maps it to a task (values out of range are clamped).
    fn select(&self, pkt: &Packet, partitions: usize) -> usize;

    /// The partition that gets a context message (default: partition 0).
    fn select_context(&self, msg: &ContextMsg, tasks: usize) -> usize {
        let _ = (msg, tasks);
        0
    }
}

/// Custom splitters by name.
#[derive(Clone, Default)]
pub struct SplitterRegistry {
    by_name: HashMap<String, Arc<dyn Splitter>>,
}

impl SplitterRegistry {
    /// Registers `splitter` under `name` (replacing an earlier one).
    pub fn register(&mut self, name: &str, splitter: Arc<dyn Splitter>) {
        self.by_name.insert(name.to_string(), splitter);
    }

    /// The splitter registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Splitter>> {
        self.by_name.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }
}

/// How one edge chooses among the downstream vertex's tasks.
#[derive(Clone)]
pub enum SplitRule {
    /// The downstream vertex has one task.
    Single,
    /// Hash of the packet's key in this flowspace (also used for context messages whose
    /// fields name it). An NF's own partition key ([`NetworkFunction::partition_hash`])
    /// takes precedence when `nf` gives one.
    Flowspace {
        /// The flowspace hashed.
        flowspace: Flowspace,
        /// The downstream NF, asked for its own key first.
        nf: Arc<dyn NetworkFunction>,
    },
    /// Every task gets a copy.
    Broadcast,
    /// A registered custom splitter.
    Custom(Arc<dyn Splitter>),
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Targets {
    /// One task.
    One(usize),
    /// Every task of the vertex.
    All,
}

/// Flowspace used when the downstream vertex keeps no per-flow state: both directions of
/// a connection stay on one task, so per-flow order is kept.
fn default_flowspace() -> Flowspace {
    Flowspace(vec![Field::Connection])
}

impl SplitRule {
    /// The rule for an edge with partitioning `partition` into `to` with `tasks` tasks;
    /// `scope` is the flowspace a `scope` edge hashes (see [`scope_flowspaces`]; `None`
    /// = the vertex's own coarsest).
    pub fn resolve(
        partition: &Partition,
        to: &Vertex,
        tasks: usize,
        custom: &SplitterRegistry,
        scope: Option<&Flowspace>,
    ) -> Result<SplitRule, String> {
        if let Partition::Custom(name) = partition {
            let known = custom.names();
            return custom.get(name).map(|s| SplitRule::Custom(Arc::clone(s))).ok_or_else(|| {
                format!(
                    "custom splitter `{name}` is not registered (registered: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )
            });
        }
        if tasks <= 1 {
            return Ok(SplitRule::Single);
        }
        Ok(match partition {
            Partition::Broadcast => SplitRule::Broadcast,
            Partition::Flowspace(fs) => {
                SplitRule::Flowspace { flowspace: fs.clone(), nf: Arc::clone(&to.nf) }
            }
            // Coarsest first: the vertex lists its flowspaces fine → coarse.
            Partition::Scope | Partition::Custom(_) => SplitRule::Flowspace {
                flowspace: scope.or(to.flowspaces.last()).cloned().unwrap_or_else(default_flowspace),
                nf: Arc::clone(&to.nf),
            },
        })
    }

    /// The flow partition (`0..PARTITIONS`) of `pkt`, or every task for a broadcast edge.
    /// A partition table ([`crate::partition`]) maps partitions to tasks; per-flow state is
    /// keyed by partition, so a partition can change task without moving its state.
    #[inline]
    pub fn packet_partition(&self, pkt: &Packet) -> Targets {
        match self {
            SplitRule::Single => Targets::One(0),
            SplitRule::Broadcast => Targets::All,
            SplitRule::Custom(s) => Targets::One(s.select(pkt, PARTITIONS).min(PARTITIONS - 1)),
            SplitRule::Flowspace { flowspace, nf } => {
                let h = nf.partition_hash(pkt).unwrap_or_else(|| flowspace.key(pkt).stable_hash());
                Targets::One(bucket(h, PARTITIONS))
            }
        }
    }

    /// The flow partition of context message `msg`: that of the flow its fields name
    /// (`{"src_ip": "10.0.0.1"}`), else partition 0 (a message about no flow in particular
    /// goes to one task, so shared state sees it once).
    pub fn context_partition(&self, msg: &ContextMsg) -> Targets {
        match self {
            SplitRule::Single => Targets::One(0),
            SplitRule::Broadcast => Targets::All,
            SplitRule::Custom(s) => Targets::One(s.select_context(msg, PARTITIONS).min(PARTITIONS - 1)),
            SplitRule::Flowspace { flowspace, .. } => {
                match flowspace.key_from_values(|f| context_field(msg, f)) {
                    Some(k) => Targets::One(bucket(k.stable_hash(), PARTITIONS)),
                    None => Targets::One(0),
                }
            }
        }
    }

    /// The task(s) of `tasks` that get `pkt` under the initial partition table.
    pub fn packet_targets(&self, pkt: &Packet, tasks: usize) -> Targets {
        initial_task(self.packet_partition(pkt), tasks)
    }

    /// The task(s) of `tasks` that get context message `msg` under the initial partition
    /// table.
    pub fn context_targets(&self, msg: &ContextMsg, tasks: usize) -> Targets {
        initial_task(self.context_partition(msg), tasks)
    }
}

/// Flow partitions of a vertex: the unit a splitter hashes flows onto and the unit that
/// moves between tasks when a vertex scales (§5.3).
pub const PARTITIONS: usize = 256;

/// The task of partition `p` among `tasks` before any move: contiguous ranges.
#[inline]
pub fn initial_owner(p: usize, tasks: usize) -> usize {
    (p * tasks.max(1) / PARTITIONS).min(tasks.max(1) - 1)
}

fn initial_task(t: Targets, tasks: usize) -> Targets {
    match t {
        Targets::One(p) => Targets::One(initial_owner(p, tasks)),
        Targets::All => Targets::All,
    }
}

/// Fields of a flowspace as a set (`connection` counts as its own field: it groups both
/// directions, which no set of directed fields does).
fn field_set(fs: &Flowspace) -> Vec<Field> {
    let mut v = fs.0.clone();
    v.sort_by_key(|f| f.name());
    v.dedup();
    v
}

/// True when every field of `a` is in `b`: partitioning by `a` keeps each `b`-flow on one task.
fn coarser_or_equal(a: &Flowspace, b: &Flowspace) -> bool {
    let bs = field_set(b);
    field_set(a).iter().all(|f| bs.contains(f))
}

/// The flowspace each vertex's `scope` edges hash, chosen chain-wide (§4.2, coarsest
/// first): a vertex's own coarsest flowspace, coarsened to its downstream vertices' when
/// theirs is a subset of it. Then every packet of a downstream flow passed through the same
/// upstream task, so each task sees its flows in the order the root sent them, as the
/// single-instance run does. A vertex without per-flow state takes its downstream
/// vertices' choice when they agree. `None` = no constraint (the splitter's default).
pub fn scope_flowspaces(dag: &LogicalDag) -> Vec<Option<Flowspace>> {
    let n = dag.vertices.len();
    let mut key: Vec<Option<Flowspace>> = vec![None; n];
    // Vertices are in topological order: settle the downstream ones first.
    for v in (0..n).rev() {
        let own = dag.vertices[v].flowspaces.last().cloned();
        let mut down: Vec<Flowspace> = Vec::new();
        for port in 0..dag.vertices[v].spec.outputs.len() {
            for e in dag.edges_from(&Endpoint::Port { vertex: v, port }) {
                if let Endpoint::Port { vertex: w, .. } = e.to {
                    if let Some(k) = &key[w] {
                        if !down.contains(k) {
                            down.push(k.clone());
                        }
                    }
                }
            }
        }
        key[v] = match own {
            Some(own) => {
                let mut best = own.clone();
                for d in &down {
                    if coarser_or_equal(d, &best) {
                        best = d.clone();
                    }
                }
                Some(best)
            }
            None if down.len() == 1 => down.pop(),
            None => None,
        };
    }
    key
}

/// Per vertex: true when its tasks must merge their senders' messages in clock order.
///
/// A task needs the merge when one of its flows can reach it over more than one sender;
/// otherwise each flow arrives in root order already and the merge would only add waiting.
/// Vertices with no per-flow state at or below them need none (their tasks share state
/// with each other in store order anyway). A stateless vertex above a stateful one does:
/// it must pass its flows on in order. A vertex needs no merge when it has exactly one
/// sending vertex (the root counts as one) that has one task, or whose `scope` key is
/// coarser than or equal to this vertex's, does not rewrite headers, and sends over
/// `scope` edges only.
pub fn merge_needed(dag: &LogicalDag, scopes: &[Option<Flowspace>], tasks: &[usize]) -> Vec<bool> {
    let n = dag.vertices.len();
    // Per-flow state at or below each vertex (vertices are in topological order).
    let mut stateful_below = vec![false; n];
    for v in (0..n).rev() {
        let mut any = !dag.vertices[v].flowspaces.is_empty();
        for port in 0..dag.vertices[v].spec.outputs.len() {
            for e in dag.edges_from(&Endpoint::Port { vertex: v, port }) {
                if let Endpoint::Port { vertex: w, .. } = e.to {
                    any |= stateful_below[w];
                }
            }
        }
        stateful_below[v] = any;
    }
    (0..n)
        .map(|v| {
            if !stateful_below[v] {
                return false;
            }
            let mut senders: Vec<Option<usize>> = Vec::new(); // None = the root
            let mut plain_edges = true;
            for e in &dag.edges {
                if !matches!(e.to, Endpoint::Port { vertex, .. } if vertex == v) {
                    continue;
                }
                plain_edges &= matches!(e.partition, Partition::Scope);
                let s = match e.from {
                    Endpoint::Port { vertex, .. } => Some(vertex),
                    _ => None,
                };
                if !senders.contains(&s) {
                    senders.push(s);
                }
            }
            match senders[..] {
                [None] => false,
                [Some(u)] => {
                    if tasks.get(u).copied().unwrap_or(1) <= 1 {
                        return false;
                    }
                    let aligned = match (&scopes[u], &scopes[v]) {
                        (Some(ku), Some(kv)) => coarser_or_equal(ku, kv),
                        _ => false,
                    };
                    !(plain_edges && aligned && !dag.vertices[u].nf.rewrites_headers())
                }
                _ => true,
            }
        })
        .collect()
}

/// Maps a hash onto `0..tasks`: a full avalanche (MurmurHash3's finaliser; FNV leaves
/// the high bits of similar keys alike) and then multiply-shift, uniform without a division.
#[inline]
fn bucket(h: u64, tasks: usize) -> usize {
    let mut x = h;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    ((u128::from(x) * tasks as u128) >> 64) as usize
}

/// A context message's value for `f`: `"src_ip": "10.0.0.1"`, `"dst_port": 80`.
fn context_field(msg: &ContextMsg, f: Field) -> Option<FieldValue> {
    let v = msg.get(f.name())?;
    match f {
        Field::SrcIp | Field::DstIp => v.as_str()?.parse().ok().map(FieldValue::Ip),
        _ => v.as_u64().map(FieldValue::Num),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use streamnf_dag::{ChainBuilder, NfContext, NfError, NfSpec, PortSpec, StateObjectSpec};
    use streamnf_packet::LinkType;

    struct BySrc;
    impl NetworkFunction for BySrc {
        fn spec(&self) -> NfSpec {
            NfSpec {
                inputs: vec![PortSpec::packets("in"), PortSpec::context("verdict", "verdict")],
                outputs: vec![PortSpec::packets("out")],
                state: vec![StateObjectSpec::per_flow("s", Flowspace(vec![Field::SrcIp]))],
                connection_terminating: false,
            }
        }
        fn on_packet(&self, _: usize, _: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
            ctx.forward(0);
            Ok(())
        }
    }

    fn udp(src: [u8; 4], sport: u16) -> Packet {
        let b =
            etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4(src, [192, 0, 2, 1], 64).udp(sport, 53);
        let mut data = Vec::new();
        let _ = b.write(&mut data, b"q");
        Packet::new(LinkType::Ethernet, data, 0)
    }

    fn vertex() -> Vertex {
        let dag = ChainBuilder::new("t")
            .vertex("v", Arc::new(BySrc))
            .edge("input", "v.in")
            .edge("v.out", "output.out")
            .build();
        match dag {
            Ok(d) => d.vertices[0].clone(),
            Err(e) => panic!("test chain: {e}"),
        }
    }

    #[test]
    fn packets_of_one_source_go_to_one_task_and_its_verdicts_follow() {
        let v = vertex();
        let rule = SplitRule::resolve(&Partition::Scope, &v, 4, &SplitterRegistry::default(), None).unwrap();
        let mut seen = std::collections::HashSet::new();
        for src in 1..=40u8 {
            let a = rule.packet_targets(&udp([10, 0, 0, src], 1000), 4);
            let b = rule.packet_targets(&udp([10, 0, 0, src], 2000), 4);
            assert_eq!(a, b, "per-flow state of [src_ip] must stay on one task");
            let c = rule.context_targets(&json!({"src_ip": format!("10.0.0.{src}")}), 4);
            assert_eq!(a, c, "a verdict about a source goes to the task owning it");
            seen.insert(a);
        }
        assert_eq!(seen.len(), 4, "40 sources spread over all 4 tasks: {seen:?}");
        assert_eq!(rule.context_targets(&json!({"other": 1}), 4), Targets::One(0));
    }

    #[test]
    fn single_broadcast_and_unknown_custom() {
        let v = vertex();
        let reg = SplitterRegistry::default();
        let one = SplitRule::resolve(&Partition::Scope, &v, 1, &reg, None).unwrap();
        assert_eq!(one.packet_targets(&udp([10, 0, 0, 1], 1), 1), Targets::One(0));
        let all = SplitRule::resolve(&Partition::Broadcast, &v, 3, &reg, None).unwrap();
        assert_eq!(all.packet_targets(&udp([10, 0, 0, 1], 1), 3), Targets::All);
        let err =
            SplitRule::resolve(&Partition::Custom("zz".into()), &v, 3, &reg, None).err().unwrap_or_default();
        assert!(err.contains("`zz`") && err.contains("none"), "{err}");
    }

    struct Rewriter;
    impl NetworkFunction for Rewriter {
        fn spec(&self) -> NfSpec {
            NfSpec {
                inputs: vec![PortSpec::packets("in")],
                outputs: vec![PortSpec::packets("out")],
                state: vec![StateObjectSpec::per_flow("c", Flowspace(vec![Field::Connection]))],
                connection_terminating: false,
            }
        }
        fn on_packet(&self, _: usize, _: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
            ctx.forward(0);
            Ok(())
        }
        fn rewrites_headers(&self) -> bool {
            true
        }
    }

    struct Stateless;
    impl NetworkFunction for Stateless {
        fn spec(&self) -> NfSpec {
            NfSpec {
                inputs: vec![PortSpec::packets("in")],
                outputs: vec![PortSpec::packets("out")],
                state: vec![],
                connection_terminating: false,
            }
        }
        fn on_packet(&self, _: usize, _: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
            ctx.forward(0);
            Ok(())
        }
    }

    fn chain(first: Arc<dyn NetworkFunction>) -> LogicalDag {
        let d = ChainBuilder::new("c")
            .vertex("a", first)
            .vertex("b", Arc::new(BySrc))
            .edge("input", "a.in")
            .edge("a.out", "b.in")
            .edge("b.out", "output.out")
            .build();
        match d {
            Ok(d) => d,
            Err(e) => panic!("test chain: {e}"),
        }
    }

    #[test]
    fn scope_keys_coarsen_chain_wide_and_merges_only_where_needed() {
        // A stateless vertex takes its downstream vertex's key: each source then passes
        // through one upstream task, and the downstream tasks need no merge.
        let dag = chain(Arc::new(Stateless));
        let scopes = scope_flowspaces(&dag);
        let src = Flowspace(vec![Field::SrcIp]);
        assert_eq!(scopes, vec![Some(src.clone()), Some(src.clone())]);
        assert_eq!(merge_needed(&dag, &scopes, &[3, 2]), vec![false, false]);
        // A stateless vertex above a stateful one keeps its flows in order too.
        let dag3 = ChainBuilder::new("c3")
            .vertex("r", Arc::new(Rewriter))
            .vertex("s", Arc::new(Stateless))
            .vertex("b", Arc::new(BySrc))
            .edge("input", "r.in")
            .edge("r.out", "s.in")
            .edge("s.out", "b.in")
            .edge("b.out", "output.out")
            .build()
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let sc3 = scope_flowspaces(&dag3);
        assert_eq!(merge_needed(&dag3, &sc3, &[2, 1, 1]), vec![false, true, false]);
        // After an NF that rewrites headers (keyed by connection, which [src_ip] does not
        // refine), a source's packets can come from any upstream task: merge.
        let dag = chain(Arc::new(Rewriter));
        let scopes = scope_flowspaces(&dag);
        assert_eq!(scopes[0], Some(Flowspace(vec![Field::Connection])));
        assert_eq!(merge_needed(&dag, &scopes, &[3, 2]), vec![false, true]);
        // One upstream task: its output is in root order already.
        assert_eq!(merge_needed(&dag, &scopes, &[1, 2]), vec![false, false]);
        assert!(coarser_or_equal(&src, &Flowspace::five_tuple()));
        assert!(!coarser_or_equal(&Flowspace::five_tuple(), &src));
    }

    struct Last;
    impl Splitter for Last {
        fn select(&self, _: &Packet, tasks: usize) -> usize {
            tasks + 5 // out of range on purpose: clamped
        }
    }

    #[test]
    fn custom_splitters_are_used_and_clamped() {
        let v = vertex();
        let mut reg = SplitterRegistry::default();
        reg.register("last", Arc::new(Last));
        let r = SplitRule::resolve(&Partition::Custom("last".into()), &v, 3, &reg, None).unwrap();
        assert_eq!(r.packet_targets(&udp([10, 0, 0, 1], 1), 3), Targets::One(2));
        assert_eq!(r.packet_partition(&udp([10, 0, 0, 1], 1)), Targets::One(PARTITIONS - 1));
    }

    #[test]
    fn buckets_cover_the_range() {
        for tasks in 1..9usize {
            let mut hit = vec![false; tasks];
            for h in 0..10_000u64 {
                let b = bucket(h, tasks);
                assert!(b < tasks);
                hit[b] = true;
            }
            assert!(hit.iter().all(|&x| x), "{tasks}: {hit:?}");
        }
    }

    fn udp6(src: [u8; 16], sport: u16) -> Packet {
        let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]).ipv6(src, [9; 16], 64).udp(sport, 53);
        let mut data = Vec::new();
        let _ = b.write(&mut data, b"q");
        Packet::new(LinkType::Ethernet, data, 0)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]
        /// A verdict naming a source reaches the task that sees that source's packets, for
        /// any address (v4 or v6) and any task count.
        #[test]
        fn contexts_follow_their_flows(v4 in proptest::prelude::any::<[u8; 4]>(), v6 in proptest::prelude::any::<[u8; 16]>(), tasks in 2usize..9, sport in 1u16..) {
            let v = vertex();
            let rule = SplitRule::resolve(&Partition::Scope, &v, tasks, &SplitterRegistry::default(), None).unwrap();
            let t4 = rule.packet_targets(&udp(v4, sport), tasks);
            let c4 = rule.context_targets(&json!({"src_ip": std::net::Ipv4Addr::from(v4).to_string()}), tasks);
            proptest::prop_assert_eq!(t4, c4);
            let t6 = rule.packet_targets(&udp6(v6, sport), tasks);
            let c6 = rule.context_targets(&json!({"src_ip": std::net::Ipv6Addr::from(v6).to_string()}), tasks);
            proptest::prop_assert_eq!(t6, c6);
            proptest::prop_assert!(matches!(t4, Targets::One(t) if t < tasks));
        }
    }
}
