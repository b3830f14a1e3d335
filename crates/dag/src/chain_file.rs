//! Chain files: a chain of built-in NFs written in TOML.
//!
//! ```toml
//! name = "figure1"
//! malformed = "drop"            # or "pass"
//! events = ["at=40% scale ids to 2"]   # churn events, optional (see `streamnf run --help`)
//!
//! [[vertex]]
//! name = "ids"
//! nf = "light_ids"
//! instances = 1                 # default instance count
//! [vertex.params]
//! syn_threshold = 20
//!
//! [[edge]]
//! from = "input"
//! to = "ids.in"
//! filter = "ip or ip6"          # tcpdump syntax, optional
//! partition = "scope"           # scope | broadcast | custom:NAME | src_ip,dst_ip
//! ```
//!
//! Every semantic error names the file, line and vertex or edge.

use crate::builder::ChainBuilder;
use crate::error::{DagError, DagErrorKind, DagErrors};
use crate::graph::{LogicalDag, Partition};
use crate::registry::{NfRegistry, Params};
use serde::Deserialize;
use std::path::Path;
use streamnf_packet::{Flowspace, MalformedPolicy};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainToml {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    malformed: Option<Spanned<String>>,
    #[serde(default)]
    vertex: Vec<VertexToml>,
    #[serde(default)]
    edge: Vec<EdgeToml>,
    #[serde(default)]
    events: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VertexToml {
    name: Spanned<String>,
    nf: String,
    #[serde(default)]
    instances: Option<u32>,
    #[serde(default)]
    cpu: Option<f64>,
    #[serde(default)]
    flowspaces: Option<Vec<Vec<String>>>,
    #[serde(default)]
    params: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeToml {
    from: Spanned<String>,
    to: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    partition: Option<String>,
}

/// Reads and validates the chain file at `path`.
pub fn load_chain(path: &Path, registry: &NfRegistry) -> Result<LogicalDag, DagErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        DagErrors::from(DagError::new(
            DagErrorKind::Syntax,
            "",
            format!("{}: cannot read chain file: {e}", path.display()),
        ))
    })?;
    parse_chain(&src, &path.display().to_string(), registry)
}

/// Parses and validates chain-file text; `file` names it in errors.
pub fn parse_chain(src: &str, file: &str, registry: &NfRegistry) -> Result<LogicalDag, DagErrors> {
    let parsed: ChainToml = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        // One line per problem: the toml crate's message may span several lines.
        let msg = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
        DagErrors::from(DagError {
            kind: DagErrorKind::Syntax,
            location: Some(match line {
                Some(l) => format!("{file}:{l}"),
                None => file.to_string(),
            }),
            subject: String::new(),
            message: msg,
        })
    })?;
    let at = |span: std::ops::Range<usize>| Some(format!("{file}:{}", line_of(src, span.start)));

    let mut b = ChainBuilder::new(&parsed.name);
    if let Some(m) = &parsed.malformed {
        match m.get_ref().as_str() {
            "drop" => b = b.malformed(MalformedPolicy::Drop),
            "pass" => b = b.malformed(MalformedPolicy::Pass),
            other => b.push_error(DagError {
                kind: DagErrorKind::Syntax,
                location: at(m.span()),
                subject: String::new(),
                message: format!("malformed = \"{other}\": expected \"drop\" or \"pass\""),
            }),
        }
    }
    for e in &parsed.events {
        let loc = at(e.span()).unwrap_or_else(|| file.to_string());
        b = b.event(e.get_ref(), &loc);
    }
    for v in &parsed.vertex {
        let name = v.name.get_ref().clone();
        let loc = at(v.name.span());
        let subject = format!("vertex \"{name}\"");
        let params = Params(v.params.clone().unwrap_or_default());
        let nf = match registry.build(&v.nf, &params) {
            None => {
                let known: Vec<&str> = registry.list().into_iter().map(|(n, _)| n).collect();
                b.push_failed_vertex(
                    &name,
                    DagError {
                        kind: DagErrorKind::UnknownNf,
                        location: loc,
                        subject,
                        message: format!("unknown NF \"{}\" (built-in NFs: {})", v.nf, known.join(", ")),
                    },
                );
                continue;
            }
            Some(Err(msg)) => {
                b.push_failed_vertex(
                    &name,
                    DagError { kind: DagErrorKind::BadParameter, location: loc, subject, message: msg },
                );
                continue;
            }
            Some(Ok(nf)) => nf,
        };
        b = b.vertex_with(&name, &v.nf, nf, params, loc.clone());
        if let Some(n) = v.instances {
            b = b.instances(&name, n);
        }
        if let Some(c) = v.cpu {
            b = b.cpu_hint(&name, c);
        }
        if let Some(list) = &v.flowspaces {
            match list.iter().map(|fs| Flowspace::from_names(fs)).collect::<Result<Vec<_>, _>>() {
                Ok(fs) => b = b.flowspaces(&name, fs),
                Err(bad) => b.push_error(DagError {
                    kind: DagErrorKind::BadVertexConfig,
                    location: loc,
                    subject,
                    message: format!(
                        "unknown flowspace field `{bad}` (fields: src_ip, dst_ip, proto, src_port, dst_port, connection, vlan)"
                    ),
                }),
            }
        }
    }
    for e in &parsed.edge {
        let loc = at(e.from.span());
        let partition = match e.partition.as_deref() {
            None | Some("scope") => Partition::Scope,
            Some("broadcast") => Partition::Broadcast,
            Some(p) if p.starts_with("custom:") => Partition::Custom(p["custom:".len()..].to_string()),
            Some(p) => {
                let names: Vec<&str> = p.split(',').map(str::trim).collect();
                match Flowspace::from_names(&names) {
                    Ok(fs) => Partition::Flowspace(fs),
                    Err(bad) => {
                        b.push_error(DagError {
                            kind: DagErrorKind::BadEndpoint,
                            location: loc,
                            subject: format!("edge \"{} -> {}\"", e.from.get_ref(), e.to),
                            message: format!(
                                "partition \"{p}\": unknown field `{bad}` (use scope, broadcast, custom:NAME or a field list like src_ip,dst_ip)"
                            ),
                        });
                        continue;
                    }
                }
            }
        };
        b = b.edge_with(e.from.get_ref(), &e.to, e.filter.clone(), partition, loc);
    }
    b.build()
}

/// 1-based line number of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes().iter().take(offset).filter(|&&c| c == b'\n').count() + 1
}
