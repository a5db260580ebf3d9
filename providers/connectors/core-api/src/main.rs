//! `core-api-provider`: the core-api connector as its own provider
//! microservice. Thin on purpose: flags → [`CoreApiConfig`] → its state
//! ([`microservice::StateHome`]: sled in `--data`, or PostgreSQL shared by every
//! instance) → the SDK's service → [`microservice::run`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manifold_connector_core_api::{CoreApiConfig, CoreApiConnector};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider_sdk::microservice::{self, ServeArgs};

#[derive(Parser)]
#[command(
    version,
    about = "Run the Manifold connector for core-api (seed 002: 30-second customer tokens, queued charges, at most once) as a provider microservice",
    after_help = "Example:\n  MANIFOLD_PROVIDER_SECRET=... MANIFOLD_PROVIDER_DATA_KEY=... core-api-provider \\\n      --auth-url http://127.0.0.1:5001 --core-url http://127.0.0.1:5000 --currency USD \\\n      --key-id core-api --data-key-id k1"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:9300")]
    listen: String,
    /// sled directory for charges in flight and their outcomes.
    #[arg(long, default_value = "data/core-api-provider")]
    data: PathBuf,
    /// Where messages the SDK sends are delivered (JSON lines); this
    /// provider sends none.
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    /// The auth service's base URL (it issues the 30-second tokens).
    #[arg(long)]
    auth_url: String,
    /// core-api's base URL.
    #[arg(long)]
    core_url: String,
    /// ISO 4217 currency of the charges; the switch's amounts are its minor units.
    #[arg(long)]
    currency: String,
    /// Digits after the decimal point of the currency (core-api takes major units).
    #[arg(long, default_value_t = 2)]
    minor_unit_digits: u32,
    /// How long one upstream call may take; keep it below the switch's
    /// `timeout_ms` for this provider.
    #[arg(long, default_value_t = 6_000)]
    upstream_timeout_ms: u64,
    /// The secret and key id shared with the switch, the signature window,
    /// TLS, the data key.
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    manifold_provider_sdk::microservice::start_process();
    let args = Args::parse();
    // Checked first: a provider that cannot verify the switch must not start.
    let server = args.serve.server()?;
    let mut config = CoreApiConfig::new(&args.auth_url, &args.core_url, &args.currency)
        .context("--auth-url / --core-url / --currency")?;
    config.minor_unit_digits = args.minor_unit_digits;
    config.timeout = Duration::from_millis(args.upstream_timeout_ms);
    let connector = CoreApiConnector::new(config).context("upstream configuration")?;

    // sled in --data, or the PostgreSQL state every instance shares.
    let state = microservice::StateHome::open(&args.serve, &args.data).await?;
    let settings = args
        .serve
        .apply_to(manifold_connector_core_api::service_settings())?;
    state
        .reseal_or_serve(
            "core-api-provider",
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
