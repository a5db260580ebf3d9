//! `joompay-provider`: the Joompay connector as its own provider
//! microservice, with the customer's consent pages beside it. Thin on
//! purpose: flags → [`JoompayConfig`] → its state
//! ([`microservice::StateHome`]: sled in `--data`, or PostgreSQL shared by every
//! instance) → the SDK's service → [`microservice::run`], and the
//! consent pages on their own listener.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manifold_connector_joompay::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONSENT_TTL, DEFAULT_TOKEN_REFRESH_MARGIN,
};
use manifold_connector_joompay::JoompayConfig;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider_sdk::microservice::{self, ServeArgs};
use reqwest::Url;

#[derive(Parser)]
#[command(
    version,
    about = "Run the Manifold connector for Joompay (seed 004: gRPC over mutual TLS, the customer's OAuth consent, transfers behind Joompay's SCA) as a provider microservice",
    after_help = "Example:\n  MANIFOLD_PROVIDER_SECRET=... MANIFOLD_PROVIDER_DATA_KEY=... joompay-provider \\\n      --grpc-url https://localhost:5300 --consent-url http://127.0.0.1:5301/ \\\n      --token-url https://localhost:5302/api/v1/oauth/token --tpp-id manifold-sandbox-tpp \\\n      --cert-file fixtures/sandbox/joompay/tpp.pem --key-file fixtures/sandbox/joompay/tpp.key \\\n      --ca-file fixtures/sandbox/joompay/ca.pem --consent-listen 127.0.0.1:5310 \\\n      --redirect-uri http://127.0.0.1:5310/consent/callback --key-id joompay --data-key-id k1"
)]
struct Args {
    /// Address to listen on for the switch; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:9340")]
    listen: String,
    /// sled directory for conversations in flight, outcomes and the
    /// customers' links (sealed).
    #[arg(long, default_value = "data/joompay-provider")]
    data: PathBuf,
    /// Where messages the SDK sends are delivered (JSON lines); Joompay
    /// sends its own SCA codes, so this stays empty.
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    /// Joompay's gRPC API.
    #[arg(long)]
    grpc_url: String,
    /// Joompay's consent page, where the customer's browser is sent.
    #[arg(long)]
    consent_url: String,
    /// Joompay's token endpoint.
    #[arg(long)]
    token_url: String,
    /// The TPP id Joompay gave at onboarding.
    #[arg(long)]
    tpp_id: String,
    /// The TPP's certificate chain (PEM).
    #[arg(long)]
    cert_file: PathBuf,
    /// The TPP's private key (PEM).
    #[arg(long)]
    key_file: PathBuf,
    /// CA certificates (PEM) for Joompay's servers, instead of the public roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Where the consent pages listen; port 0 picks a free port (printed on
    /// start), and --redirect-uri must then name it.
    #[arg(long, default_value = "127.0.0.1:5310")]
    consent_listen: String,
    /// The callback URI registered with Joompay (ends in /consent/callback).
    /// Default: http://<the consent listener's address>/consent/callback.
    #[arg(long)]
    redirect_uri: Option<String>,
    #[arg(long, default_value = "Europe/London")]
    user_time_zone: String,
    /// How long one upstream call may take.
    #[arg(long, default_value_t = 10_000)]
    upstream_timeout_ms: u64,
    /// How long the customer has to type Joompay's SCA code.
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
    let consent_listener = tokio::net::TcpListener::bind(&args.consent_listen)
        .await
        .with_context(|| format!("binding {}", args.consent_listen))?;
    let consent_address = consent_listener.local_addr()?;
    let url = |text: &str, flag: &str| Url::parse(text).with_context(|| flag.to_owned());
    let redirect_uri = match &args.redirect_uri {
        Some(uri) => url(uri, "--redirect-uri")?,
        None => url(
            &format!("http://{consent_address}/consent/callback"),
            "--consent-listen",
        )?,
    };
    let config = JoompayConfig {
        grpc_url: url(&args.grpc_url, "--grpc-url")?,
        consent_url: url(&args.consent_url, "--consent-url")?,
        token_url: url(&args.token_url, "--token-url")?,
        tpp_id: args.tpp_id.clone(),
        cert_file: args.cert_file.clone(),
        key_file: args.key_file.clone(),
        ca_file: args.ca_file.clone(),
        consent_listen: consent_address,
        redirect_uri,
        user_time_zone: args.user_time_zone.clone(),
        timeout: Duration::from_millis(args.upstream_timeout_ms),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        token_refresh_margin: DEFAULT_TOKEN_REFRESH_MARGIN,
        consent_ttl: DEFAULT_CONSENT_TTL,
    };
    config.check().context("upstream configuration")?;

    // sled in --data, or the PostgreSQL state every instance shares.
    let state = microservice::StateHome::open(&args.serve, &args.data).await?;
    let keys = args.serve.data_keys()?;
    // The customers' links are the connector's own: in sled in --data
    // either way (with a shared state, each instance keeps its own).
    let db = match state.sled_db() {
        Some(db) => db.clone(),
        None => microservice::open_state_db(&args.data)
            .with_context(|| format!("opening {}", args.data.display()))?,
    };
    let connector = manifold_connector_joompay::connector(config, &db, keys)
        .map_err(anyhow::Error::msg)
        .context("upstream configuration")?;
    let links = connector.links().clone();
    let pages = connector.consent_pages();
    let mut settings = args
        .serve
        .apply_to(manifold_connector_joompay::service_settings())?;
    settings.otp.ttl = Duration::from_secs(args.code_ttl_secs.max(1));
    let provider = state
        .provider(
            Arc::new(OutboxNotifier::new(args.outbox)),
            connector,
            settings,
        )
        .await?;
    if args.serve.reseal {
        let resealed = provider.reseal().await? + links.reseal().await?;
        eprintln!(
            "{resealed} values sealed under data key `{}`",
            args.serve.data_key_id
        );
        return Ok(());
    }
    eprintln!("joompay-provider consent pages on {consent_address}");
    let consent = tokio::spawn(pages.serve(consent_listener, manifold_edge::shutdown_signal()));
    let served = microservice::listen_and_run(
        "joompay-provider",
        &args.listen,
        Arc::new(provider),
        state.durability(),
        server,
    )
    .await;
    consent.abort();
    Ok(served?)
}
