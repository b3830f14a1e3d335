//! Chain errors: one [`DagError`] per problem, each naming the place (file line, vertex,
//! edge) so an operator can fix the chain file without guessing.

use std::fmt;

/// What kind of problem a [`DagError`] reports (for programs and tests; humans read the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DagErrorKind {
    /// The chain file is not valid TOML or has unknown/missing keys.
    Syntax,
    /// Two vertices share a name, or a vertex uses a reserved name.
    DuplicateName,
    /// The vertex names an NF the registry does not know.
    UnknownNf,
    /// An NF parameter is missing, unknown or of the wrong type.
    BadParameter,
    /// An edge names a vertex or port that does not exist, or has a malformed endpoint.
    BadEndpoint,
    /// An edge joins ports of different classes (packets vs context, or context types).
    PortClassMismatch,
    /// The vertices form a cycle.
    Cycle,
    /// A required port has no edge.
    UnconnectedPort,
    /// An edge filter does not compile, or is set on a context edge.
    BadFilter,
    /// A bad instance count, flowspace or other vertex setting.
    BadVertexConfig,
    /// Nothing reads the chain input, or a vertex cannot be reached from it.
    Unreachable,
}

/// One problem in a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DagError {
    /// What went wrong, for programs.
    pub kind: DagErrorKind,
    /// `file:line` when the chain came from a file and the line is known.
    pub location: Option<String>,
    /// The vertex or edge concerned, e.g. `vertex "ids"` or `edge "ids.out -> dpi.in"`.
    pub subject: String,
    /// Human explanation, including what would be valid.
    pub message: String,
}

impl DagError {
    /// A new error without a location.
    pub fn new(kind: DagErrorKind, subject: impl Into<String>, message: impl Into<String>) -> DagError {
        DagError { kind, location: None, subject: subject.into(), message: message.into() }
    }
}

impl fmt::Display for DagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        if self.subject.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.subject, self.message)
        }
    }
}

/// All problems found in a chain, in the order they were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DagErrors(pub Vec<DagError>);

impl DagErrors {
    /// True when some error is of `kind`.
    pub fn has(&self, kind: DagErrorKind) -> bool {
        self.0.iter().any(|e| e.kind == kind)
    }
}

impl fmt::Display for DagErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DagErrors {}

impl From<DagError> for DagErrors {
    fn from(e: DagError) -> Self {
        DagErrors(vec![e])
    }
}
