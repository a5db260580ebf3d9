//! `manifold invoice`: what an app owes for a period, as CSV or JSON on
//! stdout, priced by the configuration's `[billing]`.
//!
//! sled lets one process open a store: on a running switch, ask its admin
//! API (`GET /admin/invoice`, the same invoice); this command opens a
//! stopped switch's store directly.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use manifold_billing::Period;
use manifold_config::SwitchConfig;
use manifold_switch::store::{SledStore, StoreError, StoreOptions};

use super::Failure;

#[derive(clap::Args)]
pub struct InvoiceArgs {
    /// The app to invoice.
    #[arg(long)]
    app: String,
    /// The first day (2026-11-01, midnight UTC) or instant (RFC 3339) of the period.
    #[arg(long)]
    from: String,
    /// The end of the period, exclusive: the day after the last, or an instant.
    #[arg(long)]
    to: String,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// The host configuration file: its `[billing]` prices the calls, its `storage.path`
    /// holds them.
    #[arg(long, default_value = "fixtures/manifold.toml")]
    config: PathBuf,
    /// Read the store here instead of the configured `storage.path`.
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

pub fn run(args: InvoiceArgs) -> Result<ExitCode, Failure> {
    let period = Period::parse(&args.from, &args.to)?;
    let config = SwitchConfig::load(&args.config)?;
    let path = args.data.unwrap_or(config.storage.path);
    let options = StoreOptions {
        cache_capacity_bytes: config.storage.cache_capacity_bytes,
        data_keys: Some(config.data_at_rest.keys.clone()),
        ..Default::default()
    };
    let store = SledStore::open_existing(&path, &options).map_err(|error| match error {
        StoreError::InUse(_) => anyhow::anyhow!(
            "{error}; while it runs, ask its admin API for the invoice (GET /admin/invoice)"
        ),
        error => {
            anyhow::Error::new(error).context(format!("opening the store in {}", path.display()))
        }
    })?;
    let invoice = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(manifold_switch::invoice::invoice(
            &store,
            &config.billing,
            &args.app,
            period,
        ))?;
    let text = match args.format {
        Format::Csv => invoice.to_csv()?,
        Format::Json => invoice.to_json(),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
