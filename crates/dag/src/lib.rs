//! # streamnf-dag
//!
//! The logical processing DAG of §3.1: vertices running network functions, joined by
//! edges from an output port to an input port, each edge with an optional tcpdump-syntax
//! filter and a partitioning rule. This crate also defines the NF API ([`nf`]) every
//! built-in and user NF implements.
//!
//! It owns the *description* of a chain: building it in Rust ([`ChainBuilder`]) or from a
//! TOML file ([`chain_file`]), validating it ([`validate`]) and printing it ([`dot`]).
//! It never runs packets and never touches the store; the runtime does both.

#![warn(missing_docs)]

pub mod builder;
pub mod chain_file;
pub mod dot;
pub mod error;
pub mod graph;
pub mod nf;
pub mod registry;
pub mod validate;

pub use builder::ChainBuilder;
pub use error::{DagError, DagErrors};
pub use graph::{
    ChainEvent, Edge, Endpoint, LogicalDag, Partition, Vertex, VertexId, WatchTarget, INPUT, OUTPUT_PREFIX,
};
pub use nf::{
    Alert, ContextMsg, FetchedLookup, NetworkFunction, NfContext, NfError, NfSpec, PortClass, PortSpec,
    ProcessingMode, ReadSet, StateChange, StateExt, StateObjectSpec, StateScope, StateWatch,
};
pub use registry::{NfFactory, NfRegistry, Params};
