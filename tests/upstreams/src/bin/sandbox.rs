//! `manifold-sandbox`: the seeds' upstreams, simulated on loopback ports, with
//! sample customers, so that a host can try every connector end to end.
//!
//! It prints one line per service (`<name> listening on <addr>`) and the
//! sample customers' credentials, then serves until interrupted.

use anyhow::Context;
use clap::Parser;
use manifold_upstreams::core_api::{CoreApiSim, User};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    about = "Simulated upstreams of the seeds (core-api and its auth service so far) on loopback ports",
    after_help = "Example:\n  manifold-sandbox --core-api-auth 127.0.0.1:5001 --core-api 127.0.0.1:5000"
)]
struct Args {
    /// core-api's auth service (issues 30-second tokens).
    #[arg(long, default_value = "127.0.0.1:5001")]
    core_api_auth: String,
    /// core-api (charges, queued).
    #[arg(long, default_value = "127.0.0.1:5000")]
    core_api: String,
    /// The secret both core-api services sign and check tokens with.
    #[arg(long, default_value = "manifold-sandbox-jwt-secret")]
    jwt_secret: String,
}

/// The sandbox's customers at core-api: an enabled one and a disabled one.
fn core_api_users() -> Vec<User> {
    vec![
        User {
            user_id: 1,
            username: "alice".into(),
            enabled: true,
            refresh_token: "sandbox-alice-refresh-token-0001".into(),
        },
        User {
            user_id: 2,
            username: "bob".into(),
            enabled: false,
            refresh_token: "sandbox-bob-refresh-token-00002".into(),
        },
    ]
}

async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let ip = listener.local_addr()?.ip();
    anyhow::ensure!(
        ip.is_loopback(),
        "the sandbox serves loopback only, not {ip}"
    );
    Ok(listener)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let users = core_api_users();
    let core_api = CoreApiSim::start_on(
        bind(&args.core_api_auth).await?,
        bind(&args.core_api).await?,
        users.clone(),
        &args.jwt_secret,
    )?;
    println!("core-api-auth listening on {}", core_api.auth_url());
    println!("core-api listening on {}", core_api.core_url());
    for user in &users {
        println!(
            "core-api customer {} (enabled: {}): auth.type token, {{\"token\": \"{}\"}}",
            user.username, user.enabled, user.refresh_token
        );
    }
    manifold_edge::shutdown_signal().await;
    Ok(())
}
