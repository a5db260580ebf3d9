//! Secrets that need not sit in the configuration file.
//!
//! Every secret key `x` of the file (an app's `api_key` and `secret`, a
//! remote provider's `secret`, the SMS gateway's `token` and `password`, the
//! SMTP `password`) can be given one of three ways, exactly one at a time:
//! - `x = "..."`: in the file, for development and the sample;
//! - `x_env = "VAR"`: from the environment variable `VAR`;
//! - `x_file = "/run/secrets/x"`: the whole content of a file (one trailing
//!   newline dropped, so `echo secret > file` works), which should be
//!   readable by the switch's user only; looser modes are warned about.
//!
//! An app's API key can also be given as its SHA-256 digest only
//! (`api_key_sha256`), so the switch never holds the key itself; an app may
//! have two keys at once, which is how a key is rotated without downtime.
//!
//! The environment is read through [`Environment`], so tests can give one of
//! their own without touching the process's variables.

use std::fmt;
use std::path::{Path, PathBuf};

use manifold_crypto::SecretString;
use sha2::{Digest, Sha256};

use crate::{ConfigProblem, Problems};

/// Where `x_env` variables are looked up: the process's environment in
/// [`crate::SwitchConfig::load`], a map in tests.
pub trait Environment {
    /// The variable's value, or `None` when it is unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Environment for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The SHA-256 digest of an API key: all the switch needs to recognise an
/// app, and all a host has to configure with `api_key_sha256`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyDigest([u8; 32]);

impl ApiKeyDigest {
    /// The digest of a key as it travels in `Authorization: Bearer <key>`.
    pub fn of(key: &str) -> ApiKeyDigest {
        ApiKeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses 64 hexadecimal digits, as `sha256sum` prints them.
    pub fn from_hex(text: &str) -> Option<ApiKeyDigest> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(ApiKeyDigest(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A digest is not the key, but it still names a credential: only its first
/// bytes are printed, enough to tell two apart in a log.
impl fmt::Debug for ApiKeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyDigest({}…)", hex::encode(&self.0[..4]))
    }
}

/// The three ways one secret key can be given, as read from the file.
pub(crate) struct SecretSource {
    pub(crate) inline: Option<SecretString>,
    pub(crate) env: Option<String>,
    pub(crate) file: Option<PathBuf>,
}

impl SecretSource {
    pub(crate) fn is_given(&self) -> bool {
        self.inline.is_some() || self.env.is_some() || self.file.is_some()
    }
}

/// Resolves secret sources against an environment and the filesystem,
/// collecting problems and warnings as it goes.
pub(crate) struct SecretResolver<'a> {
    pub(crate) environment: &'a dyn Environment,
    pub(crate) warnings: Vec<ConfigProblem>,
}

impl SecretResolver<'_> {
    /// The secret `key` (a dotted key such as `apps[0].secret`) from
    /// whichever of `key`, `key_env` and `key_file` was given; `None` when
    /// none was, or when the one given could not be read (a problem then
    /// says why, naming the variable or file but never a value).
    pub(crate) fn resolve(
        &mut self,
        key: &str,
        source: SecretSource,
        problems: &mut Problems,
    ) -> Option<SecretString> {
        let given = [
            source.inline.is_some(),
            source.env.is_some(),
            source.file.is_some(),
        ];
        if given.iter().filter(|given| **given).count() > 1 {
            problems.add(
                key,
                format!("give only one of {key}, {key}_env and {key}_file"),
            );
            return None;
        }
        if let Some(secret) = source.inline {
            return Some(secret);
        }
        if let Some(name) = source.env {
            return match self.environment.var(&name) {
                Some(value) if !value.is_empty() => Some(SecretString::new(value)),
                Some(_) => {
                    problems.add(
                        format!("{key}_env"),
                        format!("the environment variable `{name}` is empty"),
                    );
                    None
                }
                None => {
                    problems.add(
                        format!("{key}_env"),
                        format!("the environment variable `{name}` is not set"),
                    );
                    None
                }
            };
        }
        let path = source.file?;
        match read_secret_file(&path) {
            Ok(secret) => {
                if let Some(mode) = loose_mode(&path) {
                    self.warnings.push(ConfigProblem {
                        key: format!("{key}_file"),
                        problem: format!(
                            "{} can be read by other users (mode {mode:o}); `chmod 600` it",
                            path.display()
                        ),
                    });
                }
                Some(secret)
            }
            Err(reason) => {
                problems.add(
                    format!("{key}_file"),
                    format!("{} {reason}", path.display()),
                );
                None
            }
        }
    }
}

fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot be read: {error}"))?;
    let mut text = String::from_utf8(bytes).map_err(|_| "does not hold UTF-8 text".to_owned())?;
    // Trimmed in place: no second copy of the secret is left behind.
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    let text = SecretString::new(text);
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    Ok(text)
}

/// The file's permission bits when group or others may read or write it.
#[cfg(unix)]
pub(crate) fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
pub(crate) fn loose_mode(_path: &Path) -> Option<u32> {
    None
}
