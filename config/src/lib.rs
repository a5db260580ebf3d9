//! The host's configuration, parsed once into typed structs.
//!
//! A host writes one TOML file (see `fixtures/manifold.toml` for a complete,
//! commented sample): where the switch listens and stores, which providers it
//! can reach and how, and for each calling app its keys, the services it may
//! use, through which providers, with which `otp_override` and limits.
//! [`SwitchConfig::load`] reads and checks all of it at start-up; every problem
//! is reported at once as `file: key: what is wrong`. Nothing downstream reads
//! raw TOML or environment variables.
//!
//! # Layout
//! - [`raw`](self): the serde mirror of the file (private).
//! - [`SwitchConfig`] and friends: the validated, typed result.
//! - [`ConfigError`]: every problem found, each naming its key.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use manifold_crypto::SecretString;

mod raw;

/// The minimum length of an app secret; it is the input to HKDF, so short
/// secrets would make `auth.secure` guessable.
pub const MIN_SECRET_LEN: usize = 32;
/// The minimum length of an API key.
pub const MIN_API_KEY_LEN: usize = 24;
/// The longest a provider may be given to answer.
pub const MAX_PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// The file this came from, for messages.
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub notifications: NotificationsConfig,
    pub providers: Vec<ProviderConfig>,
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The sled directory; relative paths are relative to the working directory.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// Where development notifications (OTPs) are appended as JSON lines.
    pub outbox: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub endpoint: ProviderEndpoint,
    /// The `request_type`s this provider serves.
    pub services: BTreeSet<String>,
    /// The subset of `services` the provider can reverse.
    pub reversible: BTreeSet<String>,
    /// How long the switch waits for an answer before recording `Pending`.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderEndpoint {
    /// Compiled into the switch; `implementation` names which one.
    InProcess { implementation: String },
    /// A provider microservice at this base URL.
    Remote { url: String },
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub id: String,
    pub name: String,
    pub api_key: SecretString,
    pub secret: SecretString,
    /// Whether every call must carry a valid `Signature` header.
    pub require_signature: bool,
    /// What the app may call, by `request_type`.
    pub services: BTreeMap<String, ServiceGrant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceGrant {
    /// The providers the app may route this service to.
    pub providers: Vec<String>,
    /// `true` tells providers to skip the OTP step for this app and service.
    pub otp_override: bool,
    /// The largest `amount` (minor units) one transaction may carry.
    pub max_amount: Option<u64>,
}

impl SwitchConfig {
    /// Read and validate the configuration file at `path`.
    pub fn load(path: &Path) -> Result<SwitchConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::single(path, "", format!("cannot be read: {error}")))?;
        SwitchConfig::from_toml(&text, path)
    }

    /// Parse and validate configuration text; `source` names it in messages.
    pub fn from_toml(text: &str, source: &Path) -> Result<SwitchConfig, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|error| {
            let key = error
                .span()
                .map(|span| locate(text, span.start))
                .unwrap_or_default();
            ConfigError::single(source, &key, error.message().to_owned())
        })?;
        raw.validate(source)
    }

    pub fn app_by_id(&self, id: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|app| app.id == id)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|provider| provider.name == name)
    }
}

fn locate(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, e.g. `apps[0].services.get_balance.providers`.
    pub key: String,
    pub problem: String,
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub fn single(file: &Path, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            problems: vec![ConfigProblem {
                key: key.to_owned(),
                problem: problem.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if problem.key.is_empty() {
                write!(f, "{}: {}", self.file.display(), problem.problem)?;
            } else {
                write!(
                    f,
                    "{}: {}: {}",
                    self.file.display(),
                    problem.key,
                    problem.problem
                )?;
            }
        }
        Ok(())
    }
}

/// Collects problems so a host sees all of them in one start attempt.
#[derive(Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn add(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            problem: problem.into(),
        });
    }

    pub(crate) fn into_result<T>(self, file: &Path, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                file: file.to_owned(),
                problems: self.0,
            })
        }
    }
}

/// Names of apps, providers and services: short, and safe in URLs, logs and keys.
pub(crate) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

pub(crate) fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    names.filter(|name| !seen.insert(*name)).collect()
}

#[cfg(test)]
mod tests;
