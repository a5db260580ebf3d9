//! `manifold tx show` and `manifold tx list`: an app's transactions as the
//! switch stored them, as JSON, from a running switch's admin API
//! (`--admin`) or a stopped switch's store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use manifold_billing::Period;
use manifold_config::SwitchConfig;
use manifold_switch::admin::{list_transactions, parse_limit, show_transaction, DEFAULT_LISTED};

use super::admin::AdminTarget;
use super::store::open_store;
use super::Failure;

#[derive(clap::Subcommand)]
pub enum TxCommand {
    /// One transaction: its status, history, and every request with the answer it was given.
    Show {
        /// The transaction's `transaction_ref`.
        transaction_ref: String,
        #[arg(long)]
        app: String,
        #[command(flatten)]
        source: Source,
    },
    /// The transactions an app began in a period, oldest first.
    List {
        #[arg(long)]
        app: String,
        /// The period's first day (2026-11-01, midnight UTC) or instant (RFC 3339).
        #[arg(long)]
        from: String,
        /// The period's end, exclusive.
        #[arg(long)]
        to: String,
        /// Only those now in this status (Successful, Failed, Pending, WaitingForOTP, ...).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = DEFAULT_LISTED)]
        limit: usize,
        #[command(flatten)]
        source: Source,
    },
}

/// A running switch (`--admin`) or a stopped one's store (`--config`, `--data`).
#[derive(clap::Args)]
pub struct Source {
    #[command(flatten)]
    admin: AdminTarget,
    /// The host configuration file (for a stopped switch's store and its key).
    #[arg(long, default_value = "fixtures/manifold.toml")]
    config: PathBuf,
    /// Read the store here instead of the configured `storage.path`.
    #[arg(long)]
    data: Option<PathBuf>,
}

impl TxCommand {
    pub fn run(self) -> Result<ExitCode, Failure> {
        let text = match self {
            TxCommand::Show {
                transaction_ref,
                app,
                source,
            } => match &source.admin.admin {
                Some(base) => source.admin.get(
                    base,
                    "/admin/transaction",
                    &[("app", &app), ("transaction_ref", &transaction_ref)],
                )?,
                None => {
                    let config = SwitchConfig::load(&source.config)?;
                    let shown = runtime()?
                        .block_on(async {
                            let store = open_store(&config, source.data.as_deref()).await?;
                            Ok::<_, Failure>(
                                show_transaction(store.as_ref(), &app, &transaction_ref).await?,
                            )
                        })?
                        .with_context(|| {
                            format!("app `{app}` has no transaction `{transaction_ref}`")
                        })?;
                    serde_json::to_string_pretty(&shown)?
                }
            },
            TxCommand::List {
                app,
                from,
                to,
                status,
                limit,
                source,
            } => {
                parse_limit(&limit.to_string()).map_err(anyhow::Error::msg)?;
                match &source.admin.admin {
                    Some(base) => {
                        let limit = limit.to_string();
                        let mut query = vec![
                            ("app", app.as_str()),
                            ("from", from.as_str()),
                            ("to", to.as_str()),
                            ("limit", limit.as_str()),
                        ];
                        if let Some(status) = &status {
                            query.push(("status", status));
                        }
                        source.admin.get(base, "/admin/transactions", &query)?
                    }
                    None => {
                        let period = Period::parse(&from, &to)?;
                        let config = SwitchConfig::load(&source.config)?;
                        let listed = runtime()?.block_on(async {
                            let store = open_store(&config, source.data.as_deref()).await?;
                            Ok::<_, Failure>(
                                list_transactions(
                                    store.as_ref(),
                                    &app,
                                    period,
                                    status.as_deref(),
                                    limit,
                                )
                                .await?,
                            )
                        })?;
                        serde_json::to_string_pretty(&listed)?
                    }
                }
            }
        };
        println!("{}", text.trim_end());
        Ok(ExitCode::SUCCESS)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}
