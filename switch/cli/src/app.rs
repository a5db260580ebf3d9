//! `manifold app add` and `manifold app rotate-key`: an app's credentials,
//! made from the operating system's random source and shown once.
//!
//! The configuration block names the key by its SHA-256 only
//! (`api_key_sha256`), so the host's file never holds the key itself, and
//! the secret by an environment variable (`secret_env`): the switch needs the
//! secret itself, since it derives the app's keys from it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use manifold_config::{is_identifier, ApiKeyDigest, SwitchConfig};
use rand::RngCore;

use super::Failure;

#[derive(clap::Subcommand)]
pub enum AppCommand {
    /// Make an API key and a secret for a new app, and print its configuration block for the
    /// host and the values for the app, once.
    Add {
        /// The app's id: 1 to 64 letters, digits, `_`, `-` or `.`.
        id: String,
        /// A configuration file to check the id against (it must not be taken).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make a new API key for an app, and print the `api_key_sha256` line that accepts the old
    /// key and the new one while the app moves over.
    RotateKey {
        /// The app's id.
        id: String,
        /// The configuration file that holds the app.
        #[arg(long, default_value = "fixtures/manifold.toml")]
        config: PathBuf,
    },
}

impl AppCommand {
    pub fn run(self) -> Result<ExitCode, Failure> {
        match self {
            AppCommand::Add { id, config } => add(&id, config),
            AppCommand::RotateKey { id, config } => rotate_key(&id, &config),
        }
    }
}

/// 32 random bytes, base64url without padding: 43 characters, more than an
/// API key's 24 and an app secret's 32.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The environment variable a generated block names for the app's secret.
pub fn secret_variable(id: &str) -> String {
    let upper: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("MANIFOLD_APP_{upper}_SECRET")
}

fn add(id: &str, config: Option<PathBuf>) -> Result<ExitCode, Failure> {
    if !is_identifier(id) {
        bail!("an app id is 1 to 64 letters, digits, `_`, `-` or `.`");
    }
    if let Some(path) = config {
        let config = SwitchConfig::load(&path)?;
        if config.app_by_id(id).is_some() {
            bail!("{} already has an app `{id}`", path.display());
        }
    }
    let api_key = random_token("mk_");
    let secret = random_token("");
    let digest = hex::encode(ApiKeyDigest::of(&api_key).as_bytes());
    let variable = secret_variable(id);
    println!(
        "# For the host: add this block to the configuration, grant the services the app may call,
# and give the switch the secret in its environment, never in the file.
[[apps]]
id = \"{id}\"
api_key_sha256 = \"{digest}\"
secret_env = \"{variable}\"
# [apps.services.get_balance]
# providers = [\"demo\"]

# In the switch's environment:
{variable}={secret}

# For the app, shown this once (the switch keeps only the key's digest):
api_key = {api_key}
secret = {secret}"
    );
    Ok(ExitCode::SUCCESS)
}

fn rotate_key(id: &str, path: &std::path::Path) -> Result<ExitCode, Failure> {
    let config = SwitchConfig::load(path)?;
    let app = config
        .app_by_id(id)
        .with_context(|| format!("{} has no app `{id}`", path.display()))?;
    let [current] = app.api_keys.as_slice() else {
        bail!(
            "app `{id}` already has two keys: finish that rotation first (remove the old key's line, restart), then rotate again"
        );
    };
    let api_key = random_token("mk_");
    let new_digest = hex::encode(ApiKeyDigest::of(&api_key).as_bytes());
    let old_digest = hex::encode(current.as_bytes());
    println!(
        "# For the host: in app `{id}`'s block, replace its api_key (or api_key_sha256) line with
# this one and restart; once the app sends only the new key, keep only the new digest.
api_key_sha256 = [\"{old_digest}\", \"{new_digest}\"]

# For the app, shown this once:
api_key = {api_key}"
    );
    Ok(ExitCode::SUCCESS)
}
