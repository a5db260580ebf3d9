//! `demo-provider`: the demo bank as its own provider microservice.

#[global_allocator]
static ALLOCATOR: manifold_alloc::ServerAllocator = manifold_alloc::ServerAllocator;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manifold_demo_provider::{DemoConfig, DemoSettings};
use manifold_notify::SwitchNotifier;
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{GroupCommit, Notifier};
use manifold_provider_sdk::microservice::{self, ServeArgs};

#[derive(Parser)]
#[command(
    version,
    about = "Run the Manifold demo bank as a provider microservice"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    /// sled directory for the provider's state: pending confirmations and
    /// outcomes.
    #[arg(long, default_value = "data/demo-provider")]
    data: PathBuf,
    /// sled directory for the bank's ledger (accounts and postings), the
    /// stand-in upstream's own database [default: upstream-ledger inside --data].
    #[arg(long, value_name = "DIR")]
    ledger_data: Option<PathBuf>,
    /// Where OTP messages are delivered (JSON lines), in place of SMS/e-mail,
    /// unless `--notify-switch-url` is given.
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    /// Send OTPs through this switch's `/notify/sms` and `/notify/email`
    /// services instead of the outbox, signed with the shared secret (the
    /// switch's entry for this provider must say `notify = true`).
    #[arg(long)]
    notify_switch_url: Option<String>,
    /// The secret and key id shared with the switch, the signature window, TLS.
    #[command(flatten)]
    serve: ServeArgs,
    /// The balance, in minor units (kobo), of an account the bank sees for
    /// the first time.
    #[arg(long, default_value_t = DemoSettings::default().opening_balance)]
    opening_balance: u64,
    /// Transfers of this amount (minor units) or more ask the customer to
    /// confirm the destination account first.
    #[arg(long, default_value_t = DemoSettings::default().step_up_amount)]
    step_up_amount: u64,
    /// How long an OTP or a prompt can be answered.
    #[arg(long, default_value_t = 300)]
    otp_ttl_secs: u64,
    /// Wrong OTPs allowed before the transaction fails.
    #[arg(long, default_value_t = 3)]
    otp_attempts: u8,
    /// The shortest time between two sends of a code to one transaction.
    #[arg(long, default_value_t = 30)]
    resend_interval_secs: u64,
    /// How often expired confirmations are moved to Failed.
    #[arg(long, default_value_t = 5_000)]
    sweep_interval_ms: u64,
    /// The bank's settings as TOML, the same keys as a switch's
    /// `[providers.settings]` table for the in-process demo bank: its
    /// customers (where OTPs go), the first-sight holder, OTP send limits.
    /// Its keys win over the flags above.
    #[arg(long)]
    settings: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Pending confirmations and the ledger are this user's alone.
    manifold_provider_sdk::microservice::start_process();
    let args = Args::parse();
    let db = microservice::open_state_db(&args.data)
        .with_context(|| format!("opening {}", args.data.display()))?;
    let commit = GroupCommit::start(db.clone())?;
    let mut settings = DemoSettings {
        opening_balance: args.opening_balance,
        step_up_amount: args.step_up_amount,
        sweep_interval: Duration::from_millis(args.sweep_interval_ms.max(10)),
        data_keys: Some(args.serve.data_keys()?),
        retention: Some(args.serve.retention()?),
        ..DemoSettings::default()
    };
    settings.otp.ttl = Duration::from_secs(args.otp_ttl_secs);
    settings.otp.attempts = args.otp_attempts;
    settings.otp.resend_interval = Duration::from_secs(args.resend_interval_secs);
    if let Some(path) = &args.settings {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // The parser's own report quotes the offending line, which may hold
        // a customer's phone or account: its message only, values withheld.
        let config: DemoConfig = toml::from_str(&text).map_err(|error| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                manifold_crypto::secret::withhold_values(error.message())
            )
        })?;
        settings = settings
            .with_config(&config)
            .map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))?;
    }
    // Checked before anything else starts, so a missing secret or a bad
    // certificate stops the provider at once.
    let server = args.serve.server()?;
    let notifier: Arc<dyn Notifier> = match &args.notify_switch_url {
        Some(url) => Arc::new(SwitchNotifier::with_options(
            url,
            args.serve.signer()?,
            args.serve.switch_client_options(Duration::from_secs(10)),
        )?),
        None => Arc::new(OutboxNotifier::new(args.outbox)),
    };
    let ledger_dir = args
        .ledger_data
        .unwrap_or_else(|| args.data.join("upstream-ledger"));
    let provider =
        manifold_demo_provider::open(&db, commit.clone(), &ledger_dir, notifier, settings)?;
    if args.serve.reseal {
        let resealed = provider.reseal().await?;
        eprintln!(
            "{resealed} values sealed under data key `{}`",
            args.serve.data_key_id
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // Tests and scripts read this line to learn the port.
    println!("demo-provider listening on {}", listener.local_addr()?);
    microservice::run(
        listener,
        Arc::new(provider),
        commit,
        server,
        manifold_edge::shutdown_signal(),
    )
    .await;
    Ok(())
}
