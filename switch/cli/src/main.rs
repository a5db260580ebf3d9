//! `manifold`: the switch, and the tools its hosts and app developers use
//! around it (`manifold --help`). Everything lives in the `manifold_cli`
//! library, so tests drive the same code.

#[global_allocator]
static ALLOCATOR: manifold_alloc::ServerAllocator = manifold_alloc::ServerAllocator;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    manifold_cli::Cli::parse().run()
}
