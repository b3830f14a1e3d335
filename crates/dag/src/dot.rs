//! DOT rendering of the logical DAG (`streamnf graph`).

use crate::graph::{Endpoint, LogicalDag, Partition};
use std::fmt::Write;

/// Quotes a DOT identifier or label: escapes backslashes and quotes, and turns real
/// newlines into DOT line breaks.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// Renders the logical DAG as a Graphviz digraph.
pub fn logical_dot(dag: &LogicalDag) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&dag.name));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, fontname=\"monospace\"];");
    let _ = writeln!(out, "  \"input\" [shape=circle];");
    for v in &dag.vertices {
        let fs: Vec<String> = v.flowspaces.iter().map(|f| f.to_string()).collect();
        let label = format!(
            "{}\n{} ×{}{}",
            v.name,
            v.nf_name,
            v.instances,
            if fs.is_empty() { String::new() } else { format!("\nscope {}", fs.join(" ")) }
        );
        let _ = writeln!(out, "  {} [label={}];", quote(&v.name), quote(&label));
    }
    for s in dag.sinks() {
        let _ = writeln!(out, "  {} [shape=doublecircle];", quote(&format!("output.{s}")));
    }
    for e in &dag.edges {
        let node = |ep: &Endpoint| match ep {
            Endpoint::Input => "input".to_string(),
            Endpoint::Sink(s) => format!("output.{s}"),
            Endpoint::Port { vertex, .. } => dag.vertices[*vertex].name.clone(),
        };
        let mut label = dag.edge_ports(e);
        if let Some(f) = &e.filter {
            let _ = write!(label, "\n[{}]", f.expr());
        }
        match &e.partition {
            Partition::Scope => {}
            Partition::Flowspace(fs) => {
                let _ = write!(label, "\nby {fs}");
            }
            Partition::Broadcast => label.push_str("\nbroadcast"),
            Partition::Custom(n) => {
                let _ = write!(label, "\nsplitter {n}");
            }
        }
        let style = if dag.is_context_edge(e) { ", style=dashed" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{}];",
            quote(&node(&e.from)),
            quote(&node(&e.to)),
            quote(label.trim()),
            style
        );
    }
    // State callbacks: the watched vertex's state reaches the watcher through the store.
    for v in &dag.vertices {
        for w in &v.watches {
            let watched = &dag.vertices[w.vertex];
            let object =
                watched.spec.state.get(usize::from(w.object)).map(|o| o.name.as_str()).unwrap_or("?");
            let _ = writeln!(
                out,
                "  {} -> {} [label={}, style=dotted, arrowhead=empty];",
                quote(&watched.name),
                quote(&v.name),
                quote(&format!("state {object} (callback)"))
            );
        }
    }
    out.push_str("}\n");
    out
}
