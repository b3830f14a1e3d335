//! # streamnf-runtime
//!
//! Runs a [`streamnf_dag::LogicalDag`] over packets: the root splitter (logical clocks,
//! malformed-packet policy), one task per vertex instance with its [`context::TaskContext`]
//! onto the state store, edge filters, sinks writing one capture per sink port, alerts as
//! JSON lines, and the run summary.
//!
//! Data flows one way: root → tasks → (filters) → tasks … → sinks. NF state goes only
//! through the [`streamnf_store::StateStore`]; the runtime keeps counters and queues, never
//! NF state.

#![warn(missing_docs)]

pub mod alerts;
pub mod callbacks;
pub mod compare;
pub mod context;
pub mod dedupe;
pub mod engine;
pub mod events;
pub mod manager;
pub mod pace;
pub mod packet_log;
pub mod parallel;
pub mod partition;
pub mod prefetch;
pub mod queue;
pub mod run;
pub mod sink;
pub mod splitter;
pub mod stats;
pub mod summary;

pub use engine::{Engine, EngineConfig, StateMode};
pub use pace::Pace;
pub use parallel::{PacketLogMode, ParallelConfig, ParallelEngine};
pub use run::{run_trace, RunError, RunOptions, RunOutcome};
pub use summary::Summary;
