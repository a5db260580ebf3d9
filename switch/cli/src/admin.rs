//! `manifold admin token NAME`, and the client the other commands use to
//! ask a running switch's admin API (`--admin URL`, the operator's token in
//! `MANIFOLD_ADMIN_TOKEN`): sled lets one process open a store, so while a
//! switch runs, its data is read through it.

use std::process::ExitCode;

use anyhow::{bail, Context};
use manifold_config::{is_identifier, ApiKeyDigest};

use super::app::random_token;
use super::Failure;

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Make a token for an operator of the admin API, and print its `[[admin.operators]]` block
    /// (the token's SHA-256 only) and the token, once.
    Token {
        /// The operator's name, as the audit log will show it.
        name: String,
    },
}

impl AdminCommand {
    pub fn run(self) -> Result<ExitCode, Failure> {
        match self {
            AdminCommand::Token { name } => token(&name),
        }
    }
}

fn token(name: &str) -> Result<ExitCode, Failure> {
    if !is_identifier(name) {
        bail!("an operator's name is 1 to 64 letters, digits, `_`, `-` or `.`");
    }
    let token = random_token("mo_");
    let digest = hex::encode(ApiKeyDigest::of(&token).as_bytes());
    println!(
        "# For the host: add this to the [admin] table of the configuration.
[[admin.operators]]
name = \"{name}\"
token_sha256 = \"{digest}\"

# For the operator, shown this once (send it as Authorization: Bearer <token>,
# or give it to manifold as MANIFOLD_ADMIN_TOKEN):
token = {token}"
    );
    Ok(ExitCode::SUCCESS)
}

/// Where a running switch's admin API is, for commands that can ask it.
#[derive(clap::Args)]
pub struct AdminTarget {
    /// Ask the running switch whose admin API listens here (http://127.0.0.1:9090) instead
    /// of opening a stopped switch's store.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// The operator's token for `--admin`.
    #[arg(
        long,
        env = "MANIFOLD_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
}

impl AdminTarget {
    /// `GET base + path` with `query`, as the operator; the body of a 2xx
    /// answer, or the admin API's error as the failure.
    pub fn get(&self, base: &str, path: &str, query: &[(&str, &str)]) -> Result<String, Failure> {
        let token = self.admin_token.as_deref().context(
            "--admin needs the operator's token in MANIFOLD_ADMIN_TOKEN (or --admin-token)",
        )?;
        let mut url = reqwest::Url::parse(base)
            .and_then(|url| url.join(path))
            .with_context(|| format!("`{base}` is not a URL such as http://127.0.0.1:9090"))?;
        url.query_pairs_mut().extend_pairs(query);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .get(url.clone())
                .bearer_auth(token)
                .timeout(std::time::Duration::from_secs(300))
                .send()
                .await
                .with_context(|| format!("asking {url}"))?;
            let status = response.status();
            let body = response.text().await.context("reading the answer")?;
            if status.is_success() {
                return Ok(body);
            }
            let said = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            bail!("the admin API answered {status}: {said}")
        })
    }
}
