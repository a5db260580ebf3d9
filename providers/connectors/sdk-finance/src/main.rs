//! `sdk-finance-provider`: the SDK.finance connector as its own provider
//! microservice. Thin on purpose: flags → [`SdkFinanceConfig`] → its state
//! ([`microservice::StateHome`]: sled in `--data`, or PostgreSQL shared by every
//! instance) → the SDK's service → [`microservice::run`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manifold_connector_sdk_finance::{SdkFinanceConfig, SdkFinanceConnector};
use manifold_crypto::SecretString;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider_sdk::microservice::{self, ServeArgs};

/// The environment variable the service user's password is read from when
/// no `--password-file` is given (a password on the command line would
/// show in `ps`).
const PASSWORD_VAR: &str = "SDK_FINANCE_PASSWORD";

#[derive(Parser)]
#[command(
    version,
    about = "Run the Manifold connector for SDK.finance (seed 001: wallet top-ups and withdrawals an operator decides, transfers from templates) as a provider microservice",
    after_help = "Example:\n  SDK_FINANCE_PASSWORD=... MANIFOLD_PROVIDER_SECRET=... MANIFOLD_PROVIDER_DATA_KEY=... \\\n  sdk-finance-provider --base-url http://127.0.0.1:5100 --login svc@example.com \\\n      --bank-id settlement-bank --key-id sdk-finance --data-key-id k1"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:9310")]
    listen: String,
    /// sled directory for requests in flight and their outcomes.
    #[arg(long, default_value = "data/sdk-finance-provider")]
    data: PathBuf,
    /// Where messages the SDK sends are delivered (JSON lines); this
    /// provider sends none.
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    /// The platform's base URL.
    #[arg(long)]
    base_url: String,
    /// The service user's login.
    #[arg(long)]
    login: String,
    /// A file whose first line is the service user's password; without it
    /// the password is read from SDK_FINANCE_PASSWORD.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// The bank in the platform's catalogue that top-ups come from and
    /// withdrawals go to.
    #[arg(long)]
    bank_id: String,
    /// Digits after the decimal point of the coins' currencies.
    #[arg(long, default_value_t = 2)]
    minor_unit_digits: u32,
    /// How long one upstream call may take.
    #[arg(long, default_value_t = 6_000)]
    upstream_timeout_ms: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

fn password(args: &Args) -> anyhow::Result<SecretString> {
    let mut text = match &args.password_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the password from {}", path.display()))?,
        None => std::env::var(PASSWORD_VAR).with_context(|| {
            format!("no --password-file and no {PASSWORD_VAR} in the environment")
        })?,
    };
    let first_line = text.lines().next().unwrap_or("").trim_end().len();
    text.truncate(first_line);
    Ok(SecretString::new(text))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    manifold_provider_sdk::microservice::start_process();
    let args = Args::parse();
    let server = args.serve.server()?;
    let mut config = SdkFinanceConfig::new(
        &args.base_url,
        SecretString::new(args.login.clone()),
        password(&args)?,
        &args.bank_id,
    )
    .context("--base-url / --login / password / --bank-id")?;
    config.minor_unit_digits = args.minor_unit_digits;
    config.timeout = Duration::from_millis(args.upstream_timeout_ms);
    let connector = SdkFinanceConnector::new(config).context("upstream configuration")?;

    // sled in --data, or the PostgreSQL state every instance shares.
    let state = microservice::StateHome::open(&args.serve, &args.data).await?;
    let settings = args
        .serve
        .apply_to(manifold_connector_sdk_finance::service_settings())?;
    state
        .reseal_or_serve(
            "sdk-finance-provider",
            &args.serve,
            &args.listen,
            Arc::new(OutboxNotifier::new(args.outbox)),
            connector,
            settings,
            server,
        )
        .await?;
    Ok(())
}
