//! `streamnf graph`: DOT of the logical DAG, or with `--physical` one node per task.

use clap::Args;
use std::fmt::Write;
use std::path::PathBuf;
use streamnf_dag::chain_file::load_chain;
use streamnf_dag::dot::{logical_dot, quote};
use streamnf_dag::{Endpoint, LogicalDag};

/// Arguments of `streamnf graph`.
#[derive(Args)]
pub struct GraphArgs {
    /// Chain file (TOML).
    chain: PathBuf,
    /// Draw the physical DAG: every instance (task) of every vertex.
    #[arg(long)]
    physical: bool,
    /// Instances of a vertex in the physical DAG, VERTEX=N (repeatable; as for `run`).
    #[arg(long = "instances", value_name = "VERTEX=N")]
    instances: Vec<String>,
}

/// Prints the chain as DOT.
pub fn graph(a: GraphArgs) -> Result<(), String> {
    let mut dag = load_chain(&a.chain, &streamnf_nfs::builtin_registry()).map_err(|e| e.to_string())?;
    for (name, n) in crate::run::parse_instances(&a.instances, &dag, &a.chain)? {
        if let Some(v) = dag.vertex_id(&name) {
            dag.vertices[v].instances = n;
        }
    }
    print!("{}", if a.physical { physical_dot(&dag) } else { logical_dot(&dag) });
    Ok(())
}

/// One node per task, grouped per vertex; edges between every pair of tasks they can join.
fn physical_dot(dag: &LogicalDag) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "digraph \"{} (physical)\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];",
        dag.name
    );
    let _ = writeln!(out, "  \"root\" [shape=circle, label=\"root splitter\"];");
    // What the runtime will do: the key each vertex's input is split by, and which vertices
    // merge their senders in clock order.
    let scopes = streamnf_runtime::splitter::scope_flowspaces(dag);
    let tasks_per_vertex: Vec<usize> = dag.vertices.iter().map(|v| v.instances as usize).collect();
    let merges = streamnf_runtime::splitter::merge_needed(dag, &scopes, &tasks_per_vertex);
    for (i, v) in dag.vertices.iter().enumerate() {
        let mut label = format!("{} ({})", v.name, v.nf_name);
        if v.instances > 1 {
            match &scopes[i] {
                Some(k) => label.push_str(&format!(", split by {k}")),
                None => label.push_str(", split by [connection]"),
            }
        }
        if merges[i] {
            label.push_str(", merges senders by clock");
        }
        let _ =
            writeln!(out, "  subgraph {} {{ label={};", quote(&format!("cluster_{}", v.name)), quote(&label));
        for t in 0..v.instances {
            let _ = writeln!(out, "    \"{}/{t}\";", v.name);
        }
        let _ = writeln!(out, "  }}");
    }
    for s in dag.sinks() {
        let _ = writeln!(out, "  \"output.{s}\" [shape=doublecircle];");
    }
    let tasks = |ep: &Endpoint| -> Vec<String> {
        match ep {
            Endpoint::Input => vec!["root".into()],
            Endpoint::Sink(s) => vec![format!("output.{s}")],
            Endpoint::Port { vertex, .. } => {
                let v = &dag.vertices[*vertex];
                (0..v.instances).map(|t| format!("{}/{t}", v.name)).collect()
            }
        }
    };
    for e in &dag.edges {
        let label = quote(&dag.edge_ports(e));
        let style = if dag.is_context_edge(e) { ", style=dashed" } else { "" };
        for f in tasks(&e.from) {
            for t in tasks(&e.to) {
                let _ = writeln!(out, "  \"{f}\" -> \"{t}\" [label={label}{style}];");
            }
        }
    }
    out.push_str("}\n");
    out
}
