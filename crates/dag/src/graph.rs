//! The validated logical DAG: vertices, edges, endpoints and partitioning rules.

use crate::nf::{NetworkFunction, NfSpec, StateScope};
use crate::registry::Params;
use std::sync::Arc;
use streamnf_filter::Filter;
use streamnf_packet::{Flowspace, MalformedPolicy};

/// Index of a vertex in [`LogicalDag::vertices`].
pub type VertexId = usize;

/// Name of the chain input endpoint in edges (`from = "input"`).
pub const INPUT: &str = "input";
/// Prefix of sink endpoints in edges (`to = "output.NAME"`).
pub const OUTPUT_PREFIX: &str = "output";

/// One end of an edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The chain input (packets from the trace or link).
    Input,
    /// A port of a vertex.
    Port {
        /// Vertex.
        vertex: VertexId,
        /// Port index in the NF's inputs or outputs.
        port: usize,
    },
    /// A named sink port of the chain (one output capture each).
    Sink(String),
}

/// How an edge spreads its messages over the downstream vertex's instances (§4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// By the downstream vertex's flowspaces (coarsest first); the default.
    Scope,
    /// By an explicit flowspace.
    Flowspace(Flowspace),
    /// Every instance gets a copy.
    Broadcast,
    /// A custom splitter registered under this name with the runtime.
    Custom(String),
}

/// A vertex: one NF with its configuration.
#[derive(Clone)]
pub struct Vertex {
    /// Unique name.
    pub name: String,
    /// Name of the NF type (the registry name, or the Rust type for builder NFs).
    pub nf_name: String,
    /// The NF code, shared by all instances.
    pub nf: Arc<dyn NetworkFunction>,
    /// Its ports and state objects.
    pub spec: NfSpec,
    /// Parameters it was built with (for display).
    pub params: Params,
    /// Default number of instances.
    pub instances: u32,
    /// Resource hint: CPU share per instance (informational; the scheduler may use it).
    pub cpu_hint: f64,
    /// Partitioning flowspaces, fine → coarse (from the NF's per-flow state objects unless overridden).
    pub flowspaces: Vec<Flowspace>,
    /// The NF's [`NetworkFunction::watches`], resolved; index = watch index.
    pub watches: Vec<WatchTarget>,
}

/// A resolved [`crate::StateWatch`]: the watched vertex and state object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatchTarget {
    /// The watched vertex.
    pub vertex: VertexId,
    /// Index of the object in that vertex's [`NfSpec::state`].
    pub object: u16,
}

impl Vertex {
    /// Partitioning flowspaces implied by the NF's per-flow state objects, fine → coarse:
    /// longer flowspaces first, duplicates removed.
    pub fn flowspaces_from_spec(spec: &NfSpec) -> Vec<Flowspace> {
        let mut all: Vec<Flowspace> = Vec::new();
        for obj in &spec.state {
            if let StateScope::PerFlow(list) = &obj.scope {
                for fs in list {
                    if !all.contains(fs) {
                        all.push(fs.clone());
                    }
                }
            }
        }
        all.sort_by_key(|fs| std::cmp::Reverse(fs.0.len()));
        all
    }
}

impl std::fmt::Debug for Vertex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vertex")
            .field("name", &self.name)
            .field("nf", &self.nf_name)
            .field("instances", &self.instances)
            .finish()
    }
}

/// An edge from an output port (or the input) to an input port (or a sink).
#[derive(Clone, Debug)]
pub struct Edge {
    /// Source.
    pub from: Endpoint,
    /// Destination.
    pub to: Endpoint,
    /// Only packets matching this filter cross the edge.
    pub filter: Option<Filter>,
    /// Partitioning over the destination's instances.
    pub partition: Partition,
    /// `from -> to` as written, for messages.
    pub label: String,
}

/// A validated logical DAG.
#[derive(Clone, Debug)]
pub struct LogicalDag {
    /// Chain name.
    pub name: String,
    /// Stable 32-bit id derived from the name; namespaces the chain's state in the store.
    pub id: u32,
    /// Vertices, in topological order (every edge goes from a lower to a higher index).
    pub vertices: Vec<Vertex>,
    /// Edges.
    pub edges: Vec<Edge>,
    /// What to do with malformed packets.
    pub malformed: MalformedPolicy,
    /// Churn events scheduled by the chain file (`events = ["at=40% scale ids to 3"]`),
    /// as written, with where each was written (`file:line`). The runtime parses them.
    pub events: Vec<ChainEvent>,
}

/// An event spec from a chain file (see `streamnf_runtime::events` for the syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEvent {
    /// The spec, e.g. `at=40% scale ids to 3`.
    pub text: String,
    /// Where it was written (`file:line`), for error messages.
    pub location: String,
}

impl LogicalDag {
    /// Stable id of a chain name (FNV-1a, 32 bit).
    pub fn id_of(name: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in name.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h
    }

    /// The shared state objects NFs declared read-heavy, as `(dag, vertex, object)`: the
    /// ones a client-side cache may keep with invalidation (`streamnf_store::CachedStore`).
    pub fn read_heavy_objects(&self) -> Vec<(u32, u32, u16)> {
        let mut out = Vec::new();
        for (vid, v) in self.vertices.iter().enumerate() {
            for (oid, o) in v.spec.state.iter().enumerate() {
                if o.read_heavy && o.scope == StateScope::Shared {
                    out.push((self.id, vid as u32, oid as u16));
                }
            }
        }
        out
    }

    /// The vertex called `name`.
    pub fn vertex_id(&self, name: &str) -> Option<VertexId> {
        self.vertices.iter().position(|v| v.name == name)
    }

    /// Names of the sink ports, sorted.
    pub fn sinks(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .edges
            .iter()
            .filter_map(|e| match &e.to {
                Endpoint::Sink(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        s.sort();
        s.dedup();
        s
    }

    /// Edges leaving `from`.
    pub fn edges_from<'a>(&'a self, from: &'a Endpoint) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| &e.from == from)
    }

    /// Renders an endpoint as `vertex.port`, `input` or `output.NAME`.
    pub fn endpoint_name(&self, ep: &Endpoint, outgoing: bool) -> String {
        match ep {
            Endpoint::Input => INPUT.to_string(),
            Endpoint::Sink(n) => format!("{OUTPUT_PREFIX}.{n}"),
            Endpoint::Port { vertex, .. } => {
                format!("{}.{}", self.vertices[*vertex].name, self.port_name(ep, outgoing))
            }
        }
    }

    /// The port name of an endpoint: `""` for the input and sinks, `"?"` for a port index
    /// the vertex does not have.
    pub fn port_name(&self, ep: &Endpoint, outgoing: bool) -> &str {
        let Endpoint::Port { vertex, port } = ep else { return "" };
        let v = &self.vertices[*vertex];
        let ports = if outgoing { &v.spec.outputs } else { &v.spec.inputs };
        ports.get(*port).map(|p| p.name.as_str()).unwrap_or("?")
    }

    /// `from-port → to-port` of an edge, as drawn on graph edges (`→ in` from the input).
    pub fn edge_ports(&self, e: &Edge) -> String {
        format!("{} → {}", self.port_name(&e.from, true), self.port_name(&e.to, false)).trim().to_string()
    }

    /// True when the edge carries context messages rather than packets.
    pub fn is_context_edge(&self, e: &Edge) -> bool {
        match &e.from {
            Endpoint::Port { vertex, port } => self.vertices[*vertex]
                .spec
                .outputs
                .get(*port)
                .is_some_and(|p| p.class != crate::nf::PortClass::Packets),
            _ => false,
        }
    }
}
