//! `manifold`: the switch, and the tools its hosts and app developers use
//! around it (`manifold --help`). The commands live in `cli/`.

#[global_allocator]
static ALLOCATOR: manifold_alloc::ServerAllocator = manifold_alloc::ServerAllocator;

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::Cli::parse().run()
}
