//! [`ChainBuilder`]: writing a chain in Rust. The TOML loader builds chains through it
//! too, so both front ends share one validation path.

use crate::error::{DagError, DagErrorKind, DagErrors};
use crate::graph::{Edge, Endpoint, LogicalDag, Partition, Vertex, WatchTarget, INPUT, OUTPUT_PREFIX};
use crate::nf::{NetworkFunction, PortClass};
use crate::registry::Params;
use crate::validate;
use std::sync::Arc;
use streamnf_filter::Filter;
use streamnf_packet::{Flowspace, MalformedPolicy};

/// A vertex as declared, before validation.
#[derive(Clone)]
pub(crate) struct VertexDecl {
    pub vertex: Vertex,
    pub location: Option<String>,
}

/// An edge as declared, before its endpoints are resolved.
#[derive(Clone, Debug)]
pub(crate) struct EdgeDecl {
    pub from: String,
    pub to: String,
    pub filter: Option<String>,
    pub partition: Partition,
    pub location: Option<String>,
}

/// Builds a [`LogicalDag`] in Rust.
///
/// ```ignore
/// let dag = ChainBuilder::new("figure1")
///     .vertex("ids", Arc::new(LightIds::default()))
///     .vertex("limiter", Arc::new(RateLimiter::default()))
///     .edge("input", "ids.in")
///     .edge("ids.out", "limiter.in")
///     .edge("limiter.out", "output.out")
///     .build()?;
/// ```
#[derive(Clone)]
pub struct ChainBuilder {
    name: String,
    vertices: Vec<VertexDecl>,
    edges: Vec<EdgeDecl>,
    malformed: MalformedPolicy,
    events: Vec<crate::graph::ChainEvent>,
    errors: Vec<DagError>,
    /// Vertices that could not be built (unknown NF, bad parameters): edges naming them
    /// are skipped instead of reported again.
    failed: Vec<String>,
}

impl ChainBuilder {
    /// Starts a chain called `name`.
    pub fn new(name: &str) -> ChainBuilder {
        ChainBuilder {
            name: name.to_string(),
            vertices: Vec::new(),
            edges: Vec::new(),
            malformed: MalformedPolicy::Drop,
            events: Vec::new(),
            errors: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// Adds a vertex running `nf`, with one instance and flowspaces from its state objects.
    pub fn vertex(self, name: &str, nf: Arc<dyn NetworkFunction>) -> ChainBuilder {
        let nf_name = short_type_name(&*nf);
        self.vertex_with(name, &nf_name, nf, Params::empty(), None)
    }

    pub(crate) fn vertex_with(
        mut self,
        name: &str,
        nf_name: &str,
        nf: Arc<dyn NetworkFunction>,
        params: Params,
        location: Option<String>,
    ) -> ChainBuilder {
        let spec = nf.spec();
        let flowspaces = Vertex::flowspaces_from_spec(&spec);
        self.vertices.push(VertexDecl {
            vertex: Vertex {
                name: name.to_string(),
                nf_name: nf_name.to_string(),
                nf,
                spec,
                params,
                instances: 1,
                cpu_hint: 1.0,
                flowspaces,
                watches: Vec::new(),
            },
            location,
        });
        self
    }

    /// Sets the default instance count of vertex `name`.
    pub fn instances(mut self, name: &str, n: u32) -> ChainBuilder {
        match self.vertices.iter_mut().find(|v| v.vertex.name == name) {
            Some(v) => v.vertex.instances = n,
            None => self.errors.push(DagError::new(
                DagErrorKind::BadEndpoint,
                format!("vertex \"{name}\""),
                "instances set for a vertex that was not declared",
            )),
        }
        self
    }

    /// Overrides the partitioning flowspaces (fine → coarse) of vertex `name`.
    pub fn flowspaces(mut self, name: &str, fs: Vec<Flowspace>) -> ChainBuilder {
        if let Some(v) = self.vertices.iter_mut().find(|v| v.vertex.name == name) {
            v.vertex.flowspaces = fs;
        }
        self
    }

    /// Sets the CPU hint of vertex `name`.
    pub fn cpu_hint(mut self, name: &str, cpu: f64) -> ChainBuilder {
        if let Some(v) = self.vertices.iter_mut().find(|v| v.vertex.name == name) {
            v.vertex.cpu_hint = cpu;
        }
        self
    }

    /// Sets the malformed-packet policy.
    pub fn malformed(mut self, policy: MalformedPolicy) -> ChainBuilder {
        self.malformed = policy;
        self
    }

    /// Schedules a churn event (`at=40% scale ids to 3`); `location` says where it was
    /// written, for error messages.
    pub fn event(mut self, spec: &str, location: &str) -> ChainBuilder {
        self.events.push(crate::graph::ChainEvent { text: spec.to_string(), location: location.to_string() });
        self
    }

    /// Adds an edge `from` → `to` (`input`, `vertex.port`, `vertex` when it has one such port, `output.NAME`).
    pub fn edge(self, from: &str, to: &str) -> ChainBuilder {
        self.edge_with(from, to, None, Partition::Scope, None)
    }

    /// Adds an edge with a tcpdump-syntax filter.
    pub fn edge_filtered(self, from: &str, to: &str, filter: &str) -> ChainBuilder {
        self.edge_with(from, to, Some(filter.to_string()), Partition::Scope, None)
    }

    /// Adds an edge with every option.
    pub fn edge_with(
        mut self,
        from: &str,
        to: &str,
        filter: Option<String>,
        partition: Partition,
        location: Option<String>,
    ) -> ChainBuilder {
        self.edges.push(EdgeDecl { from: from.to_string(), to: to.to_string(), filter, partition, location });
        self
    }

    pub(crate) fn push_error(&mut self, e: DagError) {
        self.errors.push(e);
    }

    /// Records a vertex that failed to build, with its error.
    pub(crate) fn push_failed_vertex(&mut self, name: &str, e: DagError) {
        self.failed.push(name.to_string());
        self.errors.push(e);
    }

    /// Validates and returns the chain, or every problem found.
    pub fn build(self) -> Result<LogicalDag, DagErrors> {
        let mut errors = self.errors;
        let mut vertices: Vec<Vertex> = Vec::new();
        let mut vertex_locs: Vec<Option<String>> = Vec::new();
        for d in self.vertices {
            let subject = format!("vertex \"{}\"", d.vertex.name);
            let mut bad = |kind, msg: String| {
                errors.push(DagError {
                    kind,
                    location: d.location.clone(),
                    subject: subject.clone(),
                    message: msg,
                })
            };
            if d.vertex.name == INPUT || d.vertex.name == OUTPUT_PREFIX {
                bad(
                    DagErrorKind::DuplicateName,
                    format!("`{}` is reserved for the chain's endpoints", d.vertex.name),
                );
                continue;
            }
            if d.vertex.name.is_empty() || d.vertex.name.contains(['.', ' ', '/', '"']) {
                bad(
                    DagErrorKind::DuplicateName,
                    "a vertex name must be non-empty without '.', '/', '\"' or spaces".into(),
                );
                continue;
            }
            if vertices.iter().any(|v| v.name == d.vertex.name) {
                bad(DagErrorKind::DuplicateName, "declared twice".into());
                continue;
            }
            if d.vertex.instances == 0 || d.vertex.instances > 4096 {
                bad(
                    DagErrorKind::BadVertexConfig,
                    format!("instances must be 1..=4096, found {}", d.vertex.instances),
                );
            }
            vertices.push(d.vertex);
            vertex_locs.push(d.location);
        }

        resolve_watches(&mut vertices, &vertex_locs, &mut errors);

        let mut edges: Vec<Edge> = Vec::new();
        let names_failed = |ep: &str| {
            let v = ep.split_once('.').map(|x| x.0).unwrap_or(ep);
            self.failed.iter().any(|f| f == v)
        };
        let declared_input = self.edges.iter().any(|d| d.from.trim() == INPUT);
        let mut edge_errors = false;
        for d in &self.edges {
            if names_failed(&d.from) || names_failed(&d.to) {
                edge_errors = true;
                continue;
            }
            let label = format!("{} -> {}", d.from, d.to);
            let subject = format!("edge \"{label}\"");
            let err = |kind, msg: String| DagError {
                kind,
                location: d.location.clone(),
                subject: subject.clone(),
                message: msg,
            };
            let from = resolve(&vertices, &d.from, true);
            let to = resolve(&vertices, &d.to, false);
            let (from, to) = match (from, to) {
                (Ok(f), Ok(t)) => (f, t),
                (f, t) => {
                    for e in [f.err(), t.err()].into_iter().flatten() {
                        errors.push(err(DagErrorKind::BadEndpoint, e));
                    }
                    edge_errors = true;
                    continue;
                }
            };
            let from_class = endpoint_class(&vertices, &from, true);
            let to_class = endpoint_class(&vertices, &to, false);
            if from_class != to_class {
                errors.push(err(
                    DagErrorKind::PortClassMismatch,
                    format!("`{}` emits {from_class} but `{}` takes {to_class}", d.from, d.to),
                ));
                continue;
            }
            let filter = match &d.filter {
                None => None,
                Some(_) if from_class != PortClass::Packets => {
                    errors.push(err(DagErrorKind::BadFilter, "filters apply to packet edges only".into()));
                    continue;
                }
                Some(expr) => match Filter::compile(expr) {
                    Ok(f) => Some(f),
                    Err(fe) => {
                        errors.push(err(
                            DagErrorKind::BadFilter,
                            format!(
                                "filter \"{expr}\" does not compile: column {}: {}",
                                fe.column, fe.message
                            ),
                        ));
                        continue;
                    }
                },
            };
            edges.push(Edge { from, to, filter, partition: d.partition.clone(), label });
        }

        let dag = LogicalDag {
            id: LogicalDag::id_of(&self.name),
            name: self.name,
            vertices,
            edges,
            malformed: self.malformed,
            events: self.events,
        };
        let checks = validate::Checks {
            input_declared: declared_input,
            graph_complete: !edge_errors && errors.is_empty(),
        };
        validate::finish(dag, &vertex_locs, errors, checks)
    }
}

/// Resolves every vertex's [`NetworkFunction::watches`] into [`Vertex::watches`]; an
/// unknown vertex or object is an error naming the watching vertex.
fn resolve_watches(vertices: &mut [Vertex], locs: &[Option<String>], errors: &mut Vec<DagError>) {
    let mut resolved = Vec::with_capacity(vertices.len());
    for (vid, v) in vertices.iter().enumerate() {
        let mut targets = Vec::new();
        let mut refuse = |message: String| {
            errors.push(DagError {
                kind: DagErrorKind::BadVertexConfig,
                location: locs.get(vid).cloned().flatten(),
                subject: format!("vertex \"{}\"", v.name),
                message,
            })
        };
        for w in v.nf.watches() {
            let target = if w.vertex.is_empty() {
                Some(vid)
            } else {
                vertices.iter().position(|x| x.name == w.vertex)
            };
            let Some(target) = target else {
                let known: Vec<&str> = vertices.iter().map(|x| x.name.as_str()).collect();
                refuse(format!("watches unknown vertex `{}` (vertices: {})", w.vertex, known.join(", ")));
                continue;
            };
            let spec = &vertices[target].spec;
            let Some(object) = spec.state.iter().position(|o| o.name == w.object) else {
                let known: Vec<&str> = spec.state.iter().map(|o| o.name.as_str()).collect();
                refuse(format!(
                    "watches object `{}` of vertex `{}`, which has no such state object (objects: {})",
                    w.object,
                    vertices[target].name,
                    known.join(", ")
                ));
                continue;
            };
            targets.push(WatchTarget { vertex: target, object: object as u16 });
        }
        resolved.push(targets);
    }
    for (v, t) in vertices.iter_mut().zip(resolved) {
        v.watches = t;
    }
}

fn short_type_name(nf: &dyn NetworkFunction) -> String {
    let _ = nf;
    "custom".to_string()
}

/// Resolves `input`, `output.NAME`, `vertex.port` or `vertex` (when the vertex has exactly
/// one port in that direction).
fn resolve(vertices: &[Vertex], text: &str, outgoing: bool) -> Result<Endpoint, String> {
    let text = text.trim();
    if text == INPUT {
        return if outgoing {
            Ok(Endpoint::Input)
        } else {
            Err("`input` can only be the source of an edge".into())
        };
    }
    if let Some(rest) = text.strip_prefix(OUTPUT_PREFIX).and_then(|r| r.strip_prefix('.')) {
        if outgoing {
            return Err(format!("`{text}` is a sink and can only be the destination of an edge"));
        }
        if rest.is_empty() || rest.contains(['/', '.', ' ']) {
            return Err(format!(
                "bad sink name in `{text}` (use output.NAME with NAME free of '.', '/', spaces)"
            ));
        }
        return Ok(Endpoint::Sink(rest.to_string()));
    }
    let (vname, pname) = match text.split_once('.') {
        Some((v, p)) => (v, Some(p)),
        None => (text, None),
    };
    let Some(vid) = vertices.iter().position(|v| v.name == vname) else {
        let known: Vec<&str> = vertices.iter().map(|v| v.name.as_str()).collect();
        return Err(format!(
            "unknown vertex `{vname}` (vertices: {}; endpoints: input, output.NAME)",
            known.join(", ")
        ));
    };
    let v = &vertices[vid];
    let ports = if outgoing { &v.spec.outputs } else { &v.spec.inputs };
    let dir = if outgoing { "output" } else { "input" };
    let names = || ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    match pname {
        Some(p) => match ports.iter().position(|x| x.name == p) {
            Some(port) => Ok(Endpoint::Port { vertex: vid, port }),
            None => Err(format!(
                "vertex `{vname}` ({}) has no {dir} port `{p}` ({dir} ports: {})",
                v.nf_name,
                names()
            )),
        },
        None => {
            // A bare vertex name means its only port, or else its only packet port.
            let packet_ports: Vec<usize> = ports
                .iter()
                .enumerate()
                .filter(|(_, p)| p.class == PortClass::Packets)
                .map(|(i, _)| i)
                .collect();
            match (ports.len(), packet_ports.as_slice()) {
                (1, _) => Ok(Endpoint::Port { vertex: vid, port: 0 }),
                (_, [only]) => Ok(Endpoint::Port { vertex: vid, port: *only }),
                _ => Err(format!("vertex `{vname}` has {} {dir} ports; name one: {}", ports.len(), names())),
            }
        }
    }
}

fn endpoint_class(vertices: &[Vertex], ep: &Endpoint, outgoing: bool) -> PortClass {
    match ep {
        Endpoint::Input | Endpoint::Sink(_) => PortClass::Packets,
        Endpoint::Port { vertex, port } => {
            let v = &vertices[*vertex];
            let ports = if outgoing { &v.spec.outputs } else { &v.spec.inputs };
            ports.get(*port).map(|p| p.class.clone()).unwrap_or(PortClass::Packets)
        }
    }
}
