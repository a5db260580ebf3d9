//! `template-provider`: the template connector as its own provider microservice.
//!
//! Thin on purpose: flags → [`UpstreamConfig`] → its state
//! ([`microservice::StateHome`]: sled in `--data`, or PostgreSQL shared by every
//! instance) and the development outbox → the SDK's service →
//! [`microservice::run`], the code the tests drive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manifold_crypto::SecretString;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider_sdk::microservice::{self, ServeArgs};
use manifold_provider_template::{TemplateConnector, UpstreamConfig};

/// The environment variable the OAuth client secret is read from when no
/// `--client-secret-file` is given. (A secret on the command line would show
/// in `ps`.)
const CLIENT_SECRET_VAR: &str = "TEMPLATE_CLIENT_SECRET";

#[derive(Parser)]
#[command(
    version,
    about = "Run the Manifold template provider (an OAuth bank transfer API with SCA codes) as a provider microservice"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: String,
    /// sled directory for pending transactions and outcomes.
    #[arg(long, default_value = "data/template-provider")]
    data: PathBuf,
    /// Where OTP messages the SDK sends are delivered (JSON lines). This
    /// provider's codes come from the bank, so it normally stays empty.
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    /// The upstream bank API's base URL (`http://` or `https://`).
    #[arg(long)]
    upstream_url: String,
    /// The OAuth client id the bank issued.
    #[arg(long)]
    client_id: String,
    /// A file whose first line is the OAuth client secret; without it the
    /// secret is read from the environment variable TEMPLATE_CLIENT_SECRET.
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// ISO 4217 currency of the amounts (minor units) this provider moves.
    #[arg(long, default_value = "NGN")]
    currency: String,
    /// How long one upstream call may take. Keep it below the switch's
    /// `timeout_ms` for this provider.
    #[arg(long, default_value_t = 8_000)]
    upstream_timeout_ms: u64,
    /// How long the customer has to type the bank's code.
    #[arg(long, default_value_t = 300)]
    code_ttl_secs: u64,
    /// Codes the customer may get wrong before the transaction fails.
    #[arg(long, default_value_t = 3)]
    code_attempts: u8,
    /// How often expired confirmations are moved to Failed.
    #[arg(long, default_value_t = 5_000)]
    sweep_interval_ms: u64,
    /// The secret and key id shared with the switch, the signature window, TLS.
    #[command(flatten)]
    serve: ServeArgs,
}

fn client_secret(args: &Args) -> anyhow::Result<SecretString> {
    let mut text = match &args.client_secret_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the client secret from {}", path.display()))?,
        None => std::env::var(CLIENT_SECRET_VAR).with_context(|| {
            format!("no --client-secret-file and no {CLIENT_SECRET_VAR} in the environment")
        })?,
    };
    // Keep the first line only, in the same buffer (no second copy to leak).
    let first_line = text.lines().next().unwrap_or("").trim_end().len();
    text.truncate(first_line);
    Ok(SecretString::new(text))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Pending confirmations and the ledger are this user's alone.
    manifold_provider_sdk::microservice::start_process();
    let args = Args::parse();
    // Checked first: a provider that cannot verify the switch must not start.
    let server = args.serve.server()?;
    let mut upstream = UpstreamConfig::new(
        &args.upstream_url,
        SecretString::new(args.client_id.clone()),
        client_secret(&args)?,
    )
    .context("--upstream-url / credentials")?;
    upstream.currency = args.currency.clone();
    upstream.timeout = Duration::from_millis(args.upstream_timeout_ms);
    let connector = TemplateConnector::new(upstream).context("upstream configuration")?;

    // sled in --data, or the PostgreSQL state every instance shares.
    let state = microservice::StateHome::open(&args.serve, &args.data).await?;
    let mut settings = args
        .serve
        .apply_to(manifold_provider_template::service_settings())?;
    settings.otp.ttl = Duration::from_secs(args.code_ttl_secs.max(1));
    settings.otp.attempts = args.code_attempts.max(1);
    settings.sweep_interval = Duration::from_millis(args.sweep_interval_ms.max(10));
    state
        .reseal_or_serve(
            "template-provider",
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
