//! Whole-chain checks that need every vertex and edge: cycles, unconnected required
//! ports, reachability from the input; and the topological ordering of vertices.

use crate::error::{DagError, DagErrorKind, DagErrors};
use crate::graph::{Endpoint, LogicalDag};

/// What the whole-chain checks may assume.
pub(crate) struct Checks {
    /// Some declared edge leaves `input` (even if it failed to resolve).
    pub input_declared: bool,
    /// Every vertex and edge was built: connectivity errors are real, not echoes of
    /// earlier errors.
    pub graph_complete: bool,
}

/// Runs the whole-chain checks, appends their errors to `errors`, and returns the DAG
/// with vertices in topological order when there are no errors at all.
pub(crate) fn finish(
    mut dag: LogicalDag,
    vertex_locs: &[Option<String>],
    mut errors: Vec<DagError>,
    checks: Checks,
) -> Result<LogicalDag, DagErrors> {
    let n = dag.vertices.len();
    let loc = |v: usize| vertex_locs.get(v).cloned().flatten();

    // Unconnected required ports.
    for (vid, v) in dag.vertices.iter().enumerate().filter(|_| checks.graph_complete) {
        for (pid, p) in v.spec.inputs.iter().enumerate() {
            let ep = Endpoint::Port { vertex: vid, port: pid };
            if p.required && !dag.edges.iter().any(|e| e.to == ep) {
                errors.push(DagError {
                    kind: DagErrorKind::UnconnectedPort,
                    location: loc(vid),
                    subject: format!("vertex \"{}\"", v.name),
                    message: format!("required input port `{}` has no incoming edge", p.name),
                });
            }
        }
        for (pid, p) in v.spec.outputs.iter().enumerate() {
            let ep = Endpoint::Port { vertex: vid, port: pid };
            if p.required && !dag.edges.iter().any(|e| e.from == ep) {
                errors.push(DagError {
                    kind: DagErrorKind::UnconnectedPort,
                    location: loc(vid),
                    subject: format!("vertex \"{}\"", v.name),
                    message: format!(
                        "required output port `{}` has no outgoing edge (send it to another vertex or to output.NAME)",
                        p.name
                    ),
                });
            }
        }
    }

    // Adjacency between vertices.
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut from_input: Vec<usize> = Vec::new();
    for e in &dag.edges {
        if let Endpoint::Port { vertex: to, .. } = e.to {
            match e.from {
                Endpoint::Port { vertex: from, .. } => succ[from].push(to),
                Endpoint::Input => from_input.push(to),
                Endpoint::Sink(_) => {}
            }
        }
    }
    if n > 0 && !checks.input_declared {
        errors.push(DagError::new(
            DagErrorKind::Unreachable,
            "",
            "no edge leaves `input`: add an edge from \"input\" to the first vertex",
        ));
    }

    // Topological order (Kahn); leftover vertices lie on a cycle.
    let mut indeg = vec![0usize; n];
    for s in &succ {
        for &t in s {
            indeg[t] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&v| indeg[v] == 0).rev().collect();
    let mut order = Vec::with_capacity(n);
    while let Some(v) = ready.pop() {
        order.push(v);
        for &t in succ[v].iter().rev() {
            indeg[t] -= 1;
            if indeg[t] == 0 {
                ready.push(t);
            }
        }
    }
    if order.len() < n {
        let on_cycle = find_cycle(&succ, &indeg);
        let names: Vec<&str> = on_cycle.iter().map(|&v| dag.vertices[v].name.as_str()).collect();
        errors.push(DagError {
            kind: DagErrorKind::Cycle,
            location: on_cycle.first().and_then(|&v| loc(v)),
            subject: String::new(),
            message: format!(
                "the chain has a cycle: {} -> {}",
                names.join(" -> "),
                names.first().unwrap_or(&"?")
            ),
        });
    } else if checks.graph_complete {
        // Reachability from the input.
        let mut seen = vec![false; n];
        // A vertex that watches a reachable vertex's state is reached through the store.
        let mut watchers: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (vid, v) in dag.vertices.iter().enumerate() {
            for w in &v.watches {
                watchers[w.vertex].push(vid);
            }
        }
        let mut stack = from_input.clone();
        while let Some(v) = stack.pop() {
            if !std::mem::replace(&mut seen[v], true) {
                stack.extend(succ[v].iter().copied());
                stack.extend(watchers[v].iter().copied());
            }
        }
        for (v, s) in seen.iter().enumerate() {
            if !s {
                errors.push(DagError {
                    kind: DagErrorKind::Unreachable,
                    location: loc(v),
                    subject: format!("vertex \"{}\"", dag.vertices[v].name),
                    message: "cannot be reached from `input`: no path of edges leads to it".into(),
                });
            }
        }
    }

    if !errors.is_empty() {
        return Err(DagErrors(errors));
    }

    // Renumber vertices in topological order.
    let mut new_id = vec![0usize; n];
    for (i, &v) in order.iter().enumerate() {
        new_id[v] = i;
    }
    let mut slots: Vec<Option<crate::graph::Vertex>> = dag.vertices.into_iter().map(Some).collect();
    dag.vertices = order.iter().filter_map(|&v| slots[v].take()).collect();
    for v in &mut dag.vertices {
        for w in &mut v.watches {
            w.vertex = new_id[w.vertex];
        }
    }
    for e in &mut dag.edges {
        for ep in [&mut e.from, &mut e.to] {
            if let Endpoint::Port { vertex, .. } = ep {
                *vertex = new_id[*vertex];
            }
        }
    }
    Ok(dag)
}

/// Returns one cycle among the vertices with remaining in-degree.
fn find_cycle(succ: &[Vec<usize>], indeg: &[usize]) -> Vec<usize> {
    let Some(start) = (0..succ.len()).find(|&v| indeg[v] > 0) else {
        return Vec::new();
    };
    // Walk successors that are still on a cycle until a vertex repeats.
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let Some(&next) = succ[cur].iter().find(|&&t| indeg[t] > 0) else {
            return path;
        };
        if let Some(pos) = path.iter().position(|&v| v == next) {
            return path.split_off(pos);
        }
        path.push(next);
        cur = next;
    }
}
