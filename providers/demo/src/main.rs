//! `demo-provider`: the demo bank as its own provider microservice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use manifold_demo_provider::{DemoProvider, DemoSettings};
use manifold_provider::notify::OutboxNotifier;
use manifold_provider::{server, GroupCommit};

#[derive(Parser)]
#[command(about = "Run the Manifold demo bank as a provider microservice")]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    /// sled directory for the ledger, pending OTPs and outcomes.
    #[arg(long, default_value = "data/demo-provider")]
    data: PathBuf,
    /// Where OTP messages are delivered (JSON lines), in place of SMS/e-mail.
    #[arg(long, default_value = "data/outbox.jsonl")]
    outbox: PathBuf,
    #[arg(long, default_value_t = DemoSettings::default().opening_balance)]
    opening_balance: u64,
    #[arg(long, default_value_t = 300)]
    otp_ttl_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let db = sled::open(&args.data).with_context(|| format!("opening {}", args.data.display()))?;
    let commit = GroupCommit::start(db.clone())?;
    let settings = DemoSettings {
        opening_balance: args.opening_balance,
        otp_ttl: Duration::from_secs(args.otp_ttl_secs),
        ..DemoSettings::default()
    };
    let provider = DemoProvider::open(
        &db,
        commit,
        Arc::new(OutboxNotifier::new(args.outbox)),
        settings,
    )?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // Tests and scripts read this line to learn the port.
    println!("demo-provider listening on {}", listener.local_addr()?);
    server::serve_provider(listener, Arc::new(provider), server::shutdown_signal()).await;
    Ok(())
}
