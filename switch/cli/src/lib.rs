//! The `manifold` command line: bare `manifold` (or `manifold serve`) runs
//! the switch; the subcommands are the host's and the app developer's tools.
//!
//! Every command reports a failure as one `manifold:` line on stderr, never
//! a stack trace, and exits 1 (2 for a usage error, as clap does).
//!
//! The providers compiled into the binary are this crate's to choose
//! ([`compiled_providers`]): the switch library knows none of them.

mod admin;
mod app;
mod config;
mod invoice;
mod progress;
mod secure;
mod serve;
mod store;
mod tx;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use manifold_switch::Registry;

/// The providers this binary carries compiled in, for `implementation =
/// "<name>"`: the demo bank (`demo`) and the connectors to the seeds'
/// upstreams.
pub fn compiled_providers() -> Registry {
    Registry::new()
        .with(
            manifold_switch::DEMO_IMPLEMENTATION,
            Arc::new(manifold_demo_provider::CompiledDemo),
        )
        .with(
            "core-api",
            Arc::new(manifold_connector_core_api::compiled()),
        )
        .with(
            "sdk-finance",
            Arc::new(manifold_connector_sdk_finance::compiled()),
        )
        .with("skopa", Arc::new(manifold_connector_skopa::compiled()))
        .with("joompay", Arc::new(manifold_connector_joompay::compiled()))
}

const EXAMPLES: &str = "Examples:
  manifold                                   run the switch on fixtures/manifold.toml
  manifold --config /etc/manifold.toml       the same, on the host's file
  manifold config check /etc/manifold.toml   list every problem of a file, each with its key
  manifold app add acme --config /etc/manifold.toml
                                             an app's key and secret, and its config block
  export MANIFOLD_APP_SECRET=...             (an app's secret, out of the process list)
  manifold invoice --app acme --from 2026-11-01 --to 2026-12-01 --format json
                                             what acme owes for November (a stopped switch)
  manifold admin token alice                 an admin API operator's token and config block
  export MANIFOLD_ADMIN_TOKEN=...            (the operator's token, for --admin)
  manifold tx list --app acme --from 2026-11-01 --to 2026-12-01 --admin http://127.0.0.1:9090
                                             acme's November transactions, from a running switch
  manifold tx show acme-txn-1 --app acme --admin http://127.0.0.1:9090
  manifold store migrate --from ./data --config /etc/manifold.toml
                                             copy a stopped switch's sled store into the
                                             PostgreSQL database the file configures
  manifold seal --request-ref req-0001 --kind bank.account \\
      '{\"account_number\": \"0123456789\", \"bank_code\": \"058\"}'
  manifold sign --key-id demo-app --path /transact --body-file body.json";

#[derive(Parser)]
#[command(
    name = "manifold",
    version,
    about = "The Manifold payment switch, and the tools around it",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, `manifold` serves: these are `serve`'s options.
    #[command(flatten)]
    serve: serve::ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the switch (what `manifold` with no subcommand does).
    Serve(serve::ServeArgs),
    /// Check a host configuration file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Make an app's credentials.
    #[command(subcommand)]
    App(app::AppCommand),
    /// What an app owes for a period (CSV or JSON), from a running switch's admin API or a
    /// stopped switch's store.
    Invoice(invoice::InvoiceArgs),
    /// Look up an app's transactions.
    #[command(subcommand)]
    Tx(tx::TxCommand),
    /// Move a switch's store between backends.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Make credentials for the admin API.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Seal an `auth.secure` for a request, as an app does (docs/secure.md).
    Seal(secure::SealArgs),
    /// Open an `auth.secure` with the app's secret and print its plaintext, to check one's own
    /// sealing.
    Open(secure::OpenArgs),
    /// Print the RFC 9421 headers that sign a request, ready for curl -H.
    ///
    /// Prints Content-Digest, Signature-Input and Signature, one `Name: value` line each, signing
    /// the method, the path and the exact body bytes with the app's key. Send the body byte for
    /// byte (curl --data-binary @FILE; -d drops newlines, and the digest would no longer match).
    Sign(secure::SignArgs),
}

/// What a command that failed tells its user: printed on one line.
pub type Failure = anyhow::Error;

impl Cli {
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            None => serve::run(self.serve),
            Some(Command::Serve(args)) => serve::run(args),
            Some(Command::Config(command)) => command.run(),
            Some(Command::App(command)) => command.run(),
            Some(Command::Invoice(args)) => invoice::run(args),
            Some(Command::Tx(command)) => command.run(),
            Some(Command::Store(command)) => command.run(),
            Some(Command::Admin(command)) => command.run(),
            Some(Command::Seal(args)) => secure::seal(args),
            Some(Command::Open(args)) => secure::open(args),
            Some(Command::Sign(args)) => secure::sign(args),
        };
        match result {
            Ok(code) => code,
            Err(error) => {
                eprintln!("manifold: {error:#}");
                ExitCode::FAILURE
            }
        }
    }
}
