//! `forward`: the simplest NF. Passes every packet to `out` and counts packets in one
//! shared counter (non-blocking), as a template for NF authors.

use std::sync::Arc;
use streamnf_dag::{
    NetworkFunction, NfContext, NfError, NfSpec, Params, PortSpec, StateExt, StateObjectSpec,
};
use streamnf_packet::Packet;

/// Pass-through NF.
#[derive(Debug, Default)]
pub struct Forward;

const PACKETS: usize = 0;

impl Forward {
    /// Chain-file constructor (no parameters).
    pub fn from_params(p: &Params) -> Result<Arc<dyn NetworkFunction>, String> {
        p.allow_only(&[])?;
        Ok(Arc::new(Forward))
    }
}

impl NetworkFunction for Forward {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out")],
            state: vec![StateObjectSpec::shared("packets")],
            connection_terminating: false,
        }
    }

    fn on_packet(&self, _port: usize, _pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        ctx.incr_nb(PACKETS, b"", 1)?;
        ctx.forward(0);
        Ok(())
    }
}
