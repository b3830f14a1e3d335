//! `NfContext::send_packet`: a packet an NF builds itself (a proxy's answer from cache)
//! leaves on the chosen port with the input's logical clock, passes downstream filters and
//! vertices like any packet, and a parallel run writes the same packets.

mod common;

use common::udp;
use std::sync::Arc;
use streamnf_dag::{ChainBuilder, LogicalDag, NetworkFunction, NfContext, NfError, NfSpec, PortSpec};
use streamnf_packet::{LinkType, Packet};
use streamnf_runtime::compare::{differences, RunOutputs};
use streamnf_runtime::{Engine, EngineConfig, ParallelConfig, ParallelEngine};
use streamnf_store::{EmbeddedStore, StateStore};

/// Answers every request whose payload starts with `?` itself (on `answers`, from the
/// server's address back to the client) instead of forwarding it; forwards the rest.
struct Answerer;

impl NetworkFunction for Answerer {
    fn spec(&self) -> NfSpec {
        NfSpec {
            inputs: vec![PortSpec::packets("in")],
            outputs: vec![PortSpec::packets("out"), PortSpec::packets("answers")],
            ..NfSpec::default()
        }
    }

    fn on_packet(&self, _: usize, pkt: &mut Packet, ctx: &mut dyn NfContext) -> Result<(), NfError> {
        let (Some(ip), Some((sport, dport))) = (pkt.hdr.ip, pkt.hdr.transport.ports()) else {
            ctx.forward(0);
            return Ok(());
        };
        if pkt.payload().first() == Some(&b'?') {
            let (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) = (ip.src, ip.dst) else {
                return Err(NfError::BadInput("IPv4 only".into()));
            };
            let mut answer = b"!".to_vec();
            answer.extend_from_slice(&pkt.payload()[1..]);
            ctx.send_packet(1, udp(d.octets(), s.octets(), dport, sport, &answer, pkt.ts_ns));
        } else {
            ctx.forward(0);
        }
        Ok(())
    }
}

fn dag() -> Arc<LogicalDag> {
    Arc::new(
        ChainBuilder::new("answers")
            .vertex("a", Arc::new(Answerer))
            .edge("input", "a.in")
            .edge("a.out", "output.out")
            .edge_filtered("a.answers", "output.answers", "udp src port 53")
            .build()
            .expect("chain"),
    )
}

fn input() -> Vec<Packet> {
    (0..200u64)
        .map(|i| {
            let payload: &[u8] = if i % 3 == 0 { b"?q" } else { b"data" };
            let dport = if i % 2 == 0 { 53 } else { 5353 };
            udp([10, 0, 0, (i % 9) as u8], [192, 0, 2, 1], 4000 + i as u16, dport, payload, i * 1000)
        })
        .collect()
}

fn run_reference(dag: &Arc<LogicalDag>) -> RunOutputs {
    let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
    let mut e = Engine::new(
        Arc::clone(dag),
        Arc::clone(&store),
        EngineConfig { keep: true, ..EngineConfig::default() },
    )
    .expect("engine");
    for p in input() {
        e.process(p).expect("process");
    }
    RunOutputs::from_report(e.finish().expect("finish"), store.snapshot(dag.id))
}

#[test]
fn sent_packets_carry_the_input_clock_and_pass_edge_filters() {
    let out = run_reference(&dag());
    let answers = &out.sinks["answers"];
    // Every third input is a question; of those, the ones to port 53 pass the filter.
    let want: Vec<u64> = (0..200u64).filter(|i| i % 3 == 0 && i % 2 == 0).map(|i| i + 1).collect();
    assert_eq!(answers.iter().map(|r| r.clock).collect::<Vec<_>>(), want);
    for r in answers {
        let p = Packet::new(LinkType::Ethernet, r.data.clone(), 0);
        assert_eq!(p.payload(), b"!q");
        assert_eq!(p.hdr.transport.ports().map(|x| x.0), Some(53));
    }
    assert_eq!(out.sinks["out"].len(), 200 - 67, "questions are answered, not forwarded");
}

#[test]
fn a_parallel_run_sends_the_same_packets() {
    let dag = dag();
    let want = run_reference(&dag);
    for (workers, n) in [(2, 1), (2, 3), (1, 4)] {
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::new());
        let par = ParallelConfig { workers, instances: vec![n], batch: 8, ..ParallelConfig::default() };
        let mut e = ParallelEngine::new(
            Arc::clone(&dag),
            Arc::clone(&store),
            EngineConfig { keep: true, ..EngineConfig::default() },
            par,
        )
        .expect("engine");
        for p in input() {
            e.process(p).expect("process");
        }
        let got = RunOutputs::from_report(e.finish().expect("finish"), store.snapshot(dag.id));
        let d = differences(&want, &got, 8);
        assert!(d.is_empty(), "{workers} workers, {n} instances:\n{}", d.join("\n"));
    }
}
