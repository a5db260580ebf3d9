//! `skopa-provider`: the Skopa connector as its own provider microservice.
//! Thin on purpose: flags → [`SkopaConfig`] → its state
//! ([`microservice::StateHome`]: sled in `--data`, or PostgreSQL shared by every
//! instance) → the SDK's service → [`microservice::run`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manifold_connector_skopa::{SkopaConfig, SkopaConnector};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider_sdk::microservice::{self, ServeArgs};

#[derive(Parser)]
#[command(
    version,
    about = "Run the Manifold connector for Skopa (seed 000: customer token pairs, transfers and withdrawals behind Skopa's own 2FA, paginated statements) as a provider microservice",
    after_help = "Example:\n  MANIFOLD_PROVIDER_SECRET=... MANIFOLD_PROVIDER_DATA_KEY=... skopa-provider \\\n      --base-url http://127.0.0.1:5200 --key-id skopa --data-key-id k1"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:9320")]
    listen: String,
    /// sled directory for conversations in flight and outcomes.
    #[arg(long, default_value = "data/skopa-provider")]
    data: PathBuf,
    /// Where messages the SDK sends are delivered (JSON lines); Skopa sends
    /// its own codes, so this stays empty.
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    /// Skopa's base URL.
    #[arg(long)]
    base_url: String,
    /// Digits after the decimal point of the accounts' currency.
    #[arg(long, default_value_t = 2)]
    minor_unit_digits: u32,
    /// How long one upstream call may take.
    #[arg(long, default_value_t = 6_000)]
    upstream_timeout_ms: u64,
    /// How long the customer has to type Skopa's code.
    #[arg(long, default_value_t = 300)]
    code_ttl_secs: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    manifold_provider_sdk::microservice::start_process();
    let args = Args::parse();
    let server = args.serve.server()?;
    let mut config = SkopaConfig::new(&args.base_url).context("--base-url")?;
    config.minor_unit_digits = args.minor_unit_digits;
    config.timeout = Duration::from_millis(args.upstream_timeout_ms);
    let connector = SkopaConnector::new(config).context("upstream configuration")?;

    // sled in --data, or the PostgreSQL state every instance shares.
    let state = microservice::StateHome::open(&args.serve, &args.data).await?;
    let mut settings = args
        .serve
        .apply_to(manifold_connector_skopa::service_settings())?;
    settings.otp.ttl = Duration::from_secs(args.code_ttl_secs.max(1));
    state
        .reseal_or_serve(
            "skopa-provider",
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
