//! `manifold invoice`: what an app owes for a period, as CSV or JSON on
//! stdout, priced by the configuration's `[billing]`.
//!
//! sled lets one process open a store: with `--admin` the command asks a
//! running switch's admin API (`GET /admin/invoice`, the same invoice, priced
//! with the fees that switch runs with); without, it opens a stopped
//! switch's store and prices with the file's `[billing]`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use super::admin::AdminTarget;
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
            let mut progress = Progress::new(period);
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
                            &mut |at_ms| progress.reached(at_ms),
                        )
                        .await?,
                    )
                })?;
            progress.finish();
            match args.format {
                Format::Csv => invoice.to_csv()?,
                Format::Json => invoice.to_json(),
            }
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// How far through its period an invoice has read: a progress bar on a
/// terminal, a plain line every tenth of the period otherwise (a log, a
/// pipe), both on stderr so stdout stays the invoice alone.
struct Progress {
    period: Period,
    bar: Option<indicatif::ProgressBar>,
    /// The last tenth reported as a plain line.
    tenth: u64,
}

impl Progress {
    const STEPS: u64 = 1_000;

    fn new(period: Period) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(Self::STEPS);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "reading calls {bar:40} {percent:>3}% of the period, {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            period,
            bar,
            tenth: 0,
        }
    }

    fn step(&self, at_ms: u64) -> u64 {
        let span = self
            .period
            .until_ms
            .saturating_sub(self.period.from_ms)
            .max(1);
        let done = at_ms.saturating_sub(self.period.from_ms).min(span);
        (u128::from(done) * u128::from(Self::STEPS) / u128::from(span)) as u64
    }

    fn reached(&mut self, at_ms: u64) {
        let step = self.step(at_ms);
        match &self.bar {
            Some(bar) => bar.set_position(step),
            None => {
                let tenth = step * 10 / Self::STEPS;
                if tenth > self.tenth {
                    self.tenth = tenth;
                    eprintln!("invoice: {}% of the period read", tenth * 10);
                }
            }
        }
    }

    fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("invoice: the whole period read"),
        }
    }
}
