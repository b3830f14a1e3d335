//! `streamnf`: run chains of stateful network functions over traces, generate traces,
//! draw chains and run named benchmarks. See `streamnf --help`.
//!
//! This binary only parses arguments, wires crates together and reports; all packet,
//! chain, state and runtime logic lives in the library crates.

mod bench;
mod bench_async;
mod bench_churn;
mod check;
mod churn_args;
mod gen;
mod graph;
mod paper;
mod run;
mod state_dump;
mod store_url;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Stateful network-function chains with chain-wide guarantees (StreamNF/CHC).
#[derive(Parser)]
#[command(name = "streamnf", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:\n  \
  streamnf gen-trace -o demo.pcap --packets 100000 --scan\n  \
  streamnf run examples/figure1.toml --trace demo.pcap --out out --alerts out/alerts.jsonl\n  \
  streamnf check examples/figure1.toml --trace demo.pcap --workers 2 --instances ids=4\n  \
  streamnf check examples/figure1.toml --trace demo.pcap --event \"at=40% fail ids/0\" --random-events 5\n  \
  streamnf graph examples/figure1.toml | dot -Tsvg > figure1.svg\n  \
  streamnf nfs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a chain over a trace; write output captures, alerts and a summary.
    Run(run::RunArgs),
    /// Check chain output equivalence: the chain with the given workers, instances and churn
    /// events against the single-instance run (exit 0 = equivalent, 1 = not, 2 = error).
    Check(check::CheckArgs),
    /// Generate a seeded, deterministic synthetic trace (pcap, or pcapng by extension).
    GenTrace(gen::GenArgs),
    /// Print a chain as a Graphviz DOT digraph on stdout.
    Graph(graph::GraphArgs),
    /// Run a named benchmark and print its figures (`streamnf bench list`).
    Bench(bench::BenchArgs),
    /// List the built-in network functions usable in chain files.
    Nfs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Check(a) => match check::check(a) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::GenTrace(a) => gen::gen(a),
        Command::Graph(a) => graph::graph(a),
        Command::Bench(a) => bench::bench(a),
        Command::Nfs => {
            for (name, desc) in streamnf_nfs::builtin_registry().list() {
                println!("{name:<14} {desc}");
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // One line per problem (a chain file can have several).
            for line in msg.lines() {
                eprintln!("streamnf: error: {line}");
            }
            ExitCode::from(2)
        }
    }
}
