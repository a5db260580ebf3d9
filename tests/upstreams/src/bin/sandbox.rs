//! `manifold-sandbox`: the seeds' upstreams, simulated on loopback ports, with
//! sample customers, so that a host can try every connector end to end.
//!
//! It prints one line per service (`<name> listening on <addr>`) and the
//! sample customers' credentials, then serves until interrupted.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

use manifold_upstreams::core_api::{CoreApiSim, User};
use manifold_upstreams::joompay::{self, JoompayCerts, JoompayOptions, JoompaySim};
use manifold_upstreams::sdk_finance::{Coin, SdkFinanceSim, ServiceUser, Template};
use manifold_upstreams::skopa::{self, SkopaSim};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    version,
    about = "Simulated upstreams of the seeds (core-api with its auth service, SDK.finance, Skopa, Joompay) on loopback ports",
    after_help = "Example:\n  manifold-sandbox --core-api-auth 127.0.0.1:5001 --core-api 127.0.0.1:5000 --sdk-finance 127.0.0.1:5100 --skopa 127.0.0.1:5200 \\\n      --joompay-grpc 127.0.0.1:5300 --joompay-consent 127.0.0.1:5301 --joompay-token 127.0.0.1:5302\n\nNew Joompay certificates (CA, servers, TPP):\n  manifold-sandbox --write-joompay-certs fixtures/sandbox/joompay"
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
    /// Joompay's gRPC API (mutual TLS).
    #[arg(long, default_value = "127.0.0.1:5300")]
    joompay_grpc: String,
    /// Joompay's consent page, where a customer's browser is sent.
    #[arg(long, default_value = "127.0.0.1:5301")]
    joompay_consent: String,
    /// Joompay's token endpoint (mutual TLS).
    #[arg(long, default_value = "127.0.0.1:5302")]
    joompay_token: String,
    /// The TPP id the sandbox knows (its certificate's name).
    #[arg(long, default_value = "manifold-sandbox-tpp")]
    joompay_tpp_id: String,
    /// The TPP's registered consent callback: the connector's
    /// `redirect_uri`.
    #[arg(long, default_value = "http://127.0.0.1:5310/consent/callback")]
    joompay_redirect_uri: String,
    /// Where Joompay's sandbox certificates are (ca.pem, server.pem,
    /// server.key, tpp.pem, tpp.key).
    #[arg(long, default_value = "fixtures/sandbox/joompay")]
    joompay_certs: PathBuf,
    /// Write a new set of Joompay sandbox certificates to this directory and exit.
    #[arg(long)]
    write_joompay_certs: Option<PathBuf>,
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
    if let Some(dir) = &args.write_joompay_certs {
        JoompayCerts::generate(&args.joompay_tpp_id)
            .write(dir)
            .with_context(|| format!("writing {}", dir.display()))?;
        println!("Joompay sandbox certificates written to {}", dir.display());
        return Ok(());
    }
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
    let certs = JoompayCerts::read(&args.joompay_certs).with_context(|| {
        format!(
            "reading Joompay's sandbox certificates in {} (make new ones with --write-joompay-certs)",
            args.joompay_certs.display()
        )
    })?;
    let bound = |addr: &str| -> anyhow::Result<std::net::SocketAddr> {
        let addr: std::net::SocketAddr = addr
            .parse()
            .with_context(|| format!("{addr} is not an address"))?;
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the sandbox serves loopback only, not {}",
            addr.ip()
        );
        Ok(addr)
    };
    let joompay = JoompaySim::start_on(
        JoompayOptions {
            tpp_id: args.joompay_tpp_id.clone(),
            redirect_uri: args.joompay_redirect_uri.clone(),
            access_token_lifetime: std::time::Duration::from_secs(300),
            users: joompay::sample_users(),
            recipients: joompay::sample_recipients(),
            certs,
        },
        bound(&args.joompay_grpc)?,
        bound(&args.joompay_consent)?,
        bound(&args.joompay_token)?,
    )
    .await
    .context("starting Joompay")?;
    println!(
        "joompay-grpc listening on {}",
        joompay.grpc_url().trim_start_matches("https://")
    );
    println!(
        "joompay-consent listening on {}",
        joompay
            .consent_url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
    );
    println!(
        "joompay-token listening on 127.0.0.1:{}",
        joompay
            .token_url()
            .trim_start_matches("https://localhost:")
            .split('/')
            .next()
            .unwrap_or("")
    );
    for user in joompay::sample_users() {
        println!(
            "joompay user {} (password {}, {}, {}.{:02} EUR)",
            user.username,
            user.password,
            user.iban,
            user.balance_cents / 100,
            user.balance_cents % 100
        );
    }
    println!("joompay recipients: GB82WEST12345698765432 (John Smith), DE89370400440532013000 (Erika Mustermann)");
    let joompay = Arc::new(joompay);
    let shown_sca = joompay.clone();
    // The SCA codes Joompay "sends" to its users' phones, printed as they come.
    tokio::spawn(async move {
        let mut last: std::collections::HashMap<String, String> = Default::default();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            for user in ["alice", "bob"] {
                if let Some(code) = shown_sca.sca_code(user) {
                    if last.get(user) != Some(&code) {
                        println!("joompay sent {user} an SCA code: {code}");
                        last.insert(user.to_owned(), code);
                    }
                }
            }
        }
    });
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
    drop(joompay);
    Ok(())
}
