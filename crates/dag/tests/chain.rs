//! Chain building, chain files and validation: every error kind names its place.

use std::sync::Arc;
use streamnf_dag::chain_file::parse_chain;
use streamnf_dag::dot::logical_dot;
use streamnf_dag::error::DagErrorKind;
use streamnf_dag::{
    ChainBuilder, Endpoint, NetworkFunction, NfContext, NfError, NfRegistry, NfSpec, Params, PortSpec,
    StateObjectSpec,
};
use streamnf_packet::{Field, Flowspace, Packet};

/// A test NF: `in` → `out`, optional context output `note`, one per-flow object.
struct Pass;

impl NetworkFunction for Pass {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in"), PortSpec::context("hint", "note")],
            outputs: vec![PortSpec::packets("out"), PortSpec::context("note", "note")],
            state: vec![
                StateObjectSpec::per_flow("per_src", Flowspace(vec![Field::SrcIp])),
                StateObjectSpec::per_flow("per_conn", Flowspace::five_tuple()),
                StateObjectSpec::shared("total"),
            ],
            connection_terminating: false,
        }
    }
    fn on_packet(&self, _: usize, _: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        ctx.forward(0);
        Ok(())
    }
}

/// A test NF whose context output has another message type.
struct OtherCtx;

impl NetworkFunction for OtherCtx {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::optional_packets("out"), PortSpec::context("alarm", "alarm")],
            state: vec![],
            connection_terminating: false,
        }
    }
    fn on_packet(&self, _: usize, _: &mut Packet, _: &mut dyn NfContext) -> Result<(), NfError> {
        Ok(())
    }
}

fn pass_factory(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
    p.allow_only(&["level"])?;
    p.u64("level", 1)?;
    Ok(Arc::new(Pass))
}

fn other_factory(_: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
    Ok(Arc::new(OtherCtx))
}

fn registry() -> NfRegistry {
    let mut r = NfRegistry::new();
    r.register("pass", "test pass-through", pass_factory);
    r.register("other", "test NF with an alarm context", other_factory);
    r
}

#[test]
fn builder_orders_vertices_topologically_and_derives_flowspaces() {
    let dag = ChainBuilder::new("t")
        .vertex("b", Arc::new(Pass))
        .vertex("a", Arc::new(Pass))
        .edge("input", "a.in")
        .edge("a.out", "b.in")
        .edge("b.out", "output.out")
        .build()
        .expect("valid chain");
    assert_eq!(dag.vertices[0].name, "a");
    assert_eq!(dag.vertices[1].name, "b");
    assert!(dag
        .edges
        .iter()
        .any(|e| e.from == Endpoint::Port { vertex: 0, port: 0 }
            && e.to == Endpoint::Port { vertex: 1, port: 0 }));
    // fine → coarse: the 5-tuple before [src_ip].
    assert_eq!(dag.vertices[0].flowspaces, vec![Flowspace::five_tuple(), Flowspace(vec![Field::SrcIp])]);
    assert_eq!(dag.sinks(), vec!["out".to_string()]);
    assert_eq!(dag.id, streamnf_dag::LogicalDag::id_of("t"));
}

const GOOD: &str = r#"
name = "good"
[[vertex]]
name = "a"
nf = "pass"
instances = 2
[vertex.params]
level = 3

[[edge]]
from = "input"
to = "a"
filter = "tcp port 80 or udp"

[[edge]]
from = "a.out"
to = "output.web"
"#;

#[test]
fn chain_file_loads_with_filters_and_instances() {
    let dag = parse_chain(GOOD, "good.toml", &registry()).expect("valid");
    assert_eq!(dag.vertices[0].instances, 2);
    let f = dag.edges[0].filter.as_ref().expect("filter");
    assert_eq!(f.expr(), "tcp port 80 or udp");
    let dot = logical_dot(&dag);
    assert!(dot.contains("digraph \"good\""), "{dot}");
    assert!(dot.contains("\"input\" -> \"a\""), "{dot}");
    assert!(dot.contains("tcp port 80 or udp"), "{dot}");
    assert!(dot.contains("\"a\" -> \"output.web\""), "{dot}");
    // Multi-line labels use DOT line breaks (`\n`), not escaped backslashes.
    assert!(dot.contains("a\\npass ×2"), "{dot}");
    assert!(!dot.contains("\\\\"), "no doubled backslashes: {dot}");
}

fn errors(src: &str) -> streamnf_dag::DagErrors {
    match parse_chain(src, "chain.toml", &registry()) {
        Ok(_) => panic!("chain should be rejected:\n{src}"),
        Err(e) => e,
    }
}

fn one_error(src: &str, kind: DagErrorKind, needles: &[&str]) {
    let e = errors(src);
    assert!(e.has(kind), "expected {kind:?}, got: {e}");
    let text = e.to_string();
    for n in needles {
        assert!(text.contains(n), "error should mention {n:?}: {text}");
    }
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    one_error("name = \"x\"\n[[vertex]]\nname = \n", DagErrorKind::Syntax, &["chain.toml:3"]);
    one_error("name = \"x\"\nbogus = 1\n", DagErrorKind::Syntax, &["chain.toml:", "bogus"]);
}

#[test]
fn unknown_nf_names_vertex_line_and_known_nfs() {
    let src =
        "name = \"x\"\n\n[[vertex]]\nname = \"v\"\nnf = \"nope\"\n[[edge]]\nfrom = \"input\"\nto = \"v\"\n";
    one_error(src, DagErrorKind::UnknownNf, &["chain.toml:4", "vertex \"v\"", "nope", "other, pass"]);
}

#[test]
fn bad_parameter_names_vertex_and_parameter() {
    let src = GOOD.replace("level = 3", "level = \"high\"");
    one_error(&src, DagErrorKind::BadParameter, &["vertex \"a\"", "level"]);
    let src = GOOD.replace("level = 3", "speed = 3");
    one_error(&src, DagErrorKind::BadParameter, &["unknown parameter `speed`"]);
}

#[test]
fn duplicate_and_reserved_names() {
    let src = format!("{GOOD}\n[[vertex]]\nname = \"a\"\nnf = \"pass\"\n");
    one_error(&src, DagErrorKind::DuplicateName, &["vertex \"a\"", "declared twice"]);
    let src = GOOD.replace("name = \"a\"", "name = \"input\"");
    one_error(&src, DagErrorKind::DuplicateName, &["reserved"]);
}

#[test]
fn bad_filter_names_edge_expression_and_column() {
    let src = GOOD.replace("tcp port 80 or udp", "tcp port eighty");
    one_error(
        &src,
        DagErrorKind::BadFilter,
        &["edge \"input -> a\"", "tcp port eighty", "column 10", "chain.toml:"],
    );
}

#[test]
fn unknown_port_lists_ports() {
    let src = GOOD.replace("from = \"a.out\"", "from = \"a.exit\"");
    one_error(&src, DagErrorKind::BadEndpoint, &["no output port `exit`", "out, note"]);
    let src = GOOD.replace("to = \"a\"", "to = \"zz.in\"");
    one_error(&src, DagErrorKind::BadEndpoint, &["unknown vertex `zz`"]);
}

#[test]
fn port_class_mismatch_is_reported() {
    // A packet port into a context port.
    let src = format!("{GOOD}\n[[edge]]\nfrom = \"a.out\"\nto = \"a.hint\"\n");
    let e = errors(&src);
    assert!(e.has(DagErrorKind::PortClassMismatch) || e.has(DagErrorKind::Cycle), "{e}");
    // Context types differ: alarm → note.
    let src = r#"
name = "m"
[[vertex]]
name = "o"
nf = "other"
[[vertex]]
name = "p"
nf = "pass"
[[edge]]
from = "input"
to = "o"
[[edge]]
from = "input"
to = "p.in"
[[edge]]
from = "o.alarm"
to = "p.hint"
[[edge]]
from = "p.out"
to = "output.x"
"#;
    one_error(src, DagErrorKind::PortClassMismatch, &["context<alarm>", "context<note>"]);
}

#[test]
fn cycle_is_reported_with_its_path() {
    let src = r#"
name = "c"
[[vertex]]
name = "a"
nf = "pass"
[[vertex]]
name = "b"
nf = "pass"
[[edge]]
from = "input"
to = "a.in"
[[edge]]
from = "a.out"
to = "b.in"
[[edge]]
from = "b.note"
to = "a.hint"
[[edge]]
from = "b.out"
to = "output.o"
"#;
    one_error(src, DagErrorKind::Cycle, &["cycle", "a -> b -> a"]);
}

#[test]
fn unconnected_required_port_and_unreachable_vertex() {
    let src =
        "name = \"u\"\n[[vertex]]\nname = \"a\"\nnf = \"pass\"\n[[edge]]\nfrom = \"input\"\nto = \"a\"\n";
    one_error(src, DagErrorKind::UnconnectedPort, &["vertex \"a\"", "required output port `out`"]);
    let src = format!("{GOOD}\n[[vertex]]\nname = \"island\"\nnf = \"other\"\n");
    one_error(&src, DagErrorKind::Unreachable, &["vertex \"island\"", "cannot be reached"]);
}

#[test]
fn filters_on_context_edges_and_zero_instances_are_rejected() {
    let src = r#"
name = "f"
[[vertex]]
name = "a"
nf = "pass"
[[vertex]]
name = "b"
nf = "pass"
[[edge]]
from = "input"
to = "a.in"
[[edge]]
from = "input"
to = "b.in"
[[edge]]
from = "a.note"
to = "b.hint"
filter = "tcp"
[[edge]]
from = "a.out"
to = "output.o"
[[edge]]
from = "b.out"
to = "output.o"
"#;
    one_error(src, DagErrorKind::BadFilter, &["packet edges only"]);
    let src = GOOD.replace("instances = 2", "instances = 0");
    one_error(&src, DagErrorKind::BadVertexConfig, &["instances"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let src = r#"
name = "many"
[[vertex]]
name = "a"
nf = "nope"
[[vertex]]
name = "b"
nf = "pass"
[vertex.params]
level = "x"
[[edge]]
from = "input"
to = "c"
"#;
    let e = errors(src);
    assert!(e.0.len() >= 3, "{e}");
    assert!(
        e.has(DagErrorKind::UnknownNf)
            && e.has(DagErrorKind::BadParameter)
            && e.has(DagErrorKind::BadEndpoint),
        "{e}"
    );
}
