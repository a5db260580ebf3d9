//! `manifold-sandbox`: the seeds' upstreams, simulated on loopback ports, with
//! sample customers, so that a host can try every connector end to end.
//!
//! It prints one line per service (`<name> listening on <addr>`) and the
//! sample customers' credentials, then serves until interrupted.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use manifold_upstreams::core_api::{CoreApiSim, User};
use manifold_upstreams::sdk_finance::{Coin, SdkFinanceSim, ServiceUser, Template};
use manifold_upstreams::skopa::{self, SkopaSim};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    about = "Simulated upstreams of the seeds (core-api with its auth service, SDK.finance, Skopa) on loopback ports",
    after_help = "Example:\n  manifold-sandbox --core-api-auth 127.0.0.1:5001 --core-api 127.0.0.1:5000 --sdk-finance 127.0.0.1:5100 --skopa 127.0.0.1:5200"
)]
struct Args {
    /// core-api's auth service (issues 30-second tokens).
    #[arg(long, default_value = "127.0.0.1:5001")]
    core_api_auth: String,
    /// core-api (charges, queued).
    #[arg(long, default_value = "127.0.0.1:5000")]
    core_api: String,
    /// SDK.finance (wallets, top-ups and withdrawals, transfer templates).
    #[arg(long, default_value = "127.0.0.1:5100")]
    sdk_finance: String,
    /// The SDK.finance service user's password (its login is
    /// `manifold-sandbox@example.com`).
    #[arg(long, default_value = "Sandbox-service-user#1")]
    sdk_finance_password: String,
    /// Skopa (customer token pairs, its own 2FA, paginated statements).
    #[arg(long, default_value = "127.0.0.1:5200")]
    skopa: String,
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
    println!(
        "core-api-auth listening on {}",
        core_api.auth_url().trim_start_matches("http://")
    );
    println!(
        "core-api listening on {}",
        core_api.core_url().trim_start_matches("http://")
    );
    for user in &users {
        println!(
            "core-api customer {} (enabled: {}): auth.type token, {{\"token\": \"{}\"}}",
            user.username, user.enabled, user.refresh_token
        );
    }
    let sdk_finance = SdkFinanceSim::start_on(
        bind(&args.sdk_finance).await?,
        ServiceUser {
            login: "manifold-sandbox@example.com",
            password: &args.sdk_finance_password,
        },
        vec![
            Coin {
                serial: "coin-alice-0001".into(),
                currency: "USD".into(),
                balance: 10_000, // 100.00
            },
            Coin {
                serial: "coin-bob-0002".into(),
                currency: "USD".into(),
                balance: 0,
            },
        ],
        vec![Template {
            id: "tpl-alice-to-bob".into(),
            source: "coin-alice-0001".into(),
            destination: "coin-bob-0002".into(),
        }],
    )?;
    println!(
        "sdk-finance listening on {}",
        sdk_finance.url().trim_start_matches("http://")
    );
    println!("sdk-finance wallets: coin-alice-0001 (100.00 USD), coin-bob-0002 (0.00 USD); template tpl-alice-to-bob");
    println!("sdk-finance operator: POST {}/bank-top-ups/<requestIdentifier>/accept (or /decline), with the service user's token", sdk_finance.url());
    let skopa = SkopaSim::start_on(
        bind(&args.skopa).await?,
        vec![
            skopa::User {
                id: "u-alice".into(),
                refresh_token: "sandbox-skopa-alice-refresh-0001".into(),
                balance: 10_000,
                methods: vec!["sms".into()],
                bank_accounts: vec!["bank-alice-1".into()],
            },
            skopa::User {
                id: "u-bob".into(),
                refresh_token: "sandbox-skopa-bob-refresh-00002".into(),
                balance: 0,
                methods: vec![],
                bank_accounts: vec![],
            },
        ],
    )?;
    println!(
        "skopa listening on {}",
        skopa.url().trim_start_matches("http://")
    );
    println!("skopa customers: u-alice (100.00, 2FA by SMS; bank account bank-alice-1): auth.type token, {{\"token\": \"sandbox-skopa-alice-refresh-0001\"}}; u-bob (0.00, no 2FA): {{\"token\": \"sandbox-skopa-bob-refresh-00002\"}}");
    let codes = Arc::new(skopa);
    let shown = codes.clone();
    // The codes Skopa "sends" to its customers' devices, printed as they come.
    tokio::spawn(async move {
        let mut last = None;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let code = shown.code_sent("u-alice", "sms");
            if code.is_some() && code != last {
                println!(
                    "skopa sent u-alice an SMS code: {}",
                    code.as_deref().unwrap_or("")
                );
                last = code;
            }
        }
    });
    manifold_edge::shutdown_signal().await;
    drop(codes);
    Ok(())
}
