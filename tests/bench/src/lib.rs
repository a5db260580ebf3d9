//! The Manifold benchmark.
//!
//! One command, `cargo run --release -p manifold-bench`, starts everything
//! itself on 127.0.0.1 — the switch with the demo provider in-process and as
//! a remote microservice, and three baseline servers — drives them with a
//! closed- and an open-loop load generator, measures a store of a million
//! transactions against an empty one (three rounds, interleaved), prints the
//! tables and writes them to
//! `BENCHMARKS.md` with the machine's description and the targets.
//!
//! # Layout
//! - [`run`]: the cases, their order and their servers; the whole run.
//! - [`load`]: the load generator (closed and open loop, bounded windows,
//!   CPU sampling).
//! - [`connection`]: one keep-alive HTTP/1.1 connection of a load worker.
//! - [`workload`]: the requests of each scenario, sealed like a real app's,
//!   and the checks on their answers.
//! - [`outbox`]: reading OTPs from the development outbox incrementally.
//! - [`latency`]: HDR histograms and their summaries.
//! - [`serve`]: the server processes (`manifold-bench serve-…`): the switch
//!   and the baselines (a), (a′) and (b).
//! - [`preload`]: filling a store with a million realistic transactions.
//! - [`config`]: the switch configuration the benchmark uses.
//! - [`process`]: child server processes and what `/proc` says about them.
//! - [`machine`]: the machine description.
//! - [`report`]: the tables, the targets and `BENCHMARKS.md`.

pub mod config;
pub mod connection;
pub mod latency;
pub mod load;
pub mod machine;
pub mod outbox;
pub mod preload;
pub mod process;
pub mod report;
pub mod run;
pub mod serve;
pub mod workload;

/// The global allocator of the `manifold-bench` binary (`src/main.rs`), and
/// so of every server process it starts: `serve-switch`, the switch the
/// benchmark measures, included. The report names it beside peak RSS.
pub type Allocator = manifold_alloc::ServerAllocator;

/// [`Allocator`]'s name, for the report.
pub fn allocator_name() -> &'static str {
    manifold_alloc::DESCRIPTION
}
