//! `manifold invoice`: what an app owes for a period, as CSV or JSON on
//! stdout, priced by the configuration's `[billing]`.
//!
//! sled lets one process open a store: with `--admin` the command asks a
//! running switch's admin API (`GET /admin/invoice`, the same invoice, priced
//! with the fees that switch runs with); without, it opens a stopped
//! switch's store and prices with the file's `[billing]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::admin::AdminTarget;
use super::progress::Progress;
use super::store::open_store;
use super::Failure;
use anyhow::Context;
use manifold_billing::Period;
use manifold_config::SwitchConfig;

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
    #[command(flatten)]
    admin: AdminTarget,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

pub fn run(args: InvoiceArgs) -> Result<ExitCode, Failure> {
    let period = Period::parse(&args.from, &args.to)?;
    let format = match args.format {
        Format::Csv => "csv",
        Format::Json => "json",
    };
    let text = match &args.admin.admin {
        // The running switch prices with the fees it runs with.
        Some(base) => args.admin.get(
            base,
            "/admin/invoice",
            &[
                ("app", &args.app),
                ("from", &args.from),
                ("to", &args.to),
                ("format", format),
            ],
        )?,
        None => {
            let config = SwitchConfig::load(&args.config)?;
            let mut progress = Progress::new("invoice", "of the period read");
            let span = period.until_ms.saturating_sub(period.from_ms);
            let invoice = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?
                .block_on(async {
                    let store = open_store(&config, args.data.as_deref()).await?;
                    Ok::<_, Failure>(
                        manifold_switch::invoice::invoice_with_progress(
                            store.as_ref(),
                            &config.billing,
                            &args.app,
                            period,
                            &mut |at_ms| {
                                progress.reached(at_ms.saturating_sub(period.from_ms), span)
                            },
                        )
                        .await?,
                    )
                })?;
            progress.finish("the whole period read");
            match args.format {
                Format::Csv => invoice.to_csv()?,
                Format::Json => invoice.to_json(),
            }
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
