//! Ready-made chains of the built-in NFs, for Rust users, tests and benchmarks. The same
//! chains exist as TOML in `examples/`.

use crate::dpi::Dpi;
use crate::ids::LightIds;
use crate::rate_limiter::RateLimiter;
use std::sync::Arc;
use streamnf_dag::{ChainBuilder, DagErrors, LogicalDag};

/// The paper's Figure 1 chain: every packet through `ids`, on to `limiter` (which also
/// gets the IDS's verdicts), then to `output.out`; packets of flagged sources are copied
/// to the off-path `dpi`.
pub fn figure1(name: &str, ids: LightIds, limiter: RateLimiter, dpi: Dpi) -> Result<LogicalDag, DagErrors> {
    ChainBuilder::new(name)
        .vertex("ids", Arc::new(ids))
        .vertex("limiter", Arc::new(limiter))
        .vertex("dpi", Arc::new(dpi))
        .edge("input", "ids.in")
        .edge("ids.out", "limiter.in")
        .edge("ids.verdict", "limiter.verdict")
        .edge("ids.flagged", "dpi.in")
        .edge("limiter.out", "output.out")
        .build()
}
